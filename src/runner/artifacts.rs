//! Where each try of a test keeps its logs, and which logs stay.
//!
//! Every try gets a folder `ROOT/<test>/` (`ROOT/<test>.tryN/` for retries)
//! where the script's `script.log` and each machine's QEMU log, console
//! log and QMP transcript are written. `ROOT` is `--artifacts DIR`, where
//! everything stays, or else a fresh `vmscript-artifacts-XXXXXX` temp
//! folder, where only failed and timed-out tries stay (all of them with
//! `--keep-artifacts`) and which is removed at the end when nothing stayed.
//!
//! One run at a time writes to an `--artifacts` folder: it holds a lock
//! (`flock` on [`LOCK`] inside) for as long as it runs, and a second run
//! given the same folder stops before starting anything, rather than
//! replacing the logs the first is writing. A temp root holds a locked
//! marker (as the run's temp folders do, see [`crate::script::temp`]) until
//! the run ends; [`sweep_stale`] finds the roots of runs that were killed
//! (SIGKILL), removes the empty ones and names the others once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::script::temp::{each_abandoned, lock, MARKER};

use super::discover::Test;
use super::results::Verdict;
use super::SetupError;

/// The artifacts of one run; see the module documentation.
#[derive(Debug)]
pub struct Artifacts {
    root: PathBuf,
    /// The root was given with `--artifacts` (so everything stays).
    given: bool,
    keep_all: bool,
    /// Each test's folder name, unique within the run.
    slugs: HashMap<String, String>,
    /// The locked [`LOCK`] of a given root, or the locked [`MARKER`] of a
    /// temp root: held until the run ends.
    _lock: File,
}

/// The lock file in an `--artifacts` folder; it holds the pid of the run
/// that has the folder.
pub const LOCK: &str = ".vmscript-lock";

/// The prefix of temp roots.
const TEMP_PREFIX: &str = "vmscript-artifacts-";

/// Takes the lock of a given artifacts folder `dir`, or names the run
/// that holds it.
fn lock_given(dir: &Path) -> Result<File, SetupError> {
    let path = dir.join(LOCK);
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SetupError(format!("creating {}: {e}", path.display())))?;
    if lock(&f, true).is_err() {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        let by = match pid.trim() {
            "" => String::new(),
            p => format!(" (pid {p})"),
        };
        return Err(SetupError(format!(
            "the artifacts folder {} is in use by another vmscript run{by}: give each run its own --artifacts folder",
            dir.display()
        )));
    }
    // Who holds it, for the message above; the lock is what counts.
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

/// Gives a temp root `dir` to the person who reads the report: its marker
/// goes, and so does the folder if nothing stayed in it.
pub fn release_temp_root(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(MARKER));
    // Fails, as it should, when the folder is not empty.
    let _ = std::fs::remove_dir(dir);
}

/// The temp roots in `base` of runs that were killed: each empty one is
/// removed; the others (with the logs of the tests that were running) are
/// returned, to be named once, and are left to the user. Only folders of
/// this user with a marker no live run holds, never through a symbolic link.
pub fn sweep_stale(base: &Path) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    each_abandoned(base, &[TEMP_PREFIX], |dir| {
        release_temp_root(&dir);
        if dir.exists() {
            kept.push(dir);
        }
    });
    kept.sort();
    kept
}

