//! The cache directory: `boot/ID/` holds one saved boot (`state`, the
//! migration stream; `diskN.qcow2`, the disks' overlays at that moment;
//! `meta.json`, written last; `used`, touched at each use).
//!
//! An entry is written in a temp dir beside it and renamed into place,
//! so a reader sees a whole entry or none; `meta.json` records the sizes,
//! so a truncated file is caught before QEMU reads it. One writer per
//! key at a time, by an exclusive `flock` on `boot/ID.lock`: a second
//! process that misses the same key boots without saving. Removal
//! renames the entry away first, so readers never see half of it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What an entry records about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The key's descriptor; must equal the one looked up.
    pub descriptor: Vec<String>,
    /// The size of `state`.
    pub state_size: u64,
    /// The size of each `diskN.qcow2`.
    pub disk_sizes: Vec<u64>,
    /// Seconds since the epoch when it was saved.
    pub saved: u64,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// One complete entry.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub dir: PathBuf,
    pub meta: Meta,
}

/// What `vmscript cache list` shows of an entry.
#[derive(Debug)]
pub struct Listed {
    pub id: String,
    pub bytes: u64,
    pub last_used: SystemTime,
    pub meta: Option<Meta>,
}

/// An entry being written, holding the key's lock.
#[derive(Debug)]
pub struct Writer {
    _lock: Flock<File>,
    tmp: tempfile::TempDir,
    final_dir: PathBuf,
}

impl Store {
    /// `$XDG_CACHE_HOME/vmscript`, else `~/.cache/vmscript`.
    pub fn from_env() -> Option<Store> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(Store::at(base.join("vmscript")))
    }

    /// The store rooted at `root`.
    pub fn at(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn boot_dir(&self) -> PathBuf {
        self.root.join("boot")
    }

    /// Where content hashes are remembered.
    pub fn hashes(&self) -> PathBuf {
        self.root.join("hashes.json")
    }

    /// Makes the directories.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.boot_dir())
    }

    /// The complete entry for `id` with this descriptor. An entry that is
    /// incomplete, truncated or of another descriptor is removed.
    pub fn lookup(&self, id: &str, descriptor: &[String]) -> Result<Option<Entry>, String> {
        let dir = self.boot_dir().join(id);
        if !dir.exists() {
            return Ok(None);
        }
        let entry = read_entry(id, &dir);
        match entry {
            Ok(e) if e.meta.descriptor == descriptor => Ok(Some(e)),
            Ok(_) => {
                self.remove(id);
                Err("an entry with the same hash but another descriptor".into())
            }
            Err(why) => {
                self.remove(id);
                Err(why)
            }
        }
    }

    /// Starts writing entry `id`, or `None` when another process is
    /// writing it now.
    pub fn begin(&self, id: &str) -> std::io::Result<Option<Writer>> {
        self.create()?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.boot_dir().join(format!("{id}.lock")))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{id}.tmp-"))
            .tempdir_in(self.boot_dir())?;
        Ok(Some(Writer {
            _lock: lock,
            tmp,
            final_dir: self.boot_dir().join(id),
        }))
    }

    /// Removes entry `id`, renaming it away first.
    pub fn remove(&self, id: &str) {
        let dir = self.boot_dir().join(id);
        let gone = self.boot_dir().join(format!(
            ".{id}.del-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        if std::fs::rename(&dir, &gone).is_ok() {
            let _ = std::fs::remove_dir_all(&gone);
        }
    }

    /// Every entry, oldest use first.
    pub fn list(&self) -> Vec<Listed> {
        let Ok(rd) = std::fs::read_dir(self.boot_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<Listed> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                if id.starts_with('.') {
                    return None;
                }
                let dir = e.path();
                Some(Listed {
                    bytes: dir_size(&dir),
                    last_used: last_used(&dir),
                    meta: read_entry(&id, &dir).ok().map(|e| e.meta),
                    id,
                })
            })
            .collect();
        out.sort_by_key(|l| l.last_used);
        out
    }

    /// Removes the least recently used entries, but not `keep`, until the
    /// cache holds at most `cap` bytes. Returns the ids removed.
    pub fn evict(&self, cap: u64, keep: &str) -> Vec<String> {
        let entries = self.list();
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut removed = Vec::new();
        for e in entries {
            if total <= cap {
                break;
            }
            if e.id == keep {
                continue;
            }
            self.remove(&e.id);
            total = total.saturating_sub(e.bytes);
            removed.push(e.id);
        }
        removed
    }

    /// Removes everything: entries, leftovers and remembered hashes.
    pub fn clear(&self) -> std::io::Result<usize> {
        let n = self.list().len();
        for dir in [self.boot_dir()] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        let _ = std::fs::remove_file(self.hashes());
        Ok(n)
    }
}

