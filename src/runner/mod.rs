//! `vmscript run`: finds the test scripts, runs each one (sequentially for
//! now, each with its own engine and [`crate::script::Run`]) and reports
//! the results.
//!
//! Knows nothing of Rhai: a test is run by [`crate::script::run_file`].
//! Start with [`run`]; [`discover`] finds tests, [`report`] prints them,
//! [`signal`] turns Ctrl-C/SIGTERM into the cancellation of the test
//! running now.
//!
//! Exit status (see [`Summary::exit_code`]): 0 when nothing failed, 1 when
//! a test failed, 2 for a usage or setup error, 128+N when stopped by
//! signal N.

pub mod discover;
pub mod report;
pub mod signal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::script::{self, Cancel, QemuBinary, RunConfig, Status};

pub use discover::{Partition, Test};
pub use report::{Counts, Format, TestResult};

/// What `vmscript run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Files and folders (`.` when empty).
    pub paths: Vec<PathBuf>,
    /// Per-test timeout.
    pub timeout: Duration,
    /// `--qemu`.
    pub qemu: Option<PathBuf>,
    /// `--artifacts DIR`: every test's logs go to `DIR/<test>/` and stay.
    pub artifacts: Option<PathBuf>,
    /// Keep the artifacts of passing tests too.
    pub keep_artifacts: bool,
    /// `--no-capture` turns this off.
    pub capture: bool,
    /// `--lib` folders for `import`.
    pub lib_dirs: Vec<PathBuf>,
    /// Run only tests whose name contains one of these.
    pub filters: Vec<String>,
    /// Stop after the first failure.
    pub fail_fast: bool,
    /// Run a failed test up to this many more times.
    pub retries: u32,
    pub partition: Option<Partition>,
    pub format: Format,
    pub junit: Option<PathBuf>,
    /// `KEY=VALUE` pairs for `param()`.
    pub params: BTreeMap<String, String>,
}

/// A usage or setup problem: nothing was run (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// How a whole run ended.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    /// Tests selected but not run (after --fail-fast or a signal).
    pub not_run: usize,
    /// The signal that stopped the run.
    pub signal: Option<i32>,
}

impl Summary {
    /// The process exit status; see the module documentation.
    pub fn exit_code(&self) -> i32 {
        match self.signal {
            Some(s) => 128 + s,
            None if self.counts.failed > 0 => 1,
            None => 0,
        }
    }
}

/// Parses `KEY=VALUE` pairs.
pub fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, String>, SetupError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(SetupError(format!(
                "invalid parameter {p:?}: expected KEY=VALUE after --"
            ))),
        })
        .collect()
}

/// Sets `$VMSCRIPT_GUEST` to the project's `.cache/guest` when it is unset
/// and that folder exists: the binary lives in `<project>/target/<profile>/`,
/// so scripts run from the project find the guest that
/// `scripts/build-guest.sh` built. Call before any thread starts.
pub fn default_guest_env() {
    if std::env::var_os("VMSCRIPT_GUEST").is_some() {
        return;
    }
    let Some(guest) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent()?.parent().map(Path::to_path_buf))
        .map(|root| root.join(".cache").join("guest"))
    else {
        return;
    };
    if guest.join("vmlinuz").is_file() {
        // Called from main before any other thread exists.
        std::env::set_var("VMSCRIPT_GUEST", guest);
    }
}

/// The tests `options` selects, in order.
pub fn select(options: &Options) -> Result<Vec<Test>, SetupError> {
    let tests = discover::discover(&options.paths).map_err(SetupError)?;
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|t| {
            options.filters.is_empty() || options.filters.iter().any(|f| t.name.contains(f))
        })
        .collect();
    Ok(match options.partition {
        Some(p) => p.select(tests),
        None => tests,
    })
}