impl Artifacts {
    /// Makes the root: `dir`, or a new temp folder.
    pub fn new(dir: Option<&Path>, keep_all: bool) -> Result<Artifacts, SetupError> {
        let (root, given, lock) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| {
                    SetupError(format!(
                        "creating the artifacts folder {}: {e}",
                        d.display()
                    ))
                })?;
                // An unwritable folder is a setup error of the run, found
                // before any test starts rather than once per test.
                tempfile::tempfile_in(d).map_err(|e| {
                    SetupError(format!(
                        "creating a file in the artifacts folder {}: {e}",
                        d.display()
                    ))
                })?;
                (d.to_path_buf(), true, lock_given(d)?)
            }
            None => {
                use std::os::unix::fs::PermissionsExt;
                // Logs can hold secrets a guest printed: private, like the temp dirs.
                let setup = |e: std::io::Error| {
                    SetupError(format!(
                        "creating an artifacts folder in {}: {e}",
                        std::env::temp_dir().display()
                    ))
                };
                let t = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(setup)?;
                // Locked before it has its name, so that a sweep never
                // sees the marker of a live run unlocked.
                let unnamed = t.path().join(format!("{MARKER}.new"));
                let marker = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&unnamed)
                    .map_err(setup)?;
                lock(&marker, false).map_err(setup)?;
                std::fs::rename(&unnamed, t.path().join(MARKER)).map_err(setup)?;
                (t.keep(), false, marker)
            }
        };
        Ok(Artifacts {
            root,
            given,
            keep_all,
            slugs: HashMap::new(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the (empty) folder for try `number` of `test`.
    pub fn create(&mut self, test: &Test, number: u32) -> Result<PathBuf, SetupError> {
        let slug = self.slug(&test.name);
        let name = if number > 1 {
            format!("{slug}.try{number}")
        } else {
            slug
        };
        let dir = self.root.join(name);
        let setup = |e: std::io::Error| SetupError(format!("creating {}: {e}", dir.display()));
        if dir.exists() {
            // Left by an earlier run into the same --artifacts folder.
            std::fs::remove_dir_all(&dir).map_err(setup)?;
        }
        std::fs::create_dir_all(&dir).map_err(setup)?;
        Ok(dir)
    }

    /// Whether a try that ended with `verdict` keeps its folder.
    pub fn keeps(&self, verdict: Verdict) -> bool {
        // An interrupted test is kept too: Ctrl-C is pressed when
        // something hangs, which is when its logs are wanted.
        self.given
            || self.keep_all
            || matches!(
                verdict,
                Verdict::Failed | Verdict::TimedOut | Verdict::Interrupted
            )
    }

    /// Removes a try's folder.
    pub fn discard(&self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Removes the temp root when nothing stayed in it.
    pub fn finish(&self) {
        if !self.given {
            release_temp_root(&self.root);
        }
    }

    /// The folder name of `name`: `t/boot.rhai` → `t_boot`, made unique.
    fn slug(&mut self, name: &str) -> String {
        if let Some(s) = self.slugs.get(name) {
            return s.clone();
        }
        let base = crate::script::run::file_name_part(name.trim_end_matches(".rhai"));
        let base = base.trim_start_matches('.').to_string();
        let mut slug = base.clone();
        let mut n = 1;
        while self.slugs.values().any(|s| *s == slug) {
            n += 1;
            slug = format!("{base}-{n}");
        }
        self.slugs.insert(name.to_string(), slug.clone());
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(name: &str) -> Test {
        Test {
            path: name.into(),
            name: name.into(),
            ..Test::default()
        }
    }

    #[test]
    fn folders_are_named_after_tests_and_unique() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Artifacts::new(Some(d.path()), false).unwrap();
        let one = a.create(&test("t/boot.rhai"), 1).unwrap();
        let two = a.create(&test("t/boot.rhai"), 2).unwrap();
        let other = a.create(&test("t_boot.rhai"), 1).unwrap();
        assert_eq!(one, d.path().join("t_boot"));
        assert_eq!(two, d.path().join("t_boot.try2"));
        assert_eq!(other, d.path().join("t_boot-2"));
        assert!(one.is_dir() && two.is_dir() && other.is_dir());
    }

    #[test]
    fn a_temp_root_keeps_failures_and_goes_when_empty() {
        let a = Artifacts::new(None, false).unwrap();
        assert!(a.keeps(Verdict::Failed) && a.keeps(Verdict::TimedOut));
        assert!(a.keeps(Verdict::Interrupted));
        assert!(!a.keeps(Verdict::Passed) && !a.keeps(Verdict::Skipped));
        let root = a.root().to_path_buf();
        assert!(root.is_dir());
        a.finish();
        assert!(!root.exists());
        let given = tempfile::tempdir().unwrap();
        let a = Artifacts::new(Some(given.path()), false).unwrap();
        assert!(a.keeps(Verdict::Passed));
        a.finish();
        assert!(given.path().exists());
        let a = Artifacts::new(None, true).unwrap();
        assert!(a.keeps(Verdict::Passed));
        a.finish();
    }

    #[test]
    fn a_given_folder_serves_one_run_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let first = Artifacts::new(Some(d.path()), false).unwrap();
        let err = Artifacts::new(Some(d.path()), false).unwrap_err();
        assert!(
            err.0.contains(&format!(
                "is in use by another vmscript run (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        Artifacts::new(Some(d.path()), false).unwrap();
    }

    #[test]
    fn killed_runs_temp_roots_are_removed_when_empty_and_named_once_when_not() {
        let base = tempfile::tempdir().unwrap();
        let make = |name: &str, log: bool| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(MARKER), "").unwrap();
            if log {
                std::fs::create_dir(d.join("t")).unwrap();
                std::fs::write(d.join("t/script.log"), "x").unwrap();
            }
            d
        };
        let empty = make("vmscript-artifacts-empty1", false);
        let logs = make("vmscript-artifacts-logs01", true);
        let live = make("vmscript-artifacts-live01", true);
        let held = File::open(live.join(MARKER)).unwrap();
        lock(&held, false).unwrap();
        assert_eq!(sweep_stale(base.path()), vec![logs.clone()]);
        assert!(!empty.exists());
        assert!(logs.join("t/script.log").exists());
        assert!(live.join(MARKER).exists());
        // Named once: its marker is gone.
        assert_eq!(sweep_stale(base.path()), Vec::<PathBuf>::new());
    }
}
