//! `vmscript.toml`: a suite's own settings, found in the folder run or the
//! nearest parent that has one.
//!
//! ```toml
//! [run]                 # defaults; command-line options win
//! jobs = 4
//! timeout = 120         # seconds per test
//! timeout-multiplier = 1.5
//! retries = 1
//! slow-timeout = 60
//! lib = ["lib", "../shared"]   # relative to this file's folder
//! qemu = "qemu-system-x86_64"
//!
//! [[tests]]             # for every test whose name contains `filter`
//! filter = "migration"
//! timeout = 600
//! retries = 2
//! weight = 2            # holds two of the -j slots
//! tags = ["slow", "migration"]
//! ```
//!
//! Unknown keys are an error naming the file, the line and the valid keys.
//! [`Config::settings`] gives each test its [`Settings`]: the `[run]`
//! values, then every matching `[[tests]]` entry in order (a later one
//! wins), then the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::SetupError;

/// The file's name.
pub const FILE: &str = "vmscript.toml";
/// The per-test timeout when nothing sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// When a running test is announced as slow, when nothing sets it.
pub const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// How one test is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Already multiplied by the timeout multiplier.
    pub timeout: Duration,
    pub retries: u32,
    /// How many of the `-j` slots it holds (at least 1).
    pub weight: usize,
    pub tags: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: DEFAULT_TIMEOUT,
            retries: 0,
            weight: 1,
            tags: Vec::new(),
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSection {
    pub jobs: Option<u16>,
    pub timeout: Option<f64>,
    pub timeout_multiplier: Option<f64>,
    pub retries: Option<u32>,
    pub slow_timeout: Option<f64>,
    #[serde(default)]
    pub lib: Vec<PathBuf>,
    pub qemu: Option<PathBuf>,
}

/// One `[[tests]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Applies to the tests whose name contains this.
    pub filter: String,
    pub timeout: Option<f64>,
    pub retries: Option<u32>,
    pub weight: Option<u16>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    run: RunSection,
    #[serde(default)]
    tests: Vec<Override>,
}

/// A suite's configuration; empty when there is no file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it was read from.
    pub path: Option<PathBuf>,
    /// The suite's folder: the file's, else the folder run.
    pub root: PathBuf,
    pub run: RunSection,
    pub tests: Vec<Override>,
}