/// Runs the selected tests and reports them.
pub fn run(options: &Options) -> Result<Summary, SetupError> {
    let tests = select(options)?;
    let qemu = QemuBinary::resolve(options.qemu.clone());
    if qemu.is_explicit() {
        qemu.locate().map_err(SetupError)?;
    }
    if let Some(a) = &options.artifacts {
        std::fs::create_dir_all(a).map_err(|e| {
            SetupError(format!(
                "creating the artifacts folder {}: {e}",
                a.display()
            ))
        })?;
    }
    let signals = signal::SignalWatch::install()
        .map_err(|e| SetupError(format!("installing the signal handlers: {e}")))?;
    let mut reporter = report::Reporter::new(options.format, options.capture);
    reporter.start(tests.len());
    let mut summary = Summary::default();
    let mut results = Vec::new();
    for (i, test) in tests.iter().enumerate() {
        if signals.received().is_some() || (options.fail_fast && summary.counts.failed > 0) {
            summary.not_run = tests.len() - i;
            break;
        }
        let result = run_test(options, &qemu, &signals, test)?;
        summary.counts.add(&result.outcome.status);
        reporter.result(&result);
        results.push(result);
    }
    summary.signal = signals.received();
    reporter.finish(summary.counts, summary.not_run);
    if let Some(j) = &options.junit {
        report::write_junit(j, &results)
            .map_err(|e| SetupError(format!("writing {}: {e}", j.display())))?;
    }
    Ok(summary)
}

/// Runs one test, retrying a failure up to `--retries` times.
fn run_test(
    options: &Options,
    qemu: &QemuBinary,
    signals: &signal::SignalWatch,
    test: &Test,
) -> Result<TestResult, SetupError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let artifacts = artifacts_dir(options, test, tries)?;
        let config = RunConfig {
            script: test.path.clone(),
            artifacts: artifacts.clone(),
            timeout: options.timeout,
            qemu: qemu.clone(),
            params: options.params.clone(),
            capture: options.capture,
            lib_dirs: options.lib_dirs.clone(),
        };
        let cancel = Cancel::new();
        signals.set_current(Some(cancel.clone()));
        let outcome = script::run_file(config, cancel);
        signals.set_current(None);
        let failed = matches!(outcome.status, Status::Failed(_));
        let keep = failed || options.keep_artifacts || options.artifacts.is_some();
        if !keep {
            let _ = std::fs::remove_dir_all(&artifacts);
        }
        if !failed || tries > options.retries || signals.received().is_some() {
            return Ok(TestResult {
                test: test.clone(),
                outcome,
                tries,
                artifacts: keep.then_some(artifacts),
            });
        }
        // A failed try that is retried is reported through its last try
        // only; its logs stay only where the user asked for them.
        if options.artifacts.is_none() && !options.keep_artifacts {
            let _ = std::fs::remove_dir_all(&artifacts);
        }
    }
}

/// `DIR/<test>[.tryN]` under `--artifacts`, else a new temp folder.
fn artifacts_dir(options: &Options, test: &Test, attempt: u32) -> Result<PathBuf, SetupError> {
    let slug: String = test
        .name
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
    let setup = |p: &Path, e: std::io::Error| SetupError(format!("creating {}: {e}", p.display()));
    match &options.artifacts {
        Some(root) => {
            let name = if attempt > 1 {
                format!("{slug}.try{attempt}")
            } else {
                slug
            };
            let dir = root.join(name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| setup(&dir, e))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| setup(&dir, e))?;
            Ok(dir)
        }
        None => tempfile::Builder::new()
            // Private: QEMU and console logs may hold what the guest printed.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .prefix(&format!(
                "vmscript-artifacts-{}-",
                test.path.file_stem().unwrap_or_default().to_string_lossy()
            ))
            .tempdir()
            .map(|t| t.keep())
            .map_err(|e| setup(&std::env::temp_dir(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_key_value_pairs() {
        let p = parse_params(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "x=y");
        assert_eq!(p["c"], "");
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["=v".into()]).is_err());
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        let mut s = Summary::default();
        assert_eq!(s.exit_code(), 0);
        s.counts.failed = 1;
        assert_eq!(s.exit_code(), 1);
        s.signal = Some(15);
        assert_eq!(s.exit_code(), 143);
    }
}
