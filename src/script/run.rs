//! One run of one script: what it owns and the guarantee that it is all
//! released when the script ends, however it ends.
//!
//! A [`Run`] holds the script's temp dir (0700, removed at the end), its
//! artifacts dir (logs, kept or not by the runner), the default QEMU
//! binary, the `KEY=VALUE` params, the descriptors opened by `open_fd`, the
//! captured `print`/`log` output, and a registry of every machine the
//! script made. [`Run::finish`] kills what `run_host` left running,
//! shuts down each machine still running
//! (a short graceful attempt, then SIGKILL; at once when the run was
//! cancelled), closes the descriptors and removes the temp dir. The
//! [`Cancel`] token lets the watchdog and the signal handler stop it.
//! The run also keeps the test's name (`test_name()`) and the record of
//! its `step(name, fn)` calls ([`StepRecord`]), which end up in the
//! [`RunReport`].

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use rhai::NativeCallContext;

use crate::machine::{self, Machine, MachineOptions};

use super::cancel::Cancel;
use super::errors::{self, Failure, ScriptResult};
use super::temp::OwnedTempDir;

/// How long a machine left running at the end gets to quit by itself.
const FINAL_GRACE: Duration = Duration::from_secs(1);
/// How many lines of captured output are kept for the report.
const CAPTURE_LINES: usize = 2000;

/// Where the default QEMU binary came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuSource {
    /// `--qemu BINARY`.
    Flag,
    /// `$VMSCRIPT_QEMU`.
    Env,
    /// `qemu` in `[run]` of this `vmscript.toml`.
    File(PathBuf),
    /// `qemu-system-<host arch>` in `$PATH`.
    Default,
}

/// The QEMU binary `machine()` uses when given none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    pub path: PathBuf,
    pub source: QemuSource,
}

impl QemuBinary {
    /// `flag` (from `--qemu`), else `$VMSCRIPT_QEMU`, else
    /// `qemu-system-<host arch>`.
    pub fn resolve(flag: Option<PathBuf>) -> QemuBinary {
        if let Some(path) = flag {
            return QemuBinary {
                path,
                source: QemuSource::Flag,
            };
        }
        match std::env::var_os("VMSCRIPT_QEMU").filter(|v| !v.is_empty()) {
            Some(v) => QemuBinary {
                path: v.into(),
                source: QemuSource::Env,
            },
            None => QemuBinary {
                path: format!("qemu-system-{}", std::env::consts::ARCH).into(),
                source: QemuSource::Default,
            },
        }
    }

    /// Whether the binary was chosen by the user (`--qemu` or the
    /// environment) rather than defaulted.
    pub fn is_explicit(&self) -> bool {
        self.source != QemuSource::Default
    }

    /// The binary's full path, or one line saying what was tried and how
    /// to choose another.
    pub fn locate(&self) -> Result<PathBuf, String> {
        let shown = self.path.display();
        let how = "pass --qemu BINARY or set VMSCRIPT_QEMU";
        let from = match &self.source {
            QemuSource::Flag => "given with --qemu".to_string(),
            QemuSource::Env => "from $VMSCRIPT_QEMU".to_string(),
            QemuSource::File(f) => format!("set in {}", f.display()),
            QemuSource::Default => "the default for this host".to_string(),
        };
        if self.path.components().count() > 1 || self.path.is_absolute() {
            use std::os::unix::fs::PermissionsExt;
            return match self.path.metadata() {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                    Ok(self.path.clone())
                }
                Ok(_) => Err(format!(
                    "QEMU binary {shown} ({from}) is not an executable file; {how}"
                )),
                Err(_) => Err(format!(
                    "QEMU binary {shown} ({from}) does not exist; {how}"
                )),
            };
        }
        machine::process::which(&self.path.to_string_lossy())
            .ok_or_else(|| format!("QEMU binary {shown} ({from}) not found in $PATH; {how}"))
    }
}