impl Entry {
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn disk(&self, i: usize) -> PathBuf {
        self.dir.join(format!("disk{i}.qcow2"))
    }

    /// Marks the entry as just used, for eviction.
    pub fn touch(&self) {
        let _ = File::create(self.dir.join("used"));
    }
}

impl Writer {
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    pub fn disk(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("disk{i}.qcow2"))
    }

    /// Writes `meta.json` (with the sizes of what is there) and moves the
    /// entry into place. A complete entry already there wins.
    pub fn commit(self, descriptor: Vec<String>, disks: usize) -> std::io::Result<()> {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len());
        let meta = Meta {
            descriptor,
            state_size: size(self.state())?,
            disk_sizes: (0..disks)
                .map(|i| size(self.disk(i)))
                .collect::<std::io::Result<_>>()?,
            saved: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        File::open(self.state())?.sync_all()?;
        let text = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
        std::fs::write(self.tmp.path().join("meta.json"), text)?;
        File::create(self.tmp.path().join("used"))?;
        let tmp = self.tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &self.final_dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !self.final_dir.exists() {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn read_entry(id: &str, dir: &Path) -> Result<Entry, String> {
    let text = std::fs::read(dir.join("meta.json"))
        .map_err(|_| "an entry without meta.json (incomplete)".to_string())?;
    let meta: Meta =
        serde_json::from_slice(&text).map_err(|e| format!("an unreadable meta.json: {e}"))?;
    let e = Entry {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        meta,
    };
    let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(e.state()) != Some(e.meta.state_size) {
        return Err(format!(
            "a state file of {:?} bytes where {} were saved (truncated)",
            len(e.state()),
            e.meta.state_size
        ));
    }
    for (i, s) in e.meta.disk_sizes.iter().enumerate() {
        if len(e.disk(i)) != Some(*s) {
            return Err(format!(
                "disk overlay {i} is not the size saved (truncated)"
            ));
        }
    }
    Ok(e)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn last_used(dir: &Path) -> SystemTime {
    std::fs::metadata(dir.join("used"))
        .or_else(|_| std::fs::metadata(dir))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The default size cap.
pub const DEFAULT_MAX_MB: u64 = 2048;

/// The cap from `VMSCRIPT_BOOT_CACHE_MAX_MB`, in bytes.
pub fn max_bytes() -> u64 {
    std::env::var("VMSCRIPT_BOOT_CACHE_MAX_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_MB)
        .saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(store: &Store, id: &str, bytes: usize) {
        let w = store.begin(id).unwrap().unwrap();
        std::fs::write(w.state(), vec![1u8; bytes]).unwrap();
        w.commit(vec![id.to_string()], 0).unwrap();
    }

    #[test]
    fn a_committed_entry_is_found_and_a_truncated_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("c"));
        write(&store, "a", 1000);
        let e = store.lookup("a", &["a".to_string()]).unwrap().unwrap();
        std::fs::write(e.state(), [1u8; 10]).unwrap();
        let err = store.lookup("a", &["a".to_string()]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(store.lookup("a", &["a".to_string()]).unwrap().is_none());
    }

    #[test]
    fn a_second_writer_of_a_key_is_turned_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("c"));
        let first = store.begin("k").unwrap();
        assert!(first.is_some());
        assert!(store.begin("k").unwrap().is_none());
        drop(first);
        assert!(store.begin("k").unwrap().is_some());
    }

    #[test]
    fn eviction_removes_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("c"));
        for id in ["old", "mid", "new"] {
            write(&store, id, 4000);
            std::thread::sleep(Duration::from_millis(20));
        }
        let mid = store.lookup("mid", &["mid".to_string()]).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        mid.touch();
        let removed = store.evict(9000, "new");
        assert_eq!(removed, vec!["old".to_string()]);
        let left: Vec<String> = store.list().into_iter().map(|l| l.id).collect();
        assert_eq!(left, vec!["new".to_string(), "mid".to_string()]);
    }
}
