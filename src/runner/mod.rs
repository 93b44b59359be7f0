//! `vmscript run`: finds the test scripts, runs them in parallel (each
//! with its own engine, temp dir and artifacts) and reports the results.
//!
//! Knows nothing of Rhai: a test is run by [`crate::script::run_file`].
//! Start with [`run`], which wires the parts together, one module per
//! responsibility (as in cargo-nextest's runner): [`discover`] finds the
//! tests, [`partition`] splits them across CI machines, [`executor`]
//! schedules them on worker threads with retries and `--fail-fast`,
//! [`artifacts`] decides where logs go and which stay, [`signal`] turns
//! Ctrl-C/SIGTERM into a clean stop, [`results`] holds what came out, and
//! [`reporter`] shows it (human, TAP, JSON, JUnit, the live progress line).
//!
//! Exit status (see [`Summary::exit_code`]): 0 when nothing failed, 1 when
//! a test failed (timed-out and interrupted tests count as failed), 2 for a
//! usage or setup error, 128+N when stopped by signal N.

pub mod artifacts;
pub mod discover;
pub mod executor;
pub mod partition;
pub mod reporter;
pub mod results;
pub mod signal;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::script::{Program, QemuBinary};

pub use discover::Test;
pub use partition::Partition;
pub use reporter::Format;
pub use results::{Counts, TestResult, Verdict};

/// What `vmscript run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Files and folders (`.` when empty).
    pub paths: Vec<PathBuf>,
    /// Tests run at once; 0 means one per CPU. `--no-capture` makes it 1.
    pub jobs: usize,
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
    /// Start no more tests after the first failure.
    pub fail_fast: bool,
    /// Run a failed or timed-out test up to this many more times.
    pub retries: u32,
    pub partition: Option<Partition>,
    pub format: Format,
    pub junit: Option<PathBuf>,
    /// `KEY=VALUE` pairs for `param()`.
    pub params: BTreeMap<String, String>,
    /// Draw the live progress line (when stderr is a terminal).
    pub progress: bool,
}

/// A usage or setup problem: nothing was run (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// Why a run stopped before starting every test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--fail-fast` after a failure.
    FailFast,
    /// Ctrl-C, SIGTERM or SIGHUP.
    Signal(i32),
}

/// How a whole run ended.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    /// Tests selected but not run (after --fail-fast or a signal).
    pub not_run: usize,
    pub stopped: Option<StopReason>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Tests run at once.
    pub jobs: usize,
    pub partition: Option<Partition>,
}

impl Summary {
    /// The process exit status; see the module documentation.
    pub fn exit_code(&self) -> i32 {
        match self.stopped {
            Some(StopReason::Signal(s)) => 128 + s,
            _ if self.counts.failed > 0 => 1,
            _ => 0,
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

/// Every test file of a run, compiled once and shared by its cases.
pub type Programs = HashMap<PathBuf, Arc<Program>>;

/// What a run will run: the tests, and the compiled files they are in.
#[derive(Debug, Default)]
pub struct Selection {
    pub tests: Vec<Test>,
    pub programs: Programs,
}

/// The tests `options` selects, in order: each file compiled once, a file
/// of cases expanded into its cases, then `--filter` and `--partition`.
pub fn select(options: &Options) -> Result<Selection, SetupError> {
    let files = discover::discover(&options.paths).map_err(SetupError)?;
    let mut programs = Programs::new();
    let mut tests = Vec::new();
    for file in files {
        let program = Arc::new(Program::load(&file.path));
        let cases = program.cases();
        if cases.is_empty() {
            tests.push(file.clone());
        } else {
            tests.extend(cases.iter().map(|c| Test::case_of(&file, c)));
        }
        programs.insert(file.path, program);
    }
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|t| {
            options.filters.is_empty() || options.filters.iter().any(|f| t.name.contains(f))
        })
        .collect();
    let tests = match options.partition {
        Some(p) => p.select(tests),
        None => tests,
    };
    Ok(Selection { tests, programs })
}

/// How many tests run at once: `-j`, else one per CPU; one with
/// `--no-capture`, whose unprefixed output would be unreadable interleaved
/// (cargo-nextest does the same).
pub fn jobs(options: &Options) -> usize {
    if !options.capture {
        return 1;
    }
    match options.jobs {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Runs the selected tests and reports them.
pub fn run(options: &Options) -> Result<Summary, SetupError> {
    let Selection { tests, programs } = select(options)?;
    let qemu = QemuBinary::resolve(options.qemu.clone());
    if qemu.is_explicit() {
        qemu.locate().map_err(SetupError)?;
    }
    let artifacts =
        artifacts::Artifacts::new(options.artifacts.as_deref(), options.keep_artifacts)?;
    let channel = std::sync::mpsc::channel();
    let tx = channel.0.clone();
    let signals = signal::SignalWatch::install(move |sig| {
        let _ = tx.send(executor::Msg::Signal(sig));
    })
    .map_err(|e| SetupError(format!("installing the signal handlers: {e}")))?;
    if options.artifacts.is_none() {
        signals.remove_if_empty_on_exit(artifacts.root().to_path_buf());
    }
    let live = options.progress && options.capture && reporter::progress::wanted();
    let mut reporter = reporter::Reporter::new(options.format, options.capture, live);
    if tests.is_empty() {
        reporter.note("no tests to run");
    }
    if !options.capture && options.jobs > 1 {
        reporter.note("--no-capture runs one test at a time, so that output stays readable");
    }
    let jobs = jobs(options);
    let exec = executor::Executor::new(options, qemu, jobs, programs, artifacts, signals, channel);
    let (summary, results) = exec.run(tests, &mut reporter);
    if let Some(j) = &options.junit {
        reporter::junit::write(j, &summary, &results)
            .map_err(|e| SetupError(format!("writing {}: {e}", j.display())))?;
    }
    Ok(summary)
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
        s.stopped = Some(StopReason::FailFast);
        assert_eq!(s.exit_code(), 1);
        s.stopped = Some(StopReason::Signal(15));
        assert_eq!(s.exit_code(), 143);
    }
}