/// What a run is given.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The script file.
    pub script: PathBuf,
    /// The folder for logs; must exist.
    pub artifacts: PathBuf,
    /// How long the script may run.
    pub timeout: Duration,
    /// The default QEMU binary.
    pub qemu: QemuBinary,
    /// `KEY=VALUE` pairs for `param()`.
    pub params: BTreeMap<String, String>,
    /// Keep `print`/`log` output for the report (else: to stdout).
    pub capture: bool,
    /// Extra module folders (`--lib`).
    pub lib_dirs: Vec<PathBuf>,
    /// `--debug-on-fail`: what a failed test is handed to, machines
    /// running, before its cleanup ([`super::debug`]).
    pub debugger: Option<super::debug::Debugger>,
}

/// A machine's logs, for the failure report.
#[derive(Debug, Clone)]
pub struct MachineLogs {
    pub name: String,
    pub qemu_log: PathBuf,
    pub console_log: Option<PathBuf>,
}

/// What is left of a run once it has finished.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Every launched machine's logs.
    pub machines: Vec<MachineLogs>,
    /// The captured `print`/`log` lines (the last ones).
    pub output: Vec<String>,
    /// Cleanup problems (a machine that would not die, a temp dir that
    /// would not go).
    pub problems: Vec<String>,
    /// Machines the cleanup found crashed (killed by a signal vmscript did
    /// not send), one line each naming the machine and the signal.
    pub crashes: Vec<String>,
    /// Artifacts that could not be written or were cut short (a full or
    /// read-only disk), one line each naming the file and the error.
    pub lost: Vec<String>,
    /// Every `step()` the script took, in the order they started.
    pub steps: Vec<StepRecord>,
}

/// How a `step()` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Passed,
    /// Its closure ended with an error (a timeout included).
    Failed,
    /// Its closure called `skip()`.
    Skipped,
}

impl StepStatus {
    /// `passed`, `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One `step(name, fn)`: when it started, how long it took, how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The step's name; a step inside another is `outer > inner`.
    pub name: String,
    /// Since the run started.
    pub offset: Duration,
    /// Wall-clock start.
    pub started_at: SystemTime,
    pub duration: Duration,
    pub status: StepStatus,
    /// `KIND: message` of the error that ended a failed step.
    pub error: Option<String>,
}

/// The steps of a run: those taken, those open now, and which failed last.
#[derive(Debug, Default)]
struct Steps {
    taken: Vec<StepRecord>,
    /// Indexes into `taken` of the steps still running, outermost first.
    open: Vec<usize>,
    /// The innermost step that failed with the latest error: its name and
    /// the error's kind and message.
    failed: Option<(String, String, String)>,
}

/// A step that has started; given back to [`Run::step_end`].
#[derive(Debug)]
pub struct StepToken(usize);

