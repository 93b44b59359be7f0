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
//!
//! This file holds the [`Run`] and its lifecycle (making it, the machines
//! and descriptors it owns, [`Run::finish`]); the rest is split by
//! concern: `config` (what a run is given), `output` (`print`/`log`),
//! `steps` (the record of `step()` calls), `artifacts` (what a failed test
//! saves before its machines stop) and `report` (what is left at the end).

mod artifacts;
mod config;
mod output;
mod report;
mod steps;

pub use artifacts::{file_name_part, screenshot_path};
pub use config::{QemuBinary, QemuSource, RunConfig};
pub(crate) use report::with_crashes;
pub use report::{MachineLogs, RunReport};
pub use steps::{StepRecord, StepStatus, StepToken};

use output::Output;
use steps::Steps;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use rhai::NativeCallContext;

use crate::machine::{self, Machine, MachineOptions};

use super::cancel::{Cancel, Doing, Site};
use super::errors::{self, ScriptResult};
use super::temp::OwnedTempDir;

/// How long a machine left running at the end gets to quit by itself.
const FINAL_GRACE: Duration = Duration::from_secs(1);

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

/// [`Run::doing`] in the run of the call `ctx`, when its engine has one
/// (a bare engine's calls are not marked).
pub fn doing(ctx: &NativeCallContext, what: impl Into<String>) -> Option<Doing> {
    Run::of(ctx).ok().map(|r| r.doing(ctx, what))
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

    /// How long a wait "until the test's timeout" lasts: a second past
    /// it, so that the timeout itself ends the wait, and the report names
    /// the timeout and what was awaited, not also the wait's own end.
    pub fn until_timeout(&self) -> Duration {
        self.remaining().saturating_add(Duration::from_secs(1))
    }

    /// Moves the run's timeout to `left` from now (a debugger stops the
    /// clock: the time it took is given back afterwards).
    pub fn set_remaining(&self, left: Duration) {
        *lock(&self.deadline) = Instant::now() + left;
    }

    /// Records that the call `ctx` is doing `what` until the guard is
    /// dropped ([`Cancel::doing_at`]): SLOW lines name it, and a stop
    /// meanwhile is reported at the call.
    pub fn doing(&self, ctx: &NativeCallContext, what: impl Into<String>) -> Doing {
        let p = ctx.call_position();
        let site = p.line().map(|line| Site {
            source: ctx.call_source().unwrap_or_default().to_string(),
            line,
            column: p.position().unwrap_or(1),
        });
        self.cancel.doing_at(what, site)
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

    /// Whether this is the first time the run is asked about `key`: for
    /// what the log says once.
    pub fn first_time(&self, key: &str) -> bool {
        lock(&self.told).insert(key.to_string())
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

impl Drop for Run {
    fn drop(&mut self) {
        self.finish();
    }
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
