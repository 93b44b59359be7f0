//! A QEMU virtual machine: its process, QMP monitor, events and serial
//! console, as a plain Rust API modelled on QEMU's Python `QEMUMachine`.
//!
//! Knows nothing of Rhai. A [`Machine`] is configured (this file), then
//! [`Machine::launch`]ed (`launch.rs`: a plan, a spawn, a connect): QEMU
//! starts under a [`process::Process`] supervisor, the monitor is
//! negotiated over a socketpair (or a unix/TCP address), and the console,
//! when set, is drained by a [`console::Console`]. What exists only while
//! QEMU runs, and what a finished run leaves, are values of their own
//! (`lifecycle.rs`); [`Machine::shutdown`] always cleans up, and so does
//! `Drop`. QMP commands and events are `monitor.rs`'s, console waits and
//! qtest `guest_io.rs`'s.
//!
//! A [`KillHandle`] lets another thread (a watchdog, a signal handler)
//! kill QEMU without touching the `Machine`, which makes every wait on it
//! end at once; an [`InterruptHandle`] ends the waits in progress instead
//! and leaves QEMU running (Ctrl-C in the REPL).

pub mod agent;
mod args;
pub mod console;
mod error;
mod events;
mod guest_io;
pub mod keys;
mod launch;
mod lifecycle;
mod monitor;
pub mod process;
mod qtest;
mod snapshot;
pub mod tail;

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use agent::{Agent, RunOutput};
pub use console::{Console, ConsoleError};
pub use error::{Error, Result};
pub use events::{event_match, numbers_equal};
use lifecycle::State;
use process::Process;
pub use tail::last_lines;

use crate::qmp::{self, Address};
use crate::sync::lock;

/// How long a default wait lasts where `QEMUMachine` has no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Everything fixed when a machine is created (the API's `options` map).
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// Extra arguments after the base ones.
    pub args: Vec<String>,
    /// A command line prefix, e.g. `["valgrind"]`.
    pub wrapper: Vec<String>,
    /// Name for sockets and logs; `vmN` when `None`.
    pub name: Option<String>,
    /// Where the machine's own temp dir is made; the system's when `None`.
    pub base_temp_dir: Option<PathBuf>,
    /// QMP address to listen on; a socketpair when `None`.
    pub monitor_address: Option<Address>,
    /// Where socket files go; the machine's temp dir when `None`.
    pub sock_dir: Option<PathBuf>,
    /// Where `NAME.log` goes; the machine's temp dir when `None` (then it
    /// goes with the temp dir).
    pub log_dir: Option<PathBuf>,
    /// Drain the console in the background.
    pub drain_console: bool,
    /// An extra file to copy console output to.
    pub console_log: Option<PathBuf>,
    /// QMP connect and negotiate timeout.
    pub qmp_timer: Duration,
    /// Write every QMP message with a timestamp to `NAME.qmp.jsonl` in the log dir.
    pub qmp_transcript: bool,
    /// Also listen for a second QMP client on `NAME.qmp.sock` in the
    /// socket folder ([`Machine::second_qmp_path`]): for a person's
    /// `vmscript qmp` beside the script's own monitor.
    pub second_qmp: bool,
    /// What the transcript's timestamps count from: a test's start, so
    /// that every artifact of the test is on one clock; the launch when
    /// `None`.
    pub clock: Option<std::time::Instant>,
}

impl MachineOptions {
    /// Defaults for `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> MachineOptions {
        MachineOptions {
            binary: binary.into(),
            args: Vec::new(),
            wrapper: Vec::new(),
            name: None,
            base_temp_dir: None,
            monitor_address: None,
            sock_dir: None,
            log_dir: None,
            drain_console: true,
            console_log: None,
            qmp_timer: Duration::from_secs(30),
            qmp_transcript: false,
            second_qmp: false,
            clock: None,
        }
    }
}

/// How long `get_qmp_event(s)` waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventWait {
    /// Return what is queued.
    No,
    /// Wait until an event arrives (or QEMU exits).
    Forever,
    /// Wait up to this long.
    For(Duration),
}

