//! Where each try of a test keeps its logs, and which logs stay.
//!
//! Every try gets a folder `ROOT/<test>/` (`ROOT/<test>.tryN/` for retries)
//! where the script's `script.log` and each machine's QEMU log, console
//! log and QMP transcript are written. `ROOT` is `--artifacts DIR`, where
//! everything stays, or else a fresh `vmscript-artifacts-XXXXXX` temp
//! folder, where only failed and timed-out tries stay (all of them with
//! `--keep-artifacts`) and which is removed at the end when nothing stayed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
}

impl Artifacts {
    /// Makes the root: `dir`, or a new temp folder.
    pub fn new(dir: Option<&Path>, keep_all: bool) -> Result<Artifacts, SetupError> {
        let (root, given) = match dir {
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
                (d.to_path_buf(), true)
            }
            None => {
                use std::os::unix::fs::PermissionsExt;
                // Logs can hold secrets a guest printed: private, like the temp dirs.
                let t = tempfile::Builder::new()
                    .prefix("vmscript-artifacts-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(|e| {
                        SetupError(format!(
                            "creating an artifacts folder in {}: {e}",
                            std::env::temp_dir().display()
                        ))
                    })?;
                (t.keep(), false)
            }
        };
        Ok(Artifacts {
            root,
            given,
            keep_all,
            slugs: HashMap::new(),
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
        self.given || self.keep_all || matches!(verdict, Verdict::Failed | Verdict::TimedOut)
    }

    /// Removes a try's folder.
    pub fn discard(&self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Removes the temp root when nothing stayed in it.
    pub fn finish(&self) {
        if !self.given {
            // Fails, as it should, when the folder is not empty.
            let _ = std::fs::remove_dir(&self.root);
        }
    }

    /// The folder name of `name`: `t/boot.rhai` → `t_boot`, made unique.
    fn slug(&mut self, name: &str) -> String {
        if let Some(s) = self.slugs.get(name) {
            return s.clone();
        }
        let base: String = name
            .trim_end_matches(".rhai")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
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
        assert!(!a.keeps(Verdict::Passed) && !a.keeps(Verdict::Interrupted));
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
}
