//! Temp folders that a SIGKILLed vmscript leaves are removed by the next.
//!
//! A killed process runs no code, so its run's temp folder (and the
//! machines' folders and sockets inside it) would stay; its QEMUs die by
//! the parent-death signal. Each such folder therefore holds a marker
//! file, [`MARKER`], that its process keeps locked (`flock`) for as long
//! as it lives: the kernel drops the lock when the process dies, however
//! it dies, in any pid namespace. [`sweep_stale`], called when `vmscript
//! run` and `vmscript repl` start, removes every folder with one of our
//! prefixes whose marker it can lock, that is whose owner is gone. The
//! marker is locked before it gets its name, so the marker of a live
//! folder is never seen unlocked; a folder without one (a user's, named
//! like ours by chance) is left alone.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Removes an empty `TMPDIR` from the environment, as if it were unset.
/// The standard library takes `TMPDIR=""` for the current folder, so
/// temp folders (with their sockets) would land wherever vmscript was
/// started, and so would those of QEMU and the commands it starts. Call
/// it before any other thread exists.
pub fn treat_empty_tmpdir_as_unset() {
    if std::env::var_os("TMPDIR").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("TMPDIR");
    }
}

/// The locked marker in a folder owned by a live vmscript.
pub const MARKER: &str = ".vmscript-owner";

/// The prefixes of the folders [`sweep_stale`] looks at.
pub const PREFIXES: &[&str] = &["vmscript-run-", "vmscript-repl-"];

/// A private (0700) temp folder owned by this process: removed when
/// dropped or closed, and by the next vmscript if this one is killed.
#[derive(Debug)]
pub struct OwnedTempDir {
    dir: Option<tempfile::TempDir>,
    /// Held (with its lock) until the folder is gone.
    marker: Option<File>,
}

impl OwnedTempDir {
    /// Makes a folder named `prefix` and random characters in the system's
    /// temp folder (`$TMPDIR`), with its locked marker.
    pub fn new(prefix: &str) -> io::Result<OwnedTempDir> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let unnamed = dir.path().join(format!("{MARKER}.new"));
        let marker = File::options()
            .write(true)
            .create_new(true)
            .open(&unnamed)?;
        lock(&marker, false)?;
        std::fs::rename(&unnamed, dir.path().join(MARKER))?;
        Ok(OwnedTempDir {
            dir: Some(dir),
            marker: Some(marker),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Removes the folder and everything in it, then lets go of the lock.
    pub fn close(mut self) -> io::Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> io::Result<()> {
        let r = self.dir.take().map_or(Ok(()), tempfile::TempDir::close);
        self.marker.take();
        r
    }
}

impl Drop for OwnedTempDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// An exclusive lock on `f` (`flock(LOCK_EX)`), or without waiting (`try`).
pub(crate) fn lock(f: &File, try_only: bool) -> io::Result<()> {
    if try_only {
        Ok(f.try_lock()?)
    } else {
        f.lock()
    }
}

/// Removes the folders in `base` that a dead vmscript left (see the module
/// documentation); returns them. What cannot be removed is left as it is.
pub fn sweep_stale(base: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    each_abandoned(base, PREFIXES, |dir| {
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    });
    removed
}

/// Calls `f` on each folder in `base` named with one of `prefixes` that a
/// dead vmscript left: a folder of this user, never through a symbolic
/// link, holding a marker no live owner has locked. The marker stays
/// locked while `f` runs, so no other sweep takes the folder meanwhile.
pub(crate) fn each_abandoned(base: &Path, prefixes: &[&str], mut f: impl FnMut(PathBuf)) {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        // `DirEntry::metadata` does not follow a symbolic link.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let dir = entry.path();
        let Ok(marker) = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(MARKER))
        else {
            continue;
        };
        if lock(&marker, true).is_err() {
            continue;
        }
        f(dir);
        drop(marker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_whose_owner_is_gone_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let make = |name: &str, marker: bool| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if marker {
                std::fs::write(d.join(MARKER), "").unwrap();
            }
            std::fs::write(d.join("monitor.sock"), "").unwrap();
            d
        };
        // A dead owner's folder: its marker is not locked.
        let dead = make("vmscript-run-dead01", true);
        // A live owner's: locked by a descriptor this test holds.
        let live = make("vmscript-run-live01", true);
        let held = File::open(live.join(MARKER)).unwrap();
        lock(&held, false).unwrap();
        // Named like ours but without a marker, or not named like ours.
        let foreign = make("vmscript-run-mine", false);
        let other = make("vmscript-artifacts-x1", true);
        let removed = sweep_stale(base.path());
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.exists() && foreign.exists() && other.exists());
        drop(held);
        assert_eq!(sweep_stale(base.path()), vec![live]);
    }

    #[test]
    fn an_owned_folder_is_locked_while_it_lives_and_removed_at_the_end() {
        let d = OwnedTempDir::new("vmscript-test-").unwrap();
        let path = d.path().to_path_buf();
        let marker = File::open(path.join(MARKER)).unwrap();
        assert!(lock(&marker, true).is_err(), "the marker is not locked");
        assert!(!path.join(format!("{MARKER}.new")).exists());
        d.close().unwrap();
        assert!(!path.exists());
        lock(&marker, true).unwrap();
    }
}
