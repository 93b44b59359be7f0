//! A QEMU virtual machine: its process, QMP monitor, events and serial
//! console, as a plain Rust API modelled on QEMU's Python `QEMUMachine`.
//!
//! Knows nothing of Rhai. A [`Machine`] is configured, then
//! [`Machine::launch`]ed: QEMU starts under a [`process::Process`]
//! supervisor, the monitor is negotiated over a socketpair (or a unix/TCP
//! address), and the console, when set, is drained by a
//! [`console::Console`]. [`Machine::shutdown`] always cleans up; so does
//! `Drop`. A [`KillHandle`] lets another thread (a watchdog, a signal
//! handler) kill QEMU without touching the `Machine`, which makes every
//! wait on it end at once; an [`InterruptHandle`] ends the waits in
//! progress instead and leaves QEMU running (Ctrl-C in the REPL).

pub mod console;
mod error;
mod events;
pub mod process;
mod qtest;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use console::{Console, ConsoleError};
pub use error::{tail, Error, Result};
pub use events::event_match;
use process::Process;

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
/// console) from any thread, without its `Machine`; QEMU keeps running.
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
    }

    fn set(&self, targets: Interrupters) {
        *lock(&self.targets) = targets;
    }
}

/// What exists only while QEMU runs.
struct Running {
    process: Arc<Process>,
    qmp: Option<qmp::Client>,
    console: Option<Console>,
    qtest: Option<qtest::Qtest>,
}

/// A QEMU virtual machine.
pub struct Machine {
    opts: MachineOptions,
    name: String,
    machine_type: Option<String>,
    console: ConsoleConfig,
    qmp_enabled: bool,
    monitor_null: bool,
    add_fds: Vec<AddFd>,
    qtest: bool,
    full_args: Vec<String>,
    temp_dir: Option<tempfile::TempDir>,
    sock_dir: PathBuf,
    log_dir: PathBuf,
    running: Option<Running>,
    kill_handle: KillHandle,
    interrupt_handle: InterruptHandle,
    /// Sees every QMP message besides the transcript ([`Machine::observe_qmp`]).
    observer: Option<qmp::Observer>,
    greeting: Value,
    quit_issued: bool,
    exitcode: Option<i32>,
    /// How QEMU crashed, when the last shutdown found it killed by a
    /// signal nobody here sent.
    crash: Option<String>,
    log: Option<String>,
    /// Events left queued when the monitor closed.
    leftover_events: Vec<Value>,
    transcript: Option<Arc<Mutex<Transcript>>>,
    /// Logs that could not be written (a full or read-only disk).
    artifact_errors: Vec<String>,
}

/// The QMP transcript file and the first error writing it, after which
/// it stops (so it never ends in half a line written later).
struct Transcript {
    out: std::io::BufWriter<File>,
    error: Option<String>,
}

impl Transcript {
    fn write(&mut self, parts: &[&[u8]]) {
        use std::io::Write;
        if self.error.is_some() {
            return;
        }
        if let Err(e) = parts.iter().try_for_each(|p| self.out.write_all(p)) {
            self.error = Some(e.to_string());
        }
    }