/// One `-add-fd` to pass to QEMU.
#[derive(Debug, Clone)]
struct AddFd {
    fd: RawFd,
    fdset: i64,
    opaque: String,
    opts: String,
}

/// The console configuration (`set_console`).
#[derive(Debug, Clone, Default)]
struct ConsoleConfig {
    enabled: bool,
    device_type: Option<String>,
    index: u32,
}

/// Kills a machine's QEMU from any thread, without its `Machine`.
#[derive(Debug, Clone, Default)]
pub struct KillHandle {
    process: Arc<Mutex<Option<Arc<Process>>>>,
}

impl KillHandle {
    /// SIGKILLs QEMU if it runs; every wait on the machine then ends.
    pub fn kill(&self) {
        let p = lock(&self.process).clone();
        if let Some(p) = p {
            p.kill();
        }
    }

    /// The pid of the running QEMU.
    pub fn pid(&self) -> Option<i32> {
        let p = lock(&self.process);
        p.as_ref()
            .filter(|p| p.exit_code().is_none())
            .map(|p| p.pid())
    }

    fn set(&self, p: Option<Arc<Process>>) {
        *lock(&self.process) = p;
    }
}

/// Interrupts a machine's waits in progress (QMP replies and events, the
/// console, the guest agent) from any thread, without its `Machine`; QEMU
/// keeps running.
///
/// The waits fail with [`Error::Interrupted`]; waits that start later are
/// not affected, so a caller that must stop a whole sequence of waits keeps
/// interrupting until it is over.
#[derive(Debug, Clone, Default)]
pub struct InterruptHandle {
    targets: Arc<Mutex<Interrupters>>,
}

#[derive(Debug, Default)]
struct Interrupters {
    qmp: Option<qmp::Interrupter>,
    console: Option<console::Interrupter>,
    agent: Option<crate::sync::Interrupter>,
}

impl InterruptHandle {
    /// Ends every wait in progress on the machine with [`Error::Interrupted`].
    pub fn interrupt(&self) {
        let t = lock(&self.targets);
        if let Some(q) = &t.qmp {
            q.interrupt();
        }
        if let Some(c) = &t.console {
            c.interrupt();
        }
        if let Some(a) = &t.agent {
            a.interrupt();
        }
    }

    fn set(&self, targets: Interrupters) {
        *lock(&self.targets) = targets;
    }
}

/// A QEMU virtual machine.
pub struct Machine {
    opts: MachineOptions,
    name: String,
    machine_type: Option<String>,
    console: ConsoleConfig,
    /// Whether the guest agent's port is added (`set_guest_agent`).
    agent: bool,
    qmp_enabled: bool,
    monitor_null: bool,
    add_fds: Vec<AddFd>,
    qtest: bool,
    /// Start with `-incoming defer` (a restore from a saved state).
    incoming: bool,
    state: State,
    kill_handle: KillHandle,
    interrupt_handle: InterruptHandle,
    /// Sees every QMP message besides the transcript ([`Machine::observe_qmp`]).
    observer: Option<qmp::Observer>,
    /// Logs that could not be written (a full or read-only disk).
    artifact_errors: Vec<String>,
}

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

