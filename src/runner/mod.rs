//! `vmscript run`: finds the test scripts, runs them in parallel (each
//! with its own engine, temp dir and artifacts) and reports the results.
//!
//! Knows nothing of Rhai: a file is compiled once into a
//! [`crate::script::Program`], whose cases (if any) are tests of their
//! own, and a test is run by [`crate::script::run_program`].
//! Start with [`run`], which wires the parts together, one module per
//! responsibility (as in cargo-nextest's runner): [`config`] reads the
//! suite's `vmscript.toml`, [`discover`] finds the
//! tests, [`select`] picks them, [`partition`] splits them across CI machines, [`executor`]
//! schedules them on worker threads with retries and `--fail-fast`,
//! [`artifacts`] decides where logs go and which stay, [`signal`] turns
//! Ctrl-C/SIGTERM into a clean stop, [`results`] holds what came out, and
//! [`reporter`] shows it (human, TAP, JSON, JUnit, the live progress line).
//! With `--debug-on-fail` ([`Options::debugger`]) tests run one at a time,
//! without retries, and a failed one is handed to the debugger before
//! its cleanup.
//!
//! Exit status (see [`Summary::exit_code`]): 0 when nothing failed, 1 when
//! a test failed (timed-out and interrupted tests count as failed), 2 for a
//! usage or setup error, 4 when no test was selected (see [`NoTests`]),
//! 128+N when stopped by signal N.

pub mod artifacts;
pub mod config;
pub mod discover;
pub mod executor;
pub mod history;
pub mod partition;
pub mod reporter;
pub mod results;
pub mod signal;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::script::{Debugger, Program, QemuBinary, QemuSource};

pub use config::{Config, Settings};
pub use discover::Test;
pub use partition::Partition;
pub use reporter::Format;
pub use results::{Counts, TestResult, Verdict};

/// What `vmscript run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Files and folders (`.` when empty).
    pub paths: Vec<PathBuf>,
    /// Tests run at once; 0 means `vmscript.toml`'s, else one per CPU.
    /// `--no-capture` makes it 1.
    pub jobs: usize,
    /// `--timeout`: every test's, over `vmscript.toml`'s.
    pub timeout: Option<Duration>,
    /// `--timeout-multiplier`, else `$VMSCRIPT_TIMEOUT_MULTIPLIER`, else
    /// `vmscript.toml`'s: scales every timeout and every wait of a script.
    pub timeout_multiplier: Option<f64>,
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
    /// Run a failed or timed-out test up to this many more times (over
    /// `vmscript.toml`'s).
    pub retries: Option<u32>,
    /// Run only tests with one of these tags (`--tag`).
    pub tags: Vec<String>,
    /// Run no test with one of these tags (`--exclude-tag`).
    pub exclude_tags: Vec<String>,
    /// What an empty selection does.
    pub no_tests: NoTests,
    /// A test running longer is announced `SLOW` (`--slow-timeout`, else
    /// `vmscript.toml`'s, else 60 s; times the timeout multiplier).
    pub slow_timeout: Option<Duration>,
    /// Run only the tests that failed when they last ran (the suite's
    /// [`history`]).
    pub rerun_failed: bool,
    pub partition: Option<Partition>,
    pub format: Format,
    pub junit: Option<PathBuf>,
    /// `--report FILE.html`: the self-contained HTML report.
    pub report: Option<PathBuf>,
    /// `KEY=VALUE` pairs for `param()`.
    pub params: BTreeMap<String, String>,
    /// Draw the live progress line (when stderr is a terminal).
    pub progress: bool,
    /// `--debug-on-fail`: a failed or timed-out test is handed to this,
    /// machines running, before its cleanup; tests then run one at a
    /// time, without retries, slow announcements or a progress line.
    pub debugger: Option<Debugger>,
}

/// `--no-tests`: what happens when no test is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NoTests {
    /// Exit 0 quietly.
    Pass,
    /// Say so, exit 0.
    Warn,
    /// Say so, exit 4.
    #[default]
    Fail,
}

/// The exit status of a run that selected no test (with `--no-tests fail`).
pub const NO_TESTS_EXIT: i32 = 4;

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
    /// Tests selected but not run (after --fail-fast or a signal), in
    /// the order they would have run.
    pub never_run: Vec<discover::Test>,
    pub stopped: Option<StopReason>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Tests run at once.
    pub jobs: usize,
    pub partition: Option<Partition>,
    /// No test was selected and `--no-tests fail` makes that an error.
    pub none_selected: bool,
}

