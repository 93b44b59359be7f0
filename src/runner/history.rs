//! What earlier runs of a suite left for the next one: each test's last
//! verdict and duration, in `.vmscript/history.json` in the suite's folder
//! (the folder of its `vmscript.toml`, else the folder run). It gives
//! `--rerun-failed` the tests that failed when they last ran, and
//! `--partition duration:K/N` the durations to balance shards by.
//!
//! A run updates only the tests it ran, as pytest's `lastfailed` does: a
//! `--rerun-failed` run that fixes one test leaves the others failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::results::TestResult;

/// The folder the history lives in, below the suite's folder.
pub const DIR: &str = ".vmscript";
const FILE: &str = "history.json";

/// One test's last run.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// It failed (timed out or was interrupted included).
    pub failed: bool,
    /// Seconds, every try together.
    pub duration: f64,
}

/// The history of one suite; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct History {
    path: PathBuf,
    pub tests: BTreeMap<String, Entry>,
}

impl History {
    /// The history kept in `suite` (empty when there is none yet, or it
    /// cannot be read: it is a cache, not a source of truth).
    pub fn load(suite: &Path) -> History {
        let path = suite.join(DIR).join(FILE);
        let tests = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("tests").and_then(Value::as_object).cloned())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(name, e)| {
                        Some((
                            name,
                            Entry {
                                failed: e.get("failed")?.as_bool()?,
                                duration: e.get("duration")?.as_f64()?,
                            },
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        History { path, tests }
    }

    /// The names of the tests that failed when they last ran.
    pub fn failed(&self) -> Vec<&str> {
        self.tests
            .iter()
            .filter(|(_, e)| e.failed)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The test's last duration, in seconds.
    pub fn duration(&self, name: &str) -> Option<f64> {
        self.tests.get(name).map(|e| e.duration)
    }

    /// Records the results of a run (tests not run keep their entries).
    pub fn record(&mut self, results: &[TestResult]) {
        for r in results {
            self.tests.insert(
                r.test.name.clone(),
                Entry {
                    failed: r.verdict().is_failure(),
                    duration: r.duration().as_secs_f64(),
                },
            );
        }
    }

    /// Writes the history (through a temp file, so a reader never sees
    /// half of it).
    pub fn save(&self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tests: serde_json::Map<String, Value> = self
            .tests
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    json!({ "failed": e.failed, "duration": e.duration }),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "tests": tests }))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::fs::write(tmp.path(), text)?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_updates_only_the_tests_it_ran() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::load(d.path());
        assert!(h.tests.is_empty());
        h.tests.insert(
            "a".into(),
            Entry {
                failed: true,
                duration: 1.5,
            },
        );
        h.tests.insert(
            "b".into(),
            Entry {
                failed: false,
                duration: 2.0,
            },
        );
        h.save().unwrap();
        let h = History::load(d.path());
        assert_eq!(h.failed(), ["a"]);
        assert_eq!(h.duration("b"), Some(2.0));
        assert_eq!(h.duration("c"), None);
    }
}