/// `print` and `log` output: captured for the report or sent to stdout,
/// and always written to `script.log` in the artifacts.
struct Output {
    capture: AtomicBool,
    start: Instant,
    lines: Mutex<VecDeque<String>>,
    file: Mutex<Option<File>>,
    /// Why `script.log` is incomplete: the first error, after which it
    /// is closed (so it never goes on after a gap).
    error: Mutex<Option<(&'static str, String)>>,
}

impl Output {
    fn line(&self, line: String) {
        let mut file = lock(&self.file);
        if let Some(f) = file.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                *file = None;
                lock(&self.error).get_or_insert(("writing", e.to_string()));
            }
        }
        drop(file);
        if self.capture.load(Ordering::Relaxed) {
            let mut lines = lock(&self.lines);
            for l in line.lines() {
                if lines.len() == CAPTURE_LINES {
                    lines.pop_front();
                }
                lines.push_back(l.to_string());
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// One script run; see the module documentation.
pub struct Run {
    config: RunConfig,
    temp: Mutex<Option<OwnedTempDir>>,
    temp_path: PathBuf,
    cancel: Cancel,
    deadline: Mutex<Instant>,
    machines: Mutex<Vec<SharedMachine>>,
    next_vm: AtomicUsize,
    /// How many machines were made under each name, so that a second
    /// machine of the same name gets log files of its own.
    names: Mutex<BTreeMap<String, usize>>,
    fds: Mutex<BTreeMap<i32, OwnedFd>>,
    output: Output,
    /// Gives each new machine a QMP observer ([`Run::observe_machines`]).
    observers: Mutex<Option<ObserverFactory>>,
    /// What `test_name()` returns.
    test_name: Mutex<String>,
    steps: Mutex<Steps>,
    /// A debugger has had the run ([`super::debug::open`]).
    pub(crate) debugged: AtomicBool,
    /// What `first_time` was asked about.
    told: Mutex<std::collections::BTreeSet<String>>,
    /// Guest files to copy into the artifacts when the test fails
    /// ([`Run::collect_guest_files`]).
    collect: Mutex<Vec<(SharedMachine, Vec<String>)>>,
}

/// Makes the QMP observer of the machine with the given name.
type ObserverFactory = Box<dyn Fn(&str) -> crate::qmp::Observer + Send>;

/// A machine shared by the script values that name it and the run's
/// registry; scripts may use it from several threads (`parallel`).
pub type SharedMachine = Arc<Mutex<Machine>>;

/// Locks a mutex, also after a panic elsewhere.
pub use crate::sync::lock;

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("script", &self.config.script)
            .field("temp_dir", &self.temp_path)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// The run a script call belongs to. [`super::engine`] puts the run in
    /// the engine's tag, so a binding takes it from the call instead of
    /// capturing it; an engine without one (the bare API engine of
    /// [`super::api_engine`]) has no run to act on.
    pub fn of(ctx: &NativeCallContext) -> ScriptResult<Arc<Run>> {
        ctx.tag()
            .and_then(|t| t.read_lock::<Arc<Run>>())
            .map(|r| Arc::clone(&r))
            .ok_or_else(|| errors::host("this engine runs no script: it has no run to act on"))
    }

    /// Makes the run's temp dir and opens its log.
    pub fn new(config: RunConfig, cancel: Cancel) -> std::io::Result<Run> {
        let temp = OwnedTempDir::new("vmscript-run-")?;
        let temp_path = temp.path().to_path_buf();
        cancel.register_temp_dir(temp_path.clone());
        let (file, error) = match File::create(config.artifacts.join("script.log")) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(("creating", e.to_string()))),
        };
        let now = Instant::now();
        let test_name = config.script.display().to_string();
        Ok(Run {
            output: Output {
                capture: AtomicBool::new(config.capture),
                start: now,
                lines: Default::default(),
                file: Mutex::new(file),
                error: Mutex::new(error),
            },
            deadline: Mutex::new(now + config.timeout),
            config,
            temp: Mutex::new(Some(temp)),
            temp_path,
            cancel,
            machines: Default::default(),
            next_vm: AtomicUsize::new(0),
            names: Default::default(),
            fds: Default::default(),
            observers: Default::default(),
            test_name: Mutex::new(test_name),
            told: Mutex::new(Default::default()),
            collect: Mutex::new(Vec::new()),
            steps: Default::default(),
            debugged: AtomicBool::new(false),
        })
    }

    /// The running test's name (`test_name()`): the script's path, or
    /// `FILE::test_case` for a case.
    pub fn test_name(&self) -> String {
        lock(&self.test_name).clone()
    }

    /// Names the running test.
    pub fn set_test_name(&self, name: String) {
        *lock(&self.test_name) = name;
    }

    /// Records that step `name` starts now.
    pub fn step_begin(&self, name: &str) -> StepToken {
        let mut steps = lock(&self.steps);
        let full = match steps.open.last() {
            Some(&outer) => format!("{} > {name}", steps.taken[outer].name),
            None => name.to_string(),
        };
        let index = steps.taken.len();
        steps.taken.push(StepRecord {
            name: full,
            offset: self.output.start.elapsed(),
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            status: StepStatus::Passed,
            error: None,
        });
        steps.open.push(index);
        StepToken(index)
    }

    /// Records how the step of `token` ended: `error` is the failure its
    /// closure ended with, if any.
    pub fn step_end(&self, token: StepToken, error: Option<&Failure>) {
        let mut steps = lock(&self.steps);
        steps.open.retain(|&i| i != token.0);
        let start = self.output.start + steps.taken[token.0].offset;
        let mut failed = None;
        let step = &mut steps.taken[token.0];
        step.duration = start.elapsed();
        if let Some(f) = error {
            if f.kind == errors::SKIPPED {
                step.status = StepStatus::Skipped;
            } else {
                step.status = StepStatus::Failed;
                step.error = Some(format!("{}: {}", f.kind, f.message));
                failed = Some((step.name.clone(), f.kind.clone(), f.message.clone()));
            }
        }
        if let Some((name, kind, message)) = failed {
            // An outer step failing with the error an inner one failed
            // with keeps the inner one: that is where it happened.
            let same = steps
                .failed
                .as_ref()
                .is_some_and(|(_, k, m)| *k == kind && *m == message);
            if !same {
                steps.failed = Some((name, kind, message));
            }
        }
    }