impl Summary {
    /// How many selected tests were not run.
    pub fn not_run(&self) -> usize {
        self.never_run.len()
    }

    /// The process exit status; see the module documentation.
    pub fn exit_code(&self) -> i32 {
        match self.stopped {
            Some(StopReason::Signal(s)) => 128 + s,
            _ if self.counts.failed > 0 => 1,
            _ if self.none_selected => NO_TESTS_EXIT,
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

/// `options` with what the suite's `vmscript.toml` sets and the command
/// line does not, and the configuration itself.
pub fn configure(options: &Options) -> Result<(Options, Config), SetupError> {
    let config = Config::find(&options.paths)?;
    let mut o = options.clone();
    if o.debugger.is_some() {
        // Only the first try of a test is debugged: no retries.
        o.retries = Some(0);
    }
    if o.jobs == 0 {
        o.jobs = config.run.jobs.map_or(0, usize::from);
    }
    if o.qemu.is_none() {
        o.qemu.clone_from(&config.run.qemu);
    }
    o.lib_dirs.extend(config.run.lib.iter().cloned());
    let env = match std::env::var("VMSCRIPT_TIMEOUT_MULTIPLIER") {
        Ok(v) if !v.is_empty() => Some(v.parse::<f64>().map_err(|_| {
            SetupError(format!(
                "$VMSCRIPT_TIMEOUT_MULTIPLIER={v:?} is not a number"
            ))
        })?),
        _ => None,
    };
    let m = o
        .timeout_multiplier
        .or(env)
        .or(config.run.timeout_multiplier)
        .unwrap_or(1.0);
    if !(m.is_finite() && m > 0.0) {
        return Err(SetupError(format!(
            "timeout multiplier {m} is not a number above 0"
        )));
    }
    o.timeout_multiplier = Some(m);
    let slow = o
        .slow_timeout
        .or(config.run.slow_timeout.map(Duration::from_secs_f64))
        .unwrap_or(config::DEFAULT_SLOW_TIMEOUT);
    o.slow_timeout = Some(slow.mul_f64(m));
    Ok((o, config))
}

/// The tests `options` selects, in order: each file compiled once, a file
/// of cases expanded into its cases, each given its [`Settings`], then
/// `--filter`, `--tag`, `--exclude-tag` and `--partition`.
pub fn select(
    options: &Options,
    config: &Config,
    history: &history::History,
) -> Result<Selection, SetupError> {
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
    let multiplier = options.timeout_multiplier.unwrap_or(1.0);
    for t in &mut tests {
        t.settings = config.settings(&t.name, options.timeout, options.retries, multiplier);
    }
    let has_tag = |t: &Test, tags: &[String]| t.settings.tags.iter().any(|x| tags.contains(x));
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|t| {
            options.filters.is_empty() || options.filters.iter().any(|f| t.name.contains(f))
        })
        .filter(|t| options.tags.is_empty() || has_tag(t, &options.tags))
        .filter(|t| !has_tag(t, &options.exclude_tags))
        .collect();
    let tests: Vec<Test> = if options.rerun_failed {
        let failed = history.failed();
        tests
            .into_iter()
            .filter(|t| failed.contains(&t.name.as_str()))
            .collect()
    } else {
        tests
    };
    let tests = match options.partition {
        Some(p) => p.select_by(tests, |name| history.duration(name)),
        None => tests,
    };
    Ok(Selection { tests, programs })
}

/// How many tests run at once: `-j`, else one per CPU; one with
/// `--no-capture`, whose unprefixed output would be unreadable interleaved
/// (cargo-nextest does the same).
pub fn jobs(options: &Options) -> usize {
    if !options.capture || options.debugger.is_some() {
        return 1;
    }
    match options.jobs {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// What to say when nothing is selected, and whether that is an error.
fn nothing_selected(options: &Options, note: impl FnOnce(&str)) -> bool {
    if options.no_tests == NoTests::Pass {
        return false;
    }
    let mut why = Vec::new();
    if !options.filters.is_empty() {
        why.push(format!("--filter {}", options.filters.join(", ")));
    }
    if !options.tags.is_empty() {
        why.push(format!("--tag {}", options.tags.join(", ")));
    }
    if !options.exclude_tags.is_empty() {
        why.push(format!("--exclude-tag {}", options.exclude_tags.join(", ")));
    }
    if let Some(p) = options.partition {
        why.push(format!("--partition {p}"));
    }
    if options.rerun_failed {
        why.push("--rerun-failed (the failures of the last run)".to_string());
    }
    let paths: Vec<String> = options
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let paths = if paths.is_empty() {
        ".".to_string()
    } else {
        paths.join(" ")
    };
    let mut text = format!("no tests selected in {paths}");
    if !why.is_empty() {
        text.push_str(&format!(" with {}", why.join(", ")));
    }
    let fail = options.no_tests == NoTests::Fail;
    text.push_str(if fail {
        " (exit status 4; --no-tests pass|warn to accept that)"
    } else {
        ""
    });
    note(&text);
    fail
}

/// `vmscript list`: the tests `run` would run with the same options, one
/// per line with their tags (human), or one JSON object per line. Returns
/// the exit status.
pub fn list(options: &Options, json: bool) -> Result<i32, SetupError> {
    let (options, config) = configure(options)?;
    let history = history::History::load(&config.root);
    let Selection { tests, .. } = select(&options, &config, &history)?;
    let mut out = String::new();
    for t in &tests {
        if json {
            let line = serde_json::json!({
                "name": t.name,
                "file": t.file_name(),
                "case": t.case,
                "path": t.path.display().to_string(),
                "tags": t.settings.tags,
                "weight": t.settings.weight,
                "timeout": t.settings.timeout.as_secs_f64(),
                "retries": t.settings.retries,
            });
            out.push_str(&format!("{line}\n"));
        } else if t.settings.tags.is_empty() {
            out.push_str(&format!("{}\n", t.name));
        } else {
            out.push_str(&format!("{} [{}]\n", t.name, t.settings.tags.join(", ")));
        }
    }
    print!("{out}");
    if tests.is_empty() && nothing_selected(&options, |t| eprintln!("vmscript: {t}")) {
        return Ok(NO_TESTS_EXIT);
    }
    Ok(0)
}

/// Runs the selected tests and reports them.
pub fn run(given: &Options) -> Result<Summary, SetupError> {
    let (options, config) = configure(given)?;
    let options = &options;
    crate::script::args::set_timeout_multiplier(options.timeout_multiplier.unwrap_or(1.0));
    let mut history = history::History::load(&config.root);
    let Selection { tests, programs } = select(options, &config, &history)?;
    let mut qemu = QemuBinary::resolve(options.qemu.clone());
    if let (None, Some(file)) = (&given.qemu, &config.path) {
        if options.qemu.is_some() {
            qemu.source = QemuSource::File(file.clone());
        }
    }
    if qemu.is_explicit() {
        qemu.locate().map_err(SetupError)?;
    }
    if let Some(j) = &options.junit {
        reporter::junit::check_writable(j)
            .map_err(|e| SetupError(format!("--junit {}: {e}", j.display())))?;
    }
    if let Some(r) = &options.report {
        reporter::junit::check_writable(r)
            .map_err(|e| SetupError(format!("--report {}: {e}", r.display())))?;
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
    let live = options.progress
        && options.capture
        && options.debugger.is_none()
        && reporter::progress::wanted();
    let mut reporter = reporter::Reporter::new(options.format, options.capture, live);
    let mut none_selected = false;
    if tests.is_empty() {
        none_selected = nothing_selected(options, |t| reporter.note(t));
    }
    if options.debugger.is_some() && options.jobs > 1 {
        reporter.note("--debug-on-fail runs one test at a time");
    } else if !options.capture && options.jobs > 1 {
        reporter.note("--no-capture runs one test at a time, so that output stays readable");
    }
    let jobs = jobs(options);
    let exec = executor::Executor::new(options, qemu, jobs, programs, artifacts, signals, channel);
    let (mut summary, results) = exec.run(tests, &mut reporter);
    summary.none_selected = none_selected;
    history.record(&results);
    if let Err(e) = history.save() {
        reporter.note(&format!(
            "could not record this run in {}: {e}",
            config.root.join(history::DIR).display()
        ));
    }
    if let Some(j) = &options.junit {
        reporter::junit::write(j, &summary, &results)
            .map_err(|e| SetupError(format!("writing {}: {e}", j.display())))?;
    }
    if let Some(r) = &options.report {
        reporter::html::write(r, &summary, &results)
            .map_err(|e| SetupError(format!("writing {}: {e}", r.display())))?;
    }
    if let Some(e) = reporter.output_error() {
        return Err(SetupError(format!(
            "writing the report to stdout: {e}; the report is incomplete"
        )));
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
        let none = Summary {
            none_selected: true,
            ..Summary::default()
        };
        assert_eq!(none.exit_code(), 4);
    }
}