    fn flush(&mut self) -> Option<String> {
        use std::io::Write;
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e.to_string());
            }
        }
        self.error.clone()
    }
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
            qmp_enabled: true,
            monitor_null: false,
            add_fds: Vec::new(),
            qtest: false,
            full_args: Vec::new(),
            temp_dir: None,
            sock_dir: PathBuf::new(),
            log_dir: PathBuf::new(),
            running: None,
            kill_handle: KillHandle::default(),
            interrupt_handle: InterruptHandle::default(),
            observer: None,
            greeting: Value::Null,
            quit_issued: false,
            exitcode: None,
            crash: None,
            log: None,
            leftover_events: Vec::new(),
            transcript: None,
            artifact_errors: Vec::new(),
            opts,
        })
    }

    // ---- configuration -------------------------------------------------

    fn configurable(&self, what: &str) -> Result<()> {
        if self.running.is_some() {
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
        &self.full_args
    }

    /// The console `set_console` asked for, as its device type (`None`
    /// for a serial port) and serial port index; `None` without one.
    pub fn console_config(&self) -> Option<(Option<&str>, u32)> {
        let c = &self.console;
        c.enabled.then_some((c.device_type.as_deref(), c.index))
    }

    /// The machine's temp dir (exists while launched).
    pub fn temp_dir(&self) -> Option<&Path> {
        self.temp_dir.as_ref().map(|t| t.path())
    }

    /// Where socket files go (set at launch).
    pub fn sock_dir(&self) -> &Path {
        &self.sock_dir
    }

    /// Where logs go (set at launch).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The QMP greeting of the last launch.
    pub fn qmp_greeting(&self) -> &Value {
        &self.greeting
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
        self.log_dir.join(format!("{}.log", self.name))
    }

    /// The path of the console log.
    pub fn console_log_path(&self) -> PathBuf {
        self.log_dir.join(format!("{}.console.log", self.name))
    }

    /// Logs that could not be written or were cut short (a full or
    /// read-only disk), one line each, over every launch so far.
    pub fn artifact_errors(&self) -> &[String] {
        &self.artifact_errors
    }

    /// The path of the QMP transcript.
    pub fn qmp_transcript_path(&self) -> PathBuf {
        self.log_dir.join(format!("{}.qmp.jsonl", self.name))
    }

    // ---- lifecycle -----------------------------------------------------

    /// Whether QEMU is running.
    pub fn is_running(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.process.exit_code().is_none())
    }

    /// QEMU's exit code once it has exited (negative for a signal).
    pub fn exitcode(&self) -> Option<i32> {
        self.exitcode
            .or_else(|| self.running.as_ref().and_then(|r| r.process.exit_code()))
    }

    /// QEMU's pid while it runs.
    pub fn get_pid(&self) -> Option<i32> {
        self.running
            .as_ref()
            .filter(|r| r.process.exit_code().is_none())
            .map(|r| r.process.pid())
    }

    /// QEMU's output, once it has exited and been cleaned up.
    pub fn get_log(&self) -> Option<&str> {
        self.log.as_deref()
    }

    /// The base arguments `QEMUMachine` builds, with our descriptors.
    fn base_args(&self, mon: Option<&str>, console_fd: Option<RawFd>) -> Vec<String> {
        let mut a: Vec<String> = ["-display", "none", "-vga", "none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(mon) = mon {
            a.extend([
                "-chardev".into(),
                mon.to_string(),
                "-mon".into(),
                "chardev=mon,mode=control".into(),
            ]);
        }
        if self.monitor_null {
            a.extend(["-monitor".into(), "null".into()]);
        }
        if let Some(m) = &self.machine_type {
            a.extend(["-machine".into(), m.clone()]);
        }
        for f in &self.add_fds {
            let mut spec = format!(
                "fd={},set={},opaque={}",
                f.fd,
                f.fdset,
                option_value(&f.opaque)
            );
            if !f.opts.is_empty() {
                spec.push(',');
                spec.push_str(&f.opts);
            }
            a.extend(["-add-fd".into(), spec]);
        }
        for _ in 0..self.console.index {
            a.extend(["-serial".into(), "null".into()]);
        }
        if let Some(fd) = console_fd {
            a.extend(["-chardev".into(), format!("socket,id=console,fd={fd}")]);
            match &self.console.device_type {
                None => a.extend(["-serial".into(), "chardev:console".into()]),
                Some(t) => a.extend(["-device".into(), format!("{t},chardev=console")]),
            }
        }
        a
    }

    /// Starts QEMU and negotiates QMP. On failure everything is cleaned up
    /// and the error is [`Error::LaunchFailure`] with QEMU's output.
    pub fn launch(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Err(Error::Machine(format!(
                "launch: the machine {} is already launched",
                self.name
            )));
        }
        self.exitcode = None;
        self.crash = None;
        self.log = None;
        self.quit_issued = false;
        self.leftover_events.clear();
        self.greeting = Value::Null;
        match self.try_launch() {
            Ok(()) => Ok(()),
            Err((cause, command)) => {
                let exitcode = self.running.as_ref().and_then(|r| {
                    r.process
                        .exit_code()
                        .or_else(|| r.process.wait_timeout(Duration::from_millis(200)))
                });
                self.cleanup();
                Err(Error::LaunchFailure {
                    cause,
                    exitcode: exitcode.or(self.exitcode),
                    command,
                    output: self.log.clone().unwrap_or_default(),
                })
            }
        }
    }

    fn try_launch(&mut self) -> std::result::Result<(), (String, Vec<String>)> {
        let fail = |what: &str, e: &dyn std::fmt::Display| (format!("{what}: {e}"), Vec::new());
        // Private: it holds the sockets (qtest, a unix monitor) that
        // control QEMU.
        use std::os::unix::fs::PermissionsExt;
        let prefix = format!("vmscript-{}-", self.name);
        let mut builder = tempfile::Builder::new();
        builder
            .prefix(&prefix)
            .permissions(std::fs::Permissions::from_mode(0o700));
        let temp = match &self.opts.base_temp_dir {
            Some(base) => builder.tempdir_in(base),
            None => builder.tempdir(),
        }
        .map_err(|e| fail("creating the temp dir", &e))?;
        self.sock_dir = self
            .opts
            .sock_dir
            .clone()
            .unwrap_or_else(|| temp.path().to_path_buf());
        self.log_dir = self
            .opts
            .log_dir
            .clone()
            .unwrap_or_else(|| temp.path().to_path_buf());
        self.temp_dir = Some(temp);
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| fail(&format!("creating {}", self.log_dir.display()), &e))?;

        let mut keep_fds: Vec<RawFd> = self.add_fds.iter().map(|f| f.fd).collect();
        let mut held: Vec<OwnedFd> = Vec::new();

        // The monitor: a socketpair, or a listener QEMU connects to.
        let mut qmp_ours: Option<UnixStream> = None;
        let mut listener: Option<Listener> = None;
        let mon = if self.qmp_enabled {
            Some(match &self.opts.monitor_address {
                None => {
                    let (ours, theirs) =
                        UnixStream::pair().map_err(|e| fail("creating the QMP socketpair", &e))?;
                    let spec = format!("socket,id=mon,fd={}", theirs.as_raw_fd());
                    keep_fds.push(theirs.as_raw_fd());
                    held.push(theirs.into());
                    qmp_ours = Some(ours);
                    spec
                }
                Some(Address::Unix(path)) => {
                    let path = if path.is_relative() {
                        self.sock_dir.join(path)
                    } else {
                        path.clone()
                    };
                    let l = UnixListener::bind(&path)
                        .map_err(|e| fail(&format!("listening on {}", path.display()), &e))?;
                    listener = Some(Listener::Unix(l, path.clone()));
                    format!(
                        "socket,id=mon,path={}",
                        option_value(&path.display().to_string())
                    )
                }
                Some(Address::Tcp(host, port)) => {
                    let l = std::net::TcpListener::bind((host.as_str(), *port))
                        .map_err(|e| fail(&format!("listening on {host}:{port}"), &e))?;
                    let port = l.local_addr().map(|a| a.port()).unwrap_or(*port);
                    listener = Some(Listener::Tcp(l));
                    format!("socket,id=mon,host={host},port={port}")
                }
            })
        } else {
            None
        };

        // The console: a socketpair drained by a Console.
        let mut console_ours: Option<UnixStream> = None;
        let console_fd = if self.console.enabled {
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| fail("creating the console socketpair", &e))?;
            let fd = theirs.as_raw_fd();
            keep_fds.push(fd);
            held.push(theirs.into());
            console_ours = Some(ours);
            Some(fd)
        } else {
            None
        };

        let mut args = self.opts.wrapper.clone();
        args.push(self.opts.binary.to_string_lossy().into_owned());
        args.extend(self.base_args(mon.as_deref(), console_fd));
        let qtest_listener = if self.qtest {
            let path = self.sock_dir.join(format!("{}.qtest.sock", self.name));
            let l = UnixListener::bind(&path)
                .map_err(|e| fail(&format!("listening on {}", path.display()), &e))?;
            // `-qtest` selects the qtest accelerator where QEMU has it;
            // Debian's 7.2 lacks it and runs the firmware under TCG
            // instead, racing qtest's port I/O. `-S` keeps guest code
            // from ever running, which is what qtest means.
            args.extend([
                "-qtest".into(),
                format!("unix:{}", option_value(&path.display().to_string())),
                "-qtest-log".into(),
                "/dev/null".into(),
                "-S".into(),
            ]);
            Some(l)
        } else {
            None
        };
        args.extend(self.opts.args.iter().cloned());
        self.full_args = args.clone();
        let with_cmd = |cause: String| (cause, args.clone());

        let process = Process::spawn(args.clone(), self.log_path(), keep_fds).map_err(|e| {
            with_cmd(if e.kind() == std::io::ErrorKind::NotFound {
                let in_path = if args[0].contains('/') {
                    ""
                } else {
                    " in PATH"
                };
                format!(
                    "QEMU binary {:?} not found{in_path}; pass --qemu BINARY or set VMSCRIPT_QEMU",
                    args[0]
                )
            } else {
                format!("starting {}: {e}", args[0])
            })
        })?;
        self.kill_handle.set(Some(process.clone()));
        // QEMU has its copies of the socketpair ends now; ours must go so
        // that its exit is seen as a hang-up.
        drop(held);
        self.running = Some(Running {
            process: process.clone(),
            qmp: None,
            console: None,
            qtest: None,
        });

        let deadline = Instant::now() + self.opts.qmp_timer;
        if self.qmp_enabled {
            // Made while QEMU starts up, which it takes far longer to do.
            let transcript = self.open_transcript();
            let stream = match (qmp_ours, listener) {
                (Some(s), _) => qmp::Stream::Unix(s),
                (None, Some(l)) => l
                    .accept(&process, deadline)
                    .map_err(|e| with_cmd(format!("waiting for QEMU to connect to QMP: {e}")))?,
                (None, None) => unreachable!("a monitor has a socketpair or a listener"),
            };
            let observer = match (transcript, self.observer.clone()) {
                (Some(a), Some(b)) => Some(Arc::new(move |d: qmp::Direction, m: &[u8]| {
                    a(d, m);
                    b(d, m);
                }) as qmp::Observer),
                (a, b) => a.or(b),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut client =
                qmp::Client::with_options(stream, remaining, qmp::Limits::default(), observer)
                    .map_err(|e| with_cmd(format!("QMP: {e}")))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            client
                .negotiate(remaining)
                .map_err(|e| with_cmd(format!("QMP negotiation: {e}")))?;
            self.greeting = client.greeting();
            if self.observer.is_some() {
                client
                    .watch()
                    .map_err(|e| with_cmd(format!("starting the QMP watcher thread: {e}")))?;
            }
            if let Some(r) = self.running.as_mut() {
                r.qmp = Some(client);
            }
        }
        if let Some(l) = qtest_listener {
            let stream = Listener::Unix(l, PathBuf::new())
                .accept(&process, deadline)
                .map_err(|e| with_cmd(format!("waiting for QEMU to connect to qtest: {e}")))?;
            let qmp::Stream::Unix(s) = stream else {
                unreachable!("a unix listener accepts unix streams")
            };
            if let Some(r) = self.running.as_mut() {
                r.qtest = Some(qtest::Qtest::new(s));
            }
        }
        if let Some(ours) = console_ours {
            let log = File::create(self.console_log_path()).map_err(|e| {
                with_cmd(format!(
                    "creating {}: {e}",
                    self.console_log_path().display()
                ))
            })?;
            let extra = match &self.opts.console_log {
                Some(p) => Some(
                    File::create(p)
                        .map_err(|e| with_cmd(format!("creating {}: {e}", p.display())))?,
                ),
                None => None,
            };
            let console = Console::start(ours, Some(log), extra, self.opts.drain_console)
                .map_err(|e| with_cmd(format!("starting the console reader: {e}")))?;
            if let Some(r) = self.running.as_mut() {
                r.console = Some(console);
            }
        }
        if let Some(r) = &self.running {
            self.interrupt_handle.set(Interrupters {
                qmp: r.qmp.as_ref().map(qmp::Client::interrupter),
                console: r.console.as_ref().map(Console::interrupter),
            });
        }
        Ok(())
    }

    fn open_transcript(&mut self) -> Option<qmp::Observer> {
        if !self.opts.qmp_transcript {
            return None;
        }
        let path = self.qmp_transcript_path();
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                self.artifact_errors
                    .push(format!("creating {}: {e}", path.display()));
                return None;
            }
        };
        let w = Arc::new(Mutex::new(Transcript {
            out: std::io::BufWriter::new(file),
            error: None,
        }));
        self.transcript = Some(w.clone());
        let start = Instant::now();
        Some(Arc::new(move |dir: qmp::Direction, bytes: &[u8]| {
            let mut w = lock(&w);
            let dir = match dir {
                qmp::Direction::Sent => "sent",
                qmp::Direction::Received => "received",
            };
            let t = start.elapsed().as_secs_f64();
            // Only parsed (so valid JSON) messages reach the observer.
            let head = format!("{{\"t\":{t:.6},\"dir\":\"{dir}\",\"msg\":");
            w.write(&[head.as_bytes(), bytes, b"}\n"]);
        }))
    }

    /// Shuts QEMU down: `quit` over QMP and up to `timeout` for it to exit,
    /// then SIGKILL (at once when `hard`). Cleanup always happens; a failed
    /// graceful path is reported as [`Error::AbnormalShutdown`] afterwards,
    /// and so is a QEMU found killed by a signal that vmscript did not send
    /// (a crash: SIGSEGV, SIGABRT, a SIGKILL from elsewhere), before or
    /// during the shutdown, with the signal named ([`Machine::crash`]).
    pub fn shutdown(&mut self, hard: bool, timeout: Duration) -> Result<()> {
        let Some(running) = self.running.as_ref() else {
            return Ok(());
        };
        let process = running.process.clone();
        let deadline = Instant::now() + timeout;
        let mut problem: Option<String> = None;
        if hard {
            process.kill();
        } else if process.exit_code().is_none() {
            if let (Some(client), false) = (running.qmp.as_ref(), self.quit_issued) {
                match client.execute("quit", None, timeout) {
                    Ok(_) => {}
                    // The hang-up can beat the reply; QEMU is exiting anyway.
                    Err(qmp::Error::Closed { .. }) => {}
                    Err(e) => problem = Some(format!("quit failed ({e}), so QEMU was killed")),
                }
                self.quit_issued = true;
                self.close_qmp_after_quit(deadline);
                self.remove_temp_dir_if_empty();
            } else if running.qmp.is_none() && !self.quit_issued {
                // No monitor to ask: a polite signal instead, QEMU's own
                // way to a clean exit.
                process.signal(libc::SIGTERM);
            }
            if process
                .wait_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_none()
            {
                problem.get_or_insert_with(|| {
                    format!(
                        "QEMU did not exit within {}s, so it was killed",
                        timeout.as_secs_f64()
                    )
                });
                process.kill();
            }
        }
        self.cleanup();
        if let (Some(code), None) = (self.exitcode, &problem) {
            // `quit` and a guest poweroff end in an exit code: a signal
            // that vmscript did not send is a crash, even after `quit`.
            if code < 0 && !hard && !process.was_sent(-code) {
                let crash = format!("QEMU was killed by signal {}", signal_name(-code));
                self.crash = Some(crash.clone());
                problem = Some(crash);
            }
        }
        match problem {
            Some(cause) => Err(Error::AbnormalShutdown { cause }),
            None => Ok(()),
        }
    }

    /// After `quit`: waits (up to `deadline`) for QEMU to hang up the
    /// monitor, as it does on its way out, then closes our end. Every
    /// event QEMU sent is kept ([`Machine::get_qmp_events`] still has
    /// them), and closing now overlaps what QEMU has left of its exit:
    /// closing the last end of a socket that was bound to a path releases
    /// that file's inode, a fifth of a millisecond on ext4.
    fn close_qmp_after_quit(&mut self, deadline: Instant) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let hung_up = running
            .qmp
            .as_ref()
            .is_some_and(|c| c.wait_closed(deadline.saturating_duration_since(Instant::now())));
        if !hung_up {
            return;
        }
        if let Some(client) = running.qmp.take() {
            self.close_qmp(client);
        }
    }

    /// Closes the monitor, keeping the events it still holds for
    /// [`Machine::get_qmp_events`].
    fn close_qmp(&mut self, mut client: qmp::Client) {
        client.close();
        self.leftover_events.extend(client.drain_events());
    }

    /// Removes the temp dir now if nothing is left in it (its monitor
    /// socket goes once QEMU has connected): QEMU takes milliseconds to
    /// exit after `quit`, time in which the removal costs nothing. A dir
    /// still holding anything (a qtest socket, the script's files) stays
    /// for [`Machine::cleanup`], after QEMU's exit.
    fn remove_temp_dir_if_empty(&mut self) {
        let Some(t) = &self.temp_dir else { return };
        if std::fs::remove_dir(t.path()).is_ok() {
            // Gone: dropping the TempDir must not try again (and must not
            // remove a new dir someone made under the same name).
            if let Some(t) = self.temp_dir.take() {
                let _ = t.keep();
            }
        }
    }

    /// How QEMU crashed (`"QEMU was killed by signal 11 (SIGSEGV)"`), when
    /// the last shutdown found it killed by a signal vmscript did not send.
    pub fn crash(&self) -> Option<&str> {
        self.crash.as_deref()
    }

    /// Hard shutdown: SIGKILL and cleanup.
    pub fn kill(&mut self) {
        let _ = self.shutdown(true, Duration::ZERO);
    }

    /// Waits up to `timeout` for QEMU to exit by itself (guest poweroff),
    /// then cleans up; kills it and reports [`Error::AbnormalShutdown`]
    /// when it does not.
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.quit_issued = true;
        self.shutdown(false, timeout)
    }

    /// Releases everything of a launch: monitor, console, qtest, temp dir;
    /// reads the log.
    fn cleanup(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        if running.process.exit_code().is_none() {
            running.process.kill();
        }
        self.exitcode = running.process.exit_code();
        if let Some(client) = running.qmp.take() {
            self.close_qmp(client);
        }
        if let Some(console) = running.console.take() {
            console.close();
            if let Some(e) = console.log_error() {
                let path = self.console_log_path();
                self.artifact_errors
                    .push(format!("writing {}: {e}", path.display()));
            }
        }
        running.qtest.take();
        if let Some(w) = self.transcript.take() {
            if let Some(e) = lock(&w).flush() {
                let path = self.qmp_transcript_path();
                self.artifact_errors
                    .push(format!("writing {}: {e}", path.display()));
            }
        }
        if let Some(e) = running.process.log_error() {
            self.artifact_errors.push(e);
        }
        self.log = Some(
            std::fs::read(self.log_path())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
        );
        self.kill_handle.set(None);
        self.interrupt_handle.set(Interrupters::default());
        // Logs outside the temp dir stay; the temp dir (and the sockets in it) go.
        if let Some(t) = self.temp_dir.take() {
            let _ = t.close();
        }
    }

    // ---- QMP -----------------------------------------------------------

    fn client(&self, what: &str) -> Result<&qmp::Client> {
        self.running
            .as_ref()
            .and_then(|r| r.qmp.as_ref())
            .ok_or_else(|| self.no_client(what))
    }

    /// Why there is no QMP client to do `what`.
    fn no_client(&self, what: &str) -> Error {
        if self.running.is_none() {
            Error::Machine(format!("{what}: the machine {} is not running", self.name))
        } else {
            Error::Machine(format!(
                "{what}: the machine {} has no QMP monitor",
                self.name
            ))
        }
    }

    /// Turns a QMP failure into what the user should see: an exit of QEMU
    /// names its code and last output.
    fn qmp_failure(&self, what: &str, err: qmp::Error) -> Error {
        match err {
            qmp::Error::Closed { .. } => self.exited_error(what).unwrap_or(Error::Qmp(err)),
            qmp::Error::Interrupted { .. } => Error::Interrupted {
                what: what.to_string(),
            },
            e => Error::Qmp(e),
        }
    }

    /// [`Error::Exited`] when QEMU has exited (or does so within a moment).
    fn exited_error(&self, what: &str) -> Option<Error> {
        let running = self.running.as_ref()?;
        // The hang-up comes a moment before the exit.
        let code = running.process.wait_timeout(Duration::from_secs(1))?;
        let out = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Some(Error::Exited {
            what: what.to_string(),
            code: Some(code),
            log_tail: last_lines(&out, 10),
        })
    }

    /// Sends a command; returns the whole reply. `conv_keys` turns `_` into
    /// `-` in top-level argument keys.
    pub fn qmp(
        &mut self,
        cmd: &str,
        args: Option<&Map<String, Value>>,
        conv_keys: bool,
    ) -> Result<Value> {
        let converted;
        let args = match args {
            Some(a) if conv_keys && a.keys().any(|k| k.contains('_')) => {
                converted = a
                    .iter()
                    .map(|(k, v)| (k.replace('_', "-"), v.clone()))
                    .collect::<Map<String, Value>>();
                Some(&converted)
            }
            a => a,
        };
        if cmd == "quit" {
            self.quit_issued = true;
        }
        let client = self.client(cmd)?;
        client
            .execute(cmd, args, self.opts.qmp_timer.max(DEFAULT_WAIT))
            .map_err(|e| self.qmp_failure(&format!("waiting for the reply to {cmd}"), e))
    }

    /// Sends a command; returns its `return` value, or
    /// [`Error::MonitorResponse`] for an error reply.
    pub fn command(
        &mut self,
        cmd: &str,
        args: Option<&Map<String, Value>>,
        conv_keys: bool,
    ) -> Result<Value> {
        let mut reply = self.qmp(cmd, args, conv_keys)?;
        if let Some(err) = reply.get("error") {
            let str_of = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(Error::MonitorResponse {
                command: cmd.to_string(),
                class: str_of("class"),
                desc: str_of("desc"),
                reply: Box::new(reply),
            });
        }
        Ok(reply
            .as_object_mut()
            .and_then(|m| m.remove("return"))
            .unwrap_or(Value::Null))
    }

    /// Runs an HMP command line through `human-monitor-command`.
    pub fn hmp(&mut self, command_line: &str) -> Result<String> {
        let mut args = Map::new();
        args.insert("command-line".into(), Value::from(command_line));
        let r = self.command("human-monitor-command", Some(&args), false)?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Passes a descriptor to QEMU over the monitor (SCM_RIGHTS).
    pub fn send_fd_scm(&mut self, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        self.client("send_fd_scm")?
            .send_fd_scm(fd)
            .map_err(|e| self.qmp_failure("sending a file descriptor", e))
    }

    /// Opens `path` and passes it to QEMU over the monitor.
    pub fn send_file_scm(&mut self, path: &Path) -> Result<()> {
        let f = File::options()
            .read(true)
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .map_err(|e| Error::host(format!("opening {}", path.display()), e))?;
        use std::os::fd::AsFd;
        self.send_fd_scm(f.as_fd())
    }

    // ---- events --------------------------------------------------------

    /// One queued event, optionally waiting for it.
    pub fn get_qmp_event(&mut self, wait: EventWait) -> Result<Option<Value>> {
        if !self.leftover_events.is_empty() {
            return Ok(Some(self.leftover_events.remove(0)));
        }
        if self.running.is_none() {
            return Ok(None);
        }
        let timeout = match wait {
            EventWait::No => Duration::ZERO,
            EventWait::Forever => Duration::from_secs(365 * 86400),
            EventWait::For(d) => d,
        };
        match self.client("get_qmp_event")?.take_event(timeout, |_| true) {
            Ok(ev) => Ok(ev),
            Err(e) => Err(self.qmp_failure("waiting for an event", e)),
        }
    }

    /// Every queued event (after waiting for one, if asked).
    pub fn get_qmp_events(&mut self, wait: EventWait) -> Result<Vec<Value>> {
        let mut out = std::mem::take(&mut self.leftover_events);
        if out.is_empty() && wait != EventWait::No {
            if let Some(ev) = self.get_qmp_event(wait)? {
                out.push(ev);
            }
        }
        if let Some(c) = self.running.as_ref().and_then(|r| r.qmp.as_ref()) {
            out.extend(c.drain_events());
        }
        Ok(out)
    }

    /// Drops every queued event.
    pub fn clear_events(&mut self) {
        self.leftover_events.clear();
        if let Some(c) = self.running.as_ref().and_then(|r| r.qmp.as_ref()) {
            c.clear_events();
        }
    }

    /// Waits for an event named `name` that matches `filter`. `Ok(None)`
    /// only for a zero timeout with nothing queued that matches.
    pub fn event_wait(
        &mut self,
        name: &str,
        timeout: Duration,
        filter: Option<&Value>,
    ) -> Result<Option<Value>> {
        self.events_wait(&[(name.to_string(), filter.cloned())], timeout)
    }

    /// Waits for the first event that matches any `(name, filter)` pair.
    /// Events that do not match stay queued, in order.
    pub fn events_wait(
        &mut self,
        events: &[(String, Option<Value>)],
        timeout: Duration,
    ) -> Result<Option<Value>> {
        let matches = |ev: &Value| events::matches_any(ev, events);
        if let Some(i) = self.leftover_events.iter().position(matches) {
            return Ok(Some(self.leftover_events.remove(i)));
        }
        // Described only when it fails: a wait that succeeds formats nothing.
        let what = || events::describe(events);
        let client = match self.running.as_ref().and_then(|r| r.qmp.as_ref()) {
            Some(c) => c,
            None => return Err(self.no_client(&format!("waiting for {}", what()))),
        };
        match client.take_event(timeout, matches) {
            Ok(Some(ev)) => Ok(Some(ev)),
            Ok(None) if timeout.is_zero() => Ok(None),
            Ok(None) => Err(Error::Timeout {
                what: what(),
                after: timeout,
                seen: client
                    .queued_events()
                    .iter()
                    .map(|e| {
                        e.get("event")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect(),
            }),
            Err(e) => Err(self.qmp_failure(&format!("waiting for {}", what()), e)),
        }
    }

    // ---- console -------------------------------------------------------

    /// The console of the running machine (needs `set_console`).
    pub fn console_socket(&self) -> Result<Console> {
        let running = self.running.as_ref().ok_or_else(|| {
            Error::Machine(format!(
                "console_socket: the machine {} is not running",
                self.name
            ))
        })?;
        running.console.clone().ok_or_else(|| {
            Error::Machine(format!(
                "console_socket: the machine {} has no console; call set_console() before launch()",
                self.name
            ))
        })
    }

    /// Turns a console failure into the user's view: a hang-up because
    /// QEMU exited names its exit code.
    fn console_failure(&self, what: &str, err: ConsoleError) -> Error {
        match err {
            ConsoleError::Closed { .. } => self.exited_error(what).unwrap_or(Error::Console(err)),
            ConsoleError::Interrupted { .. } => Error::Interrupted {
                what: what.to_string(),
            },
            e => Error::Console(e),
        }
    }

    /// Waits for `success` on the console; seeing `failure` first fails.
    pub fn wait_for_console_pattern(
        &self,
        success: &str,
        failure: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        let con = self.console_socket()?;
        con.wait_for_either(success, failure, timeout).map_err(|e| {
            self.console_failure(&format!("waiting for {success:?} on the console"), e)
        })
    }

    /// Types `cmd` and Enter on the console.
    pub fn exec_command(&self, cmd: &str) -> Result<()> {
        let con = self.console_socket()?;
        con.send(&format!("{cmd}\r"))
            .map_err(|e| self.console_failure("sending to the console", e))
    }

    /// Types `cmd` and Enter, then waits for `success` (or fails on `failure`).
    pub fn exec_command_and_wait_for_pattern(
        &self,
        cmd: &str,
        success: &str,
        failure: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        self.exec_command(cmd)?;
        self.wait_for_console_pattern(success, failure, timeout)
    }

    /// Sends `interrupt` repeatedly until `pattern` appears.
    pub fn interrupt_interactive_console_until_pattern(
        &self,
        pattern: &str,
        interrupt: &str,
        timeout: Duration,
    ) -> Result<String> {
        let con = self.console_socket()?;
        let deadline = Instant::now() + timeout;
        loop {
            con.send(interrupt)
                .map_err(|e| self.console_failure("sending to the console", e))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match con.wait_for(pattern, left.min(Duration::from_secs(1))) {
                Ok(out) => return Ok(out),
                Err(ConsoleError::Timeout { .. }) if !left.is_zero() => continue,
                Err(ConsoleError::Timeout { tail, .. }) => {
                    return Err(Error::Console(ConsoleError::Timeout {
                        what: format!("console text {pattern:?} while interrupting"),
                        after: timeout,
                        tail,
                    }))
                }
                Err(e) => return Err(self.console_failure(&format!("waiting for {pattern:?}"), e)),
            }
        }
    }

    // ---- qtest ---------------------------------------------------------

    /// Sends one qtest line; returns the reply line.
    pub fn qtest(&mut self, line: &str) -> Result<String> {
        let running = self.running.as_mut().ok_or_else(|| {
            Error::Machine(format!("qtest: the machine {} is not running", self.name))
        })?;
        let q = running.qtest.as_mut().ok_or_else(|| {
            Error::Machine(format!(
                "qtest: the machine {} was not made with qtest_machine()",
                self.name
            ))
        })?;
        let res = q.command(line, self.opts.qmp_timer.max(DEFAULT_WAIT));
        res.map_err(|e| match e {
            qtest::QtestError::Closed => self
                .exited_error("waiting for a qtest reply")
                .unwrap_or_else(|| Error::Machine("qtest: QEMU closed the qtest socket".into())),
            qtest::QtestError::Timeout(after) => Error::Timeout {
                what: format!("the qtest reply to {line:?}"),
                after,
                seen: Vec::new(),
            },
            qtest::QtestError::Io(m) => Error::host("qtest", m),
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.running.is_some() {
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

/// A listening socket QEMU connects to.
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(std::net::TcpListener),
}

impl Listener {
    /// Accepts one connection, giving up at the deadline or when QEMU exits.
    fn accept(self, process: &Process, deadline: Instant) -> std::io::Result<qmp::Stream> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let fd = match &self {
            Listener::Unix(l, _) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(process.pidfd(), PollFlags::POLLIN),
        ];
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => break,
            }
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        if !ready(&fds[0]) {
            if ready(&fds[1]) {
                let code = process.wait_timeout(Duration::from_secs(1));
                return Err(std::io::Error::other(format!(
                    "QEMU exited with code {} before connecting",
                    code.map_or("unknown".into(), |c| c.to_string())
                )));
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "QEMU did not connect in time",
            ));
        }
        let stream = match &self {
            Listener::Unix(l, _) => qmp::Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                let _ = s.set_nodelay(true);
                qmp::Stream::Tcp(s)
            }
        };
        if let Listener::Unix(_, path) = &self {
            if !path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(stream)
    }
}

/// Finds `program` in `$PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `text` as the value of a QEMU option (`path=…` in `-chardev socket,…`):
/// QEMU reads a `,` as the end of the value, and `,,` as a comma in it.
fn option_value(text: &str) -> String {
    text.replace(',', ",,")
}

/// A signal's number and name: `11 (SIGSEGV)`.
fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{signal} ({})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