    /// The step `f` happened in: the innermost step that failed with the
    /// same error, when one did.
    pub fn failed_step(&self, f: &Failure) -> Option<String> {
        let steps = lock(&self.steps);
        let (name, kind, message) = steps.failed.as_ref()?;
        (*kind == f.kind && *message == f.message).then(|| name.clone())
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The run's cancellation token.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// The script's own temp dir.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_path
    }

    /// Where logs go.
    pub fn artifacts(&self) -> &Path {
        &self.config.artifacts
    }

    /// A `KEY=VALUE` param.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.config.params.get(key).map(String::as_str)
    }

    /// The time left before the run's timeout (the default for waits that
    /// `QEMUMachine` leaves unbounded).
    pub fn remaining(&self) -> Duration {
        lock(&self.deadline).saturating_duration_since(Instant::now())
    }

    /// Moves the run's timeout to `left` from now (a debugger stops the
    /// clock: the time it took is given back afterwards).
    pub fn set_remaining(&self, left: Duration) {
        *lock(&self.deadline) = Instant::now() + left;
    }

    /// Captures `print`/`log` output for the report (`true`) or sends it to
    /// stdout; returns the setting it replaces.
    pub fn set_capture(&self, capture: bool) -> bool {
        self.output.capture.swap(capture, Ordering::Relaxed)
    }

    /// Fails when the run was cancelled.
    pub fn check_cancelled(&self) -> ScriptResult<()> {
        match self.cancel.reason() {
            Some(r) => Err(errors::terminated(r.kind(), r.message())),
            None => Ok(()),
        }
    }

    /// Sleeps, waking early (with the cancellation error) when cancelled.
    pub fn sleep(&self, d: Duration) -> ScriptResult<()> {
        self.cancel
            .sleep(d)
            .map_err(|r| errors::terminated(r.kind(), r.message()))
    }

    /// `print` output.
    pub fn print(&self, text: &str) {
        self.output.line(text.to_string());
    }

    /// `log` output: timestamped with the time since the run started.
    pub fn log(&self, text: &str) {
        let t = self.output.start.elapsed().as_secs_f64();
        self.output.line(format!("[{t:9.3}s] {text}"));
    }

    /// Machine options with this run's defaults: the default binary (or
    /// `binary`), the name `vmN`, the temp dir, the artifacts dir as the
    /// log dir, and a QMP transcript.
    pub fn machine_options(&self, binary: Option<&str>) -> ScriptResult<MachineOptions> {
        let binary = match binary {
            Some(b) => PathBuf::from(b),
            None => self.config.qemu.locate().map_err(errors::misuse)?,
        };
        let n = self.next_vm.fetch_add(1, Ordering::Relaxed);
        let mut opts = MachineOptions::new(binary);
        opts.name = Some(format!("vm{n}"));
        opts.base_temp_dir = Some(self.temp_path.clone());
        opts.log_dir = Some(self.config.artifacts.clone());
        opts.qmp_transcript = true;
        // `--debug-on-fail`: a monitor for `vmscript qmp` while debugging.
        opts.second_qmp = self.config.debugger.is_some();
        opts.clock = Some(self.output.start);
        opts.qmp_timer = super::args::scaled(opts.qmp_timer);
        Ok(opts)
    }

    /// Gives every machine made from now on a QMP observer, made by
    /// `factory` from the machine's name (the REPL shows events with it).
    pub fn observe_machines(
        &self,
        factory: impl Fn(&str) -> crate::qmp::Observer + Send + 'static,
    ) {
        *lock(&self.observers) = Some(Box::new(factory));
    }

    /// Every machine of the run, oldest first.
    pub fn machines(&self) -> Vec<SharedMachine> {
        lock(&self.machines).clone()
    }

    /// Makes a machine and registers it for cleanup and cancellation.
    pub fn add_machine(&self, mut opts: MachineOptions) -> ScriptResult<SharedMachine> {
        self.separate_logs(&mut opts)?;
        let mut m = Machine::new(opts).map_err(errors::machine_error)?;
        if let Some(factory) = &*lock(&self.observers) {
            m.observe_qmp(factory(m.name()));
        }
        self.cancel.register(m.kill_handle());
        self.cancel.register_interrupt(m.interrupt_handle());
        let m = Arc::new(Mutex::new(m));
        lock(&self.machines).push(m.clone());
        Ok(m)
    }

    /// A machine's logs and QMP transcript are named after it: the second
    /// machine named `NAME` in a run keeps them in `NAME-2/` below the log
    /// folder, and so on, instead of replacing the first one's.
    fn separate_logs(&self, opts: &mut MachineOptions) -> ScriptResult<()> {
        let (Some(name), Some(log_dir)) = (opts.name.as_ref(), opts.log_dir.as_ref()) else {
            return Ok(());
        };
        let mut names = lock(&self.names);
        let count = names.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            let dir = log_dir.join(format!("{name}-{count}"));
            std::fs::create_dir_all(&dir).map_err(|e| {
                errors::host(format!(
                    "machine {name}: creating its log folder {}: {e}",
                    dir.display()
                ))
            })?;
            opts.log_dir = Some(dir);
        }
        Ok(())
    }

    /// Opens `path` (`"r"`, `"w"` or `"rw"`) and keeps the descriptor until
    /// `close_fd` or the end of the run.
    pub fn open_fd(&self, path: &str, mode: &str) -> ScriptResult<i32> {
        let mut o = std::fs::OpenOptions::new();
        match mode {
            "r" => o.read(true),
            "w" => o.write(true).create(true).truncate(true),
            "rw" => o.read(true).write(true).create(true),
            m => {
                return Err(errors::host(format!(
                    "open_fd: mode {m:?} is not one of \"r\", \"w\", \"rw\""
                )))
            }
        };
        let f = o
            .open(path)
            .map_err(|e| errors::host(format!("open_fd: opening {path}: {e}")))?;
        let fd = OwnedFd::from(f);
        let raw = fd.as_raw_fd();
        lock(&self.fds).insert(raw, fd);
        Ok(raw)
    }

    /// Closes a descriptor from `open_fd`.
    pub fn close_fd(&self, fd: i32) -> ScriptResult<()> {
        match lock(&self.fds).remove(&fd) {
            Some(_) => Ok(()),
            None => Err(errors::host(format!(
                "close_fd: {fd} is not a descriptor from open_fd (or it is closed already)"
            ))),
        }
    }

    /// Whether `fd` is open in this process.
    pub fn fd_is_open(fd: i32) -> bool {
        crate::machine::process::fd_is_open(fd)
    }

    /// Saves a screenshot of every running machine that has a display, as
    /// `NAME-failure.png` in its artifacts, when a test has failed and
    /// before its machines are stopped. A machine without a display
    /// answers with an error, which is no problem.
    pub fn screenshot_machines(&self) {
        for m in lock(&self.machines).iter() {
            let Ok(mut m) = m.try_lock() else { continue };
            if m.is_running() && !m.log_dir().as_os_str().is_empty() {
                let path = screenshot_path(&m, "failure");
                let _ = m.screendump(&path);
            }
        }
    }

    /// Whether this is the first time the run is asked about `key`: for
    /// what the log says once.
    pub fn first_time(&self, key: &str) -> bool {
        lock(&self.told).insert(key.to_string())
    }

    /// Copies `paths` from `machine`'s guest into the artifacts should the
    /// test fail ([`Run::collect_guest_files`]).
    pub fn collect_on_failure(&self, machine: SharedMachine, paths: Vec<String>) {
        lock(&self.collect).push((machine, paths));
    }

    /// Copies the guest files `collect_on_failure` named into
    /// `NAME-files/` in each machine's artifacts, when a test has failed
    /// and before its machines are stopped; what cannot be copied (no
    /// agent, no such file) is named in `NAME-files/ERRORS`.
    pub fn collect_guest_files(&self) {
        let wanted = std::mem::take(&mut *lock(&self.collect));
        for (m, paths) in wanted {
            let Ok(m) = m.try_lock() else { continue };
            if !m.is_running() || m.log_dir().as_os_str().is_empty() {
                continue;
            }
            let dir = m
                .log_dir()
                .join(format!("{}-files", file_name_part(m.name())));
            let agent = m.guest_agent().ok().flatten();
            drop(m);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let mut errors = Vec::new();
            for p in paths {
                let to = dir.join(file_name_part(p.trim_start_matches('/')));
                let r = match &agent {
                    Some(a) => a.available().and_then(|ok| {
                        if ok {
                            a.copy_from(&p, &to)
                        } else {
                            Err(machine::Error::host(&p, "the guest agent does not answer"))
                        }
                    }),
                    None => Err(machine::Error::host(&p, "the machine has no guest agent")),
                };
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            if !errors.is_empty() {
                let _ = std::fs::write(dir.join("ERRORS"), errors.join("\n") + "\n");
            }
        }
    }

    /// Releases everything: every machine still running is shut down
    /// (killed at once if the run was cancelled), descriptors are closed,
    /// the temp dir is removed. Idempotent.
    pub fn finish(&self) -> RunReport {
        let mut report = RunReport::default();
        self.cancel.host_processes().kill_all(true);
        let hard = self.cancel.is_cancelled();
        let machines = std::mem::take(&mut *lock(&self.machines));
        for m in machines {
            let mut m = match m.try_lock() {
                Ok(m) => m,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    report
                        .problems
                        .push("a machine was still in use at the end of the run".into());
                    continue;
                }
            };
            if hard {
                m.kill();
            } else if let Err(e) = m.shutdown(false, FINAL_GRACE) {
                if let Some(crash) = m.crash() {
                    report.crashes.push(format!("{}: {crash}", m.name()));
                } else if !matches!(e, machine::Error::AbnormalShutdown { .. }) {
                    report
                        .problems
                        .push(format!("shutting down {}: {e}", m.name()));
                }
            }
            report.lost.extend(m.artifact_errors().iter().cloned());
            if !m.log_dir().as_os_str().is_empty() {
                let console = m.console_log_path();
                report.machines.push(MachineLogs {
                    name: m.name().to_string(),
                    qemu_log: m.log_path(),
                    console_log: console.exists().then_some(console),
                });
            }
        }
        lock(&self.fds).clear();
        if let Some(t) = lock(&self.temp).take() {
            let path = t.path().display().to_string();
            match t.close() {
                // Gone already: removed by [`Cancel::abandon`].
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.problems.push(format!("removing {path}: {e}")),
                Ok(()) => {}
            }
        }
        if let Some(mut f) = lock(&self.output.file).take() {
            if let Err(e) = f.flush() {
                lock(&self.output.error).get_or_insert(("writing", e.to_string()));
            }
        }
        if let Some((what, e)) = lock(&self.output.error).take() {
            let path = self.config.artifacts.join("script.log");
            report.lost.push(format!("{what} {}: {e}", path.display()));
        }
        report.output = lock(&self.output.lines).drain(..).collect();
        let mut steps = lock(&self.steps);
        for i in std::mem::take(&mut steps.open) {
            // Still open: the run was stopped inside it.
            let step = &mut steps.taken[i];
            step.duration = (self.output.start + step.offset).elapsed();
            step.status = StepStatus::Failed;
        }
        report.steps = steps.taken.clone();
        report
    }
}