impl Config {
    /// The `vmscript.toml` of the suite at `paths` (the first path's folder
    /// or the nearest parent with one), or an empty configuration.
    pub fn find(paths: &[PathBuf]) -> Result<Config, SetupError> {
        let first = paths.first().cloned().unwrap_or_else(|| PathBuf::from("."));
        let start = if first.is_dir() {
            first
        } else {
            first
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let start = std::fs::canonicalize(&start).unwrap_or(start);
        for dir in start.ancestors() {
            let file = dir.join(FILE);
            if file.is_file() {
                return Config::load(&file);
            }
        }
        Ok(Config {
            root: start,
            ..Config::default()
        })
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config, SetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SetupError(format!("reading {}: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Parses the text of the file at `path`; relative `lib` folders and
    /// a `qemu` path with a `/` are taken from the file's folder.
    pub fn parse(text: &str, path: &Path) -> Result<Config, SetupError> {
        let file: File = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut run = file.run;
        run.lib = run.lib.iter().map(|l| dir.join(l)).collect();
        if let Some(q) = &run.qemu {
            if q.components().count() > 1 && q.is_relative() {
                run.qemu = Some(dir.join(q));
            }
        }
        let shown = path.display();
        let secs = |v: Option<f64>, what: &str| -> Result<(), SetupError> {
            match v {
                Some(s) if !(s.is_finite() && s > 0.0) => Err(SetupError(format!(
                    "{shown}: {what} = {s} is not a number of seconds above 0"
                ))),
                _ => Ok(()),
            }
        };
        secs(run.timeout, "[run] timeout")?;
        secs(run.timeout_multiplier, "[run] timeout-multiplier")?;
        secs(run.slow_timeout, "[run] slow-timeout")?;
        if run.jobs == Some(0) {
            return Err(SetupError(format!("{shown}: [run] jobs must be 1 or more")));
        }
        for t in &file.tests {
            secs(t.timeout, "[[tests]] timeout")?;
            if t.weight == Some(0) {
                return Err(SetupError(format!(
                    "{shown}: [[tests]] weight must be 1 or more (filter {:?})",
                    t.filter
                )));
            }
        }
        Ok(Config {
            path: Some(path.to_path_buf()),
            root: dir.to_path_buf(),
            run,
            tests: file.tests,
        })
    }

    /// The settings of the test `name`: `[run]`, then each matching
    /// `[[tests]]` in order, then `timeout` and `retries` from the command
    /// line; the timeout is multiplied by `multiplier` at the end.
    pub fn settings(
        &self,
        name: &str,
        timeout: Option<Duration>,
        retries: Option<u32>,
        multiplier: f64,
    ) -> Settings {
        let mut s = Settings::default();
        if let Some(t) = self.run.timeout {
            s.timeout = Duration::from_secs_f64(t);
        }
        if let Some(r) = self.run.retries {
            s.retries = r;
        }
        for o in self.tests.iter().filter(|o| name.contains(&o.filter)) {
            if let Some(t) = o.timeout {
                s.timeout = Duration::from_secs_f64(t);
            }
            if let Some(r) = o.retries {
                s.retries = r;
            }
            if let Some(w) = o.weight {
                s.weight = usize::from(w);
            }
            if let Some(tags) = &o.tags {
                for t in tags {
                    if !s.tags.contains(t) {
                        s.tags.push(t.clone());
                    }
                }
            }
        }
        if let Some(t) = timeout {
            s.timeout = t;
        }
        if let Some(r) = retries {
            s.retries = r;
        }
        s.timeout = s.timeout.mul_f64(multiplier);
        s
    }
}

/// `FILE:LINE:COL: message`, with the valid keys where a key was unknown.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> SetupError {
    let mut at = path.display().to_string();
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        at = format!("{at}:{line}:{col}");
    }
    let message = e.message().trim().replace('`', "");
    let message = match message.split_once(", expected one of ") {
        Some((what, valid)) => format!("{what}; valid keys here are {valid}"),
        None => match message.split_once(", expected ") {
            Some((what, valid)) if what.starts_with("unknown field") => {
                format!("{what}; valid keys here are {valid}")
            }
            _ => message,
        },
    };
    SetupError(format!("{at}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, SetupError> {
        Config::parse(text, Path::new("/suite/vmscript.toml"))
    }

    #[test]
    fn overrides_apply_in_order_and_the_command_line_wins() {
        let c = parse(
            "[run]\ntimeout = 100\nretries = 1\nlib = [\"lib\"]\n\n[[tests]]\nfilter = \"mig\"\ntimeout = 600\nweight = 2\ntags = [\"slow\"]\n\n[[tests]]\nfilter = \"migrate-big\"\ntags = [\"big\"]\nretries = 3\n",
        )
        .unwrap();
        assert_eq!(c.run.lib, [PathBuf::from("/suite/lib")]);
        let plain = c.settings("boot.rhai", None, None, 1.0);
        assert_eq!(plain.timeout, Duration::from_secs(100));
        assert_eq!((plain.retries, plain.weight), (1, 1));
        let big = c.settings("t/migrate-big.rhai", None, None, 1.0);
        assert_eq!(big.timeout, Duration::from_secs(600));
        assert_eq!((big.retries, big.weight), (3, 2));
        assert_eq!(big.tags, ["slow", "big"]);
        let cli = c.settings(
            "t/migrate-big.rhai",
            Some(Duration::from_secs(5)),
            Some(0),
            2.0,
        );
        assert_eq!(cli.timeout, Duration::from_secs(10));
        assert_eq!(cli.retries, 0);
    }

    #[test]
    fn unknown_keys_name_the_file_the_line_and_the_valid_keys() {
        let e = parse("[run]\njobs = 2\ntimout = 5\n").unwrap_err().0;
        assert!(
            e.starts_with("/suite/vmscript.toml:3:1: unknown field timout"),
            "{e}"
        );
        assert!(
            e.contains("valid keys here are jobs, timeout, timeout-multiplier"),
            "{e}"
        );
        let e = parse("[[tests]]\nfilter = \"x\"\nwieght = 2\n")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("/suite/vmscript.toml:3:1: unknown field wieght"),
            "{e}"
        );
        assert!(e.contains("filter, timeout, retries, weight, tags"), "{e}");
        let e = parse("[runn]\n").unwrap_err().0;
        assert!(
            e.contains("unknown field runn; valid keys here are run or tests"),
            "{e}"
        );
        assert!(parse("[run]\ntimeout = -1\n").is_err());
        assert!(parse("[[tests]]\nfilter = \"x\"\nweight = 0\n").is_err());
    }
}