impl Machine {
    /// A machine, not yet launched.
    pub fn new(opts: MachineOptions) -> Result<Machine> {
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("vm{}", NEXT_NAME.fetch_add(1, Ordering::Relaxed)));
        if name.is_empty() || name.contains('/') || name.contains(',') {
            return Err(Error::Machine(format!(
                "invalid machine name {name:?}: it names files, so it must be non-empty without '/' or ','"
            )));
        }
        Ok(Machine {
            name,
            machine_type: None,
            console: ConsoleConfig::default(),
            agent: false,
            qmp_enabled: true,
            monitor_null: false,
            add_fds: Vec::new(),
            qtest: false,
            incoming: false,
            state: State::Configured,
            kill_handle: KillHandle::default(),
            interrupt_handle: InterruptHandle::default(),
            observer: None,
            artifact_errors: Vec::new(),
            opts,
        })
    }

    // ---- configuration -------------------------------------------------

    fn configurable(&self, what: &str) -> Result<()> {
        if self.running().is_some() {
            return Err(Error::Machine(format!(
                "{what}: the machine {} is already launched; configure it before launch()",
                self.name
            )));
        }
        Ok(())
    }

    /// Appends arguments to the QEMU command line.
    pub fn add_args<S: AsRef<str>>(&mut self, args: &[S]) -> Result<()> {
        self.configurable("add_args")?;
        self.opts
            .args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        Ok(())
    }

    /// Replaces the user arguments (tests/functional's `set_vm_arg()`
    /// edits them in place before launch).
    pub fn set_args(&mut self, args: Vec<String>) -> Result<()> {
        self.configurable("setting args")?;
        self.opts.args = args;
        Ok(())
    }

    /// Sets the `-machine` type.
    pub fn set_machine(&mut self, machine_type: &str) -> Result<()> {
        self.configurable("set_machine")?;
        self.machine_type = Some(machine_type.to_string());
        Ok(())
    }

    /// Enables a console on a socket: on the `console_index`-th serial port
    /// when `device_type` is `None`, else on a `-device device_type`.
    pub fn set_console(&mut self, device_type: Option<&str>, console_index: u32) -> Result<()> {
        self.configurable("set_console")?;
        if device_type.is_some() && console_index > 0 {
            return Err(Error::AddDevice(
                "set_console: a console index applies to serial ports only, not to a device type"
                    .into(),
            ));
        }
        self.console = ConsoleConfig {
            enabled: true,
            device_type: device_type.map(str::to_string),
            index: console_index,
        };
        Ok(())
    }

    /// Adds a virtio-serial port for the guest agent
    /// (`scripts/guest-agent.sh`) on a socket of ours: see
    /// [`Machine::guest_agent`].
    pub fn set_guest_agent(&mut self) -> Result<()> {
        self.configurable("set_guest_agent")?;
        self.agent = true;
        Ok(())
    }

    /// Whether `set_guest_agent` added the agent's port.
    pub fn has_guest_agent(&self) -> bool {
        self.agent
    }

    /// Turns the QMP monitor on or off.
    pub fn set_qmp_monitor(&mut self, enabled: bool) -> Result<()> {
        self.configurable("set_qmp_monitor")?;
        self.qmp_enabled = enabled;
        Ok(())
    }

    /// Adds `-monitor null`.
    pub fn add_monitor_null(&mut self) -> Result<()> {
        self.configurable("add_monitor_null")?;
        self.monitor_null = true;
        Ok(())
    }

    /// Passes `fd` to QEMU as `-add-fd fd=…,set=…,opaque=…`.
    pub fn add_fd(&mut self, fd: RawFd, fdset: i64, opaque: &str, opts: &str) -> Result<()> {
        self.configurable("add_fd")?;
        if !process::fd_is_open(fd) {
            return Err(Error::AddDevice(format!(
                "add_fd: {fd} is not an open file descriptor"
            )));
        }
        self.add_fds.push(AddFd {
            fd,
            fdset,
            opaque: opaque.to_string(),
            opts: opts.to_string(),
        });
        Ok(())
    }

    /// Makes this a qtest machine (`-qtest` on a socket of ours).
    pub fn enable_qtest(&mut self) -> Result<()> {
        self.configurable("enable_qtest")?;
        self.qtest = true;
        Ok(())
    }

    /// Whether the command line holds something a saved state cannot
    /// stand for: descriptors passed with `add_fd`, or qtest.
    pub fn has_outside_state(&self) -> bool {
        !self.add_fds.is_empty() || self.qtest
    }

    // ---- properties ----------------------------------------------------

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user arguments.
    pub fn args(&self) -> &[String] {
        &self.opts.args
    }

    /// The whole command line of the last launch.
    pub fn full_args(&self) -> &[String] {
        self.launched().map_or(&[], |l| &l.full_args)
    }

    /// The console `set_console` asked for, as its device type (`None`
    /// for a serial port) and serial port index; `None` without one.
    pub fn console_config(&self) -> Option<(Option<&str>, u32)> {
        let c = &self.console;
        c.enabled.then_some((c.device_type.as_deref(), c.index))
    }

    /// The machine's temp dir (exists while launched).
    pub fn temp_dir(&self) -> Option<&Path> {
        self.running()
            .and_then(|r| r.temp_dir.as_ref())
            .map(|t| t.path())
    }

    /// Where socket files go (set at launch).
    pub fn sock_dir(&self) -> &Path {
        self.launched().map_or(Path::new(""), |l| &l.sock_dir)
    }

    /// The socket of the second QMP monitor ([`MachineOptions::second_qmp`])
    /// while the machine runs.
    pub fn second_qmp_path(&self) -> Option<PathBuf> {
        self.running()?;
        self.second_qmp_path_in(self.sock_dir())
    }

    fn second_qmp_path_in(&self, sock_dir: &Path) -> Option<PathBuf> {
        (self.opts.second_qmp && self.qmp_enabled)
            .then(|| sock_dir.join(format!("{}.qmp.sock", self.name)))
    }

    /// Where logs go (set at launch).
    pub fn log_dir(&self) -> &Path {
        self.launched().map_or(Path::new(""), |l| &l.log_dir)
    }

    /// The QMP greeting of the last launch.
    pub fn qmp_greeting(&self) -> &Value {
        static NONE: Value = Value::Null;
        self.launched().map_or(&NONE, |l| &l.greeting)
    }

    /// The options the machine was made with.
    pub fn options(&self) -> &MachineOptions {
        &self.opts
    }

    /// A handle that kills QEMU from any thread.
    pub fn kill_handle(&self) -> KillHandle {
        self.kill_handle.clone()
    }

    /// A handle that interrupts the machine's waits from any thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.interrupt_handle.clone()
    }

    /// Calls `observer` with every QMP message sent and received from the
    /// next launch on, as the transcript sees them, and as they arrive: a
    /// thread reads the monitor while nothing else waits on it. It is
    /// called on whichever thread reads, so it must not block.
    pub fn observe_qmp(&mut self, observer: qmp::Observer) {
        self.observer = Some(observer);
    }

    /// The path of QEMU's output log.
    pub fn log_path(&self) -> PathBuf {
        self.log_file(self.log_dir(), "log")
    }

    /// The path of the console log.
    pub fn console_log_path(&self) -> PathBuf {
        self.log_file(self.log_dir(), "console.log")
    }

    /// The path of the console's lines with their times (JSON lines,
    /// `{"t": seconds, "line": text}`), beside the console log.
    pub fn console_timed_log_path(&self) -> PathBuf {
        self.log_file(self.log_dir(), "console.jsonl")
    }

    /// The machine's log file with extension `ext` in `log_dir`.
    fn log_file(&self, log_dir: &Path, ext: &str) -> PathBuf {
        log_dir.join(format!("{}.{ext}", self.name))
    }

    /// Logs that could not be written or were cut short (a full or
    /// read-only disk), one line each, over every launch so far.
    pub fn artifact_errors(&self) -> &[String] {
        &self.artifact_errors
    }

    /// The path of the QMP transcript.
    pub fn qmp_transcript_path(&self) -> PathBuf {
        self.log_file(self.log_dir(), "qmp.jsonl")
    }

    /// [`Error::NotRunning`] for `what`.
    fn not_running(&self, what: &str) -> Error {
        Error::NotRunning {
            what: what.to_string(),
            machine: self.name.clone(),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.running().is_some() {
            let _ = self.shutdown(false, Duration::from_secs(3));
        }
    }
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &self.name)
            .field("pid", &self.get_pid())
            .finish_non_exhaustive()
    }
}