/// A test during which QEMU crashed does not pass: a pass becomes an
/// `AbnormalShutdown` naming the machine and the signal; a failure gets it
/// as context.
pub(crate) fn with_crashes(
    status: super::Status,
    report: &RunReport,
    shown: &str,
) -> super::Status {
    if report.crashes.is_empty() {
        return status;
    }
    let crashes = report.crashes.join("; ");
    match status {
        super::Status::Failed(mut f) => {
            f.context.push(format!("crashed: {crashes}"));
            super::Status::Failed(f)
        }
        _ => super::Status::Failed(errors::Failure::plain(shown, "AbnormalShutdown", crashes)),
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The path of a screenshot named `name` of machine `m`: in its artifacts
/// folder, `NAME-name.png`, with what cannot be in a file name replaced.
pub fn screenshot_path(m: &Machine, name: &str) -> PathBuf {
    m.log_dir()
        .join(format!("{}-{}.png", m.name(), file_name_part(name)))
}

/// `name` with every character but ASCII letters, digits, `-`, `_` and
/// `.` replaced by `_`: a part of a file name that is safe anywhere.
pub fn file_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> RunConfig {
        RunConfig {
            script: dir.join("t.rhai"),
            artifacts: dir.to_path_buf(),
            timeout: Duration::from_secs(5),
            qemu: QemuBinary {
                path: "/bin/true".into(),
                source: QemuSource::Flag,
            },
            params: BTreeMap::new(),
            capture: true,
            lib_dirs: Vec::new(),
            debugger: None,
        }
    }

    #[test]
    fn bindings_take_the_run_from_the_engine_and_a_bare_engine_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let run = Arc::new(Run::new(config(dir.path()), Cancel::new()).unwrap());
        let name = super::super::engine(&run).eval::<String>("test_name()");
        assert_eq!(name.unwrap(), run.test_name());
        let err = super::super::api_engine()
            .eval::<String>("test_name()")
            .unwrap_err();
        let rhai::EvalAltResult::ErrorRuntime(v, _) = *err else {
            panic!("{err}");
        };
        let (kind, message, _) = errors::thrown_kind_and_message(&v);
        assert_eq!(kind, "HostError");
        assert!(message.contains("no run"), "{message}");
        run.finish();
    }

    #[test]
    fn missing_binaries_are_one_line_naming_the_path_and_the_fix() {
        let q = QemuBinary {
            path: "/nonexistent/qemu-system-x86_64".into(),
            source: QemuSource::Flag,
        };
        let e = q.locate().unwrap_err();
        assert!(!e.contains('\n'));
        assert!(e.contains("/nonexistent/qemu-system-x86_64"), "{e}");
        assert!(e.contains("--qemu"), "{e}");
        assert!(e.contains("VMSCRIPT_QEMU"), "{e}");
        let q = QemuBinary {
            path: "no-such-qemu-binary".into(),
            source: QemuSource::Default,
        };
        assert!(q.locate().unwrap_err().contains("$PATH"));
    }

    #[test]
    fn the_temp_dir_is_private_and_removed_at_the_end() {
        use std::os::unix::fs::PermissionsExt;
        let art = tempfile::tempdir().unwrap();
        let run = Run::new(config(art.path()), Cancel::new()).unwrap();
        let temp = run.temp_dir().to_path_buf();
        let mode = temp.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(temp.join("x"), "y").unwrap();
        run.finish();
        assert!(!temp.exists());
    }

    #[test]
    fn fds_are_closed_at_the_end() {
        let art = tempfile::tempdir().unwrap();
        let run = Run::new(config(art.path()), Cancel::new()).unwrap();
        let path = run.temp_dir().join("f");
        let fd = run.open_fd(path.to_str().unwrap(), "w").unwrap();
        assert!(Run::fd_is_open(fd));
        // By what it names: tests in other threads may reuse the number.
        let names = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        assert_eq!(names(fd), Some(path.clone()));
        run.finish();
        assert_ne!(names(fd), Some(path));
    }

    #[test]
    fn machines_are_named_per_run() {
        let art = tempfile::tempdir().unwrap();
        let run = Run::new(config(art.path()), Cancel::new()).unwrap();
        let a = run.machine_options(None).unwrap();
        let b = run.machine_options(Some("/bin/false")).unwrap();
        assert_eq!(a.name.as_deref(), Some("vm0"));
        assert_eq!(b.name.as_deref(), Some("vm1"));
        assert_eq!(a.log_dir.as_deref(), Some(art.path()));
        assert!(a.qmp_transcript);
        // One clock: the run's, which its log and steps count from too.
        assert_eq!(a.clock, Some(run.output.start));
        assert_eq!(b.clock, Some(run.output.start));
    }

    #[test]
    fn log_lines_are_timestamped_and_captured() {
        let art = tempfile::tempdir().unwrap();
        let run = Run::new(config(art.path()), Cancel::new()).unwrap();
        run.print("plain");
        run.log("hello");
        let r = run.finish();
        assert_eq!(r.output[0], "plain");
        assert!(r.output[1].starts_with('[') && r.output[1].ends_with("s] hello"));
        let log = std::fs::read_to_string(art.path().join("script.log")).unwrap();
        assert!(log.contains("hello"));
    }
}
