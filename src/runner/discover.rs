//! Finding the tests: files as given, folders searched for `*.rhai` in
//! sorted order, skipping anything under a folder named `lib` (modules for
//! `import`, not tests); then `--filter` and `--partition`.

use std::path::{Path, PathBuf};

/// One test file and the name it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    pub path: PathBuf,
    pub name: String,
}

/// The tests under `paths` (`.` when empty), in order, without duplicates.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Test>, String> {
    let default = [PathBuf::from(".")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut tests = Vec::new();
    for p in paths {
        let meta = p.metadata().map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| format!("{}: {e}", p.display()))?;
            found.sort();
            tests.extend(found);
        } else {
            tests.push(p.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    Ok(tests
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .map(|path| {
            let path = path
                .strip_prefix("./")
                .map_or(path.clone(), Path::to_path_buf);
            Test {
                name: path.display().to_string(),
                path,
            }
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        let name = entry.file_name();
        if ty.is_dir() {
            if name != "lib" && !name.to_string_lossy().starts_with('.') {
                walk(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rhai") {
            out.push(path);
        }
    }
    Ok(())
}

/// `--partition count:K/N` (every Nth test from the Kth) or `hash:K/N`
/// (by a stable hash of the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    Count { k: u64, n: u64 },
    Hash { k: u64, n: u64 },
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Partition, String> {
        let bad =
            || format!("invalid partition {s:?}: expected count:K/N or hash:K/N with 1 <= K <= N");
        let (kind, kn) = s.split_once(':').ok_or_else(bad)?;
        let (k, n) = kn.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        match kind {
            "count" => Ok(Partition::Count { k, n }),
            "hash" => Ok(Partition::Hash { k, n }),
            _ => Err(bad()),
        }
    }
}

impl Partition {
    /// Keeps the tests of this partition.
    pub fn select(&self, tests: Vec<Test>) -> Vec<Test> {
        tests
            .into_iter()
            .enumerate()
            .filter(|(i, t)| match *self {
                Partition::Count { k, n } => (*i as u64) % n == k - 1,
                Partition::Hash { k, n } => fnv1a(t.name.as_bytes()) % n == k - 1,
            })
            .map(|(_, t)| t)
            .collect()
    }
}

/// FNV-1a: stable across runs and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_give_sorted_rhai_files_outside_lib() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "b.rhai",
            "a.rhai",
            "notes.txt",
            "sub/c.rhai",
            "lib/m.rhai",
            "sub/lib/n.rhai",
        ] {
            let f = p.join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let t = discover(&[p.to_path_buf()]).unwrap();
        let names: Vec<_> = t
            .iter()
            .map(|t| t.path.strip_prefix(p).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.rhai", "b.rhai", "sub/c.rhai"]);
    }

    #[test]
    fn missing_paths_are_errors() {
        assert!(discover(&["/nonexistent/x.rhai".into()]).is_err());
    }

    #[test]
    fn partitions_split_every_test_exactly_once() {
        let tests: Vec<Test> = (0..10)
            .map(|i| Test {
                path: format!("t{i}.rhai").into(),
                name: format!("t{i}.rhai"),
            })
            .collect();
        for spec in ["count", "hash"] {
            let mut all: Vec<Test> = (1..=3)
                .flat_map(|k| {
                    let p: Partition = format!("{spec}:{k}/3").parse().unwrap();
                    p.select(tests.clone())
                })
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            let mut want = tests.clone();
            want.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(all, want);
        }
        assert!("count:0/3".parse::<Partition>().is_err());
        assert!("count:4/3".parse::<Partition>().is_err());
        assert!("slice:1/3".parse::<Partition>().is_err());
    }
}
