//! Starting QEMU, in three steps with an error of their own each: a
//! [`Plan`] (temp dir, sockets, listeners and the command line, built by
//! small pure functions), a spawn, and a connect (accept the monitor,
//! negotiate QMP, start the console reader and the qtest channel).
//!
//! Only [`Machine::launch`] is public; it turns a [`LaunchError`] into
//! [`Error::LaunchFailure`] after cleaning up. What a launch makes is
//! handed to the machine's lifecycle ([`super::lifecycle`]); nothing here
//! shuts QEMU down.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::process::Process;
use super::{AddFd, Console, ConsoleConfig, Error, Machine, Result};
use crate::qmp::{self, Address};

/// Why a launch failed, by step.
#[derive(Debug, thiserror::Error)]
pub(super) enum LaunchError {
    /// Preparing the temp dir, a socket or a listener.
    #[error("{what}: {source}")]
    Plan {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The QEMU binary does not exist.
    #[error("QEMU binary {binary:?} not found{}; pass --qemu BINARY or set VMSCRIPT_QEMU",
        if .binary.contains('/') { "" } else { " in PATH" })]
    NotFound { binary: String },
    /// The process could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU started but did not connect, or a reader could not start.
    #[error("{what}: {source}")]
    Connect {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU connected but QMP failed.
    #[error("{what}: {source}")]
    Qmp {
        what: String,
        #[source]
        source: Box<qmp::Error>,
    },
}

impl LaunchError {
    fn plan(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
        let what = what.into();
        move |source| LaunchError::Plan { what, source }
    }

    fn connect(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
        let what = what.into();
        move |source| LaunchError::Connect { what, source }
    }

    fn qmp(what: &'static str) -> impl FnOnce(qmp::Error) -> LaunchError {
        move |source| LaunchError::Qmp {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// Where QEMU's monitor connects: our end of a socketpair, or a listener.
enum MonitorEnd {
    Paired(UnixStream),
    Listening(Listener),
}

/// Everything prepared before QEMU starts. Dropping it closes every
/// socket and removes the temp dir.
pub(super) struct Plan {
    /// Taken by the running machine once QEMU has started.
    pub temp_dir: Option<tempfile::TempDir>,
    pub sock_dir: PathBuf,
    pub log_dir: PathBuf,
    /// The whole command line, wrapper and binary first.
    pub args: Vec<String>,
    /// Descriptors QEMU inherits.
    keep_fds: Vec<RawFd>,
    /// QEMU's ends of our socketpairs: ours to close once it has its copies.
    theirs: Vec<OwnedFd>,
    monitor: Option<MonitorEnd>,
    console: Option<UnixStream>,
    qtest: Option<UnixListener>,
}

/// What QEMU connected to, once it runs.
pub(super) struct Connected {
    pub qmp: Option<qmp::Client>,
    pub greeting: serde_json::Value,
    pub console: Option<Console>,
    pub qtest: Option<super::qtest::Qtest>,
}

impl Plan {
    /// Makes the temp dir, the sockets and the listeners, and the command
    /// line that hands them to QEMU.
    pub fn new(m: &Machine) -> std::result::Result<Plan, LaunchError> {
        let temp_dir = make_temp_dir(&m.name, m.opts.base_temp_dir.as_deref())?;
        let sock_dir = m
            .opts
            .sock_dir
            .clone()
            .unwrap_or_else(|| temp_dir.path().to_path_buf());
        let log_dir = m
            .opts
            .log_dir
            .clone()
            .unwrap_or_else(|| temp_dir.path().to_path_buf());
        std::fs::create_dir_all(&log_dir)
            .map_err(LaunchError::plan(format!("creating {}", log_dir.display())))?;

        let mut keep_fds: Vec<RawFd> = m.add_fds.iter().map(|f| f.fd).collect();
        let mut theirs: Vec<OwnedFd> = Vec::new();
        let mut pair = |what: &str| {
            let (ours, qemu) =
                UnixStream::pair().map_err(LaunchError::plan(format!("creating the {what}")))?;
            let fd = qemu.as_raw_fd();
            keep_fds.push(fd);
            theirs.push(qemu.into());
            Ok::<_, LaunchError>((ours, fd))
        };

        let (monitor, chardev) = if m.qmp_enabled {
            let (end, chardev) = match &m.opts.monitor_address {
                None => {
                    let (ours, fd) = pair("QMP socketpair")?;
                    (MonitorEnd::Paired(ours), MonitorChardev::Fd(fd).spec())
                }
                Some(Address::Unix(path)) => {
                    let path = if path.is_relative() {
                        sock_dir.join(path)
                    } else {
                        path.clone()
                    };
                    let l = UnixListener::bind(&path).map_err(LaunchError::plan(format!(
                        "listening on {}",
                        path.display()
                    )))?;
                    let spec = MonitorChardev::Unix(&path).spec();
                    (MonitorEnd::Listening(Listener::Unix(l, Some(path))), spec)
                }
                Some(Address::Tcp(host, port)) => {
                    let l = std::net::TcpListener::bind((host.as_str(), *port))
                        .map_err(LaunchError::plan(format!("listening on {host}:{port}")))?;
                    let port = l.local_addr().map(|a| a.port()).unwrap_or(*port);
                    let spec = MonitorChardev::Tcp(host, port).spec();
                    (MonitorEnd::Listening(Listener::Tcp(l)), spec)
                }
            };
            (Some(end), Some(chardev))
        } else {
            (None, None)
        };

        let (console, console_fd) = if m.console.enabled {
            let (ours, fd) = pair("console socketpair")?;
            (Some(ours), Some(fd))
        } else {
            (None, None)
        };

        let (qtest, qtest_path) = if m.qtest {
            let path = sock_dir.join(format!("{}.qtest.sock", m.name));
            let l = UnixListener::bind(&path).map_err(LaunchError::plan(format!(
                "listening on {}",
                path.display()
            )))?;
            (Some(l), Some(path))
        } else {
            (None, None)
        };

        let args = command_line(&[
            m.opts.wrapper.clone(),
            vec![m.opts.binary.to_string_lossy().into_owned()],
            display_args(),
            chardev.as_deref().map(monitor_args).unwrap_or_default(),
            monitor_null_args(m.monitor_null),
            machine_args(m.machine_type.as_deref()),
            m.add_fds.iter().flat_map(add_fd_args).collect(),
            serial_padding_args(m.console.index),
            console_fd
                .map(|fd| console_args(fd, &m.console))
                .unwrap_or_default(),
            qtest_path.as_deref().map(qtest_args).unwrap_or_default(),
            m.opts.args.clone(),
        ]);
        Ok(Plan {
            temp_dir: Some(temp_dir),
            sock_dir,
            log_dir,
            args,
            keep_fds,
            theirs,
            monitor,
            console,
            qtest,
        })
    }

    /// Starts QEMU with its output going to `log`. What remains of the plan
    /// is what [`Plan::connect`] needs.
    pub fn spawn(&mut self, log: PathBuf) -> std::result::Result<Arc<Process>, LaunchError> {
        let process =
            Process::spawn(self.args.clone(), log, self.keep_fds.clone()).map_err(|source| {
                let binary = self.args[0].clone();
                if source.kind() == std::io::ErrorKind::NotFound {
                    LaunchError::NotFound { binary }
                } else {
                    LaunchError::Spawn { binary, source }
                }
            })?;
        // QEMU has its copies of the socketpair ends now; ours must go so
        // that its exit is seen as a hang-up.
        self.theirs.clear();
        Ok(process)
    }

    /// Waits for QEMU to connect (up to the machine's `qmp_timer`, or until
    /// it exits), negotiates QMP and starts the console reader.
    /// `observer` sees every QMP message; `watch` starts a thread that
    /// reads the monitor while nobody waits on it.
    pub fn connect(
        &mut self,
        m: &Machine,
        process: &Process,
        observer: Option<qmp::Observer>,
        watch: bool,
    ) -> std::result::Result<Connected, LaunchError> {
        let deadline = Instant::now() + m.opts.qmp_timer;
        let mut out = Connected {
            qmp: None,
            greeting: serde_json::Value::Null,
            console: None,
            qtest: None,
        };
        if let Some(end) = self.monitor.take() {
            let stream = match end {
                MonitorEnd::Paired(s) => qmp::Stream::Unix(s),
                MonitorEnd::Listening(l) => l
                    .accept(process, deadline)
                    .map_err(LaunchError::connect("waiting for QEMU to connect to QMP"))?,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let mut client =
                qmp::Client::with_options(stream, left, qmp::Limits::default(), observer)
                    .map_err(LaunchError::qmp("QMP"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            client
                .negotiate(left)
                .map_err(LaunchError::qmp("QMP negotiation"))?;
            out.greeting = client.greeting();
            if watch {
                client
                    .watch()
                    .map_err(LaunchError::connect("starting the QMP watcher thread"))?;
            }
            out.qmp = Some(client);
        }
        if let Some(l) = self.qtest.take() {
            let stream = Listener::Unix(l, None)
                .accept(process, deadline)
                .map_err(LaunchError::connect("waiting for QEMU to connect to qtest"))?;
            let qmp::Stream::Unix(s) = stream else {
                unreachable!("a unix listener accepts unix streams")
            };
            out.qtest = Some(super::qtest::Qtest::new(s));
        }
        if let Some(ours) = self.console.take() {
            let create = |p: &Path| {
                File::create(p).map_err(LaunchError::connect(format!("creating {}", p.display())))
            };
            let log = create(&m.console_log_path())?;
            let extra = m.opts.console_log.as_deref().map(create).transpose()?;
            let console = Console::start(ours, Some(log), extra, m.opts.drain_console)
                .map_err(LaunchError::connect("starting the console reader"))?;
            out.console = Some(console);
        }
        Ok(out)
    }
}

impl Machine {
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
        self.greeting = serde_json::Value::Null;
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
                    cause: cause.to_string(),
                    exitcode: exitcode.or(self.exitcode),
                    command,
                    output: self.log.clone().unwrap_or_default(),
                })
            }
        }
    }

    /// The launch; a failure carries the command line once there is one
    /// to blame.
    fn try_launch(&mut self) -> std::result::Result<(), (LaunchError, Vec<String>)> {
        let mut plan = Plan::new(self).map_err(|e| (e, Vec::new()))?;
        self.sock_dir = plan.sock_dir.clone();
        self.log_dir = plan.log_dir.clone();
        self.full_args = plan.args.clone();
        let args = plan.args.clone();
        let process = plan.spawn(self.log_path()).map_err(|e| (e, args))?;
        self.kill_handle.set(Some(process.clone()));
        self.temp_dir = plan.temp_dir.take();
        self.running = Some(super::Running {
            process: process.clone(),
            qmp: None,
            console: None,
            qtest: None,
        });
        // Made while QEMU starts up, which it takes far longer to do.
        let transcript = if self.qmp_enabled {
            self.open_transcript()
        } else {
            None
        };
        let observer = match (transcript, self.observer.clone()) {
            (Some(a), Some(b)) => Some(Arc::new(move |d: qmp::Direction, m: &[u8]| {
                a(d, m);
                b(d, m);
            }) as qmp::Observer),
            (a, b) => a.or(b),
        };
        let watch = self.observer.is_some();
        let connected = plan
            .connect(self, &process, observer, watch)
            .map_err(|e| (e, plan.args.clone()))?;
        self.greeting = connected.greeting;
        let running = self.running.as_mut().expect("set above");
        running.qmp = connected.qmp;
        running.console = connected.console;
        running.qtest = connected.qtest;
        self.interrupt_handle.set(super::Interrupters {
            qmp: running.qmp.as_ref().map(qmp::Client::interrupter),
            console: running.console.as_ref().map(Console::interrupter),
        });
        Ok(())
    }
}

/// Makes the machine's temp dir, private because it holds the sockets
/// (qtest, a unix monitor) that control QEMU.
fn make_temp_dir(
    name: &str,
    base: Option<&Path>,
) -> std::result::Result<tempfile::TempDir, LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    let prefix = format!("vmscript-{name}-");
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .permissions(std::fs::Permissions::from_mode(0o700));
    match base {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    }
    .map_err(LaunchError::plan("creating the temp dir"))
}

// ---- the command line, piece by piece -------------------------------------

/// The command line: the pieces in order.
fn command_line(pieces: &[Vec<String>]) -> Vec<String> {
    pieces.concat()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// No display and no VGA, as `QEMUMachine` starts every machine.
fn display_args() -> Vec<String> {
    strings(&["-display", "none", "-vga", "none"])
}

/// Where the monitor's chardev is.
enum MonitorChardev<'a> {
    /// A descriptor QEMU inherits.
    Fd(RawFd),
    /// A unix socket QEMU connects to.
    Unix(&'a Path),
    /// A TCP address QEMU connects to.
    Tcp(&'a str, u16),
}

impl MonitorChardev<'_> {
    /// The `-chardev` specification, with the id the `-mon` option names.
    fn spec(&self) -> String {
        match self {
            MonitorChardev::Fd(fd) => format!("socket,id=mon,fd={fd}"),
            MonitorChardev::Unix(path) => format!(
                "socket,id=mon,path={}",
                option_value(&path.display().to_string())
            ),
            MonitorChardev::Tcp(host, port) => format!("socket,id=mon,host={host},port={port}"),
        }
    }
}

/// A QMP monitor on the chardev `spec`.
fn monitor_args(spec: &str) -> Vec<String> {
    strings(&["-chardev", spec, "-mon", "chardev=mon,mode=control"])
}

/// `-monitor null` when asked for (`add_monitor_null`).
fn monitor_null_args(enabled: bool) -> Vec<String> {
    if enabled {
        strings(&["-monitor", "null"])
    } else {
        Vec::new()
    }
}

/// The `-machine` type, when one was set.
fn machine_args(machine_type: Option<&str>) -> Vec<String> {
    machine_type.map_or_else(Vec::new, |m| strings(&["-machine", m]))
}

/// One `-add-fd`.
fn add_fd_args(f: &AddFd) -> Vec<String> {
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
    vec!["-add-fd".into(), spec]
}

/// `-serial null` for each serial port before the console's.
fn serial_padding_args(console_index: u32) -> Vec<String> {
    (0..console_index)
        .flat_map(|_| strings(&["-serial", "null"]))
        .collect()
}

/// The console chardev on `fd`, on a serial port or on a device.
fn console_args(fd: RawFd, console: &ConsoleConfig) -> Vec<String> {
    let mut a = vec!["-chardev".into(), format!("socket,id=console,fd={fd}")];
    match &console.device_type {
        None => a.extend(strings(&["-serial", "chardev:console"])),
        Some(t) => a.extend(["-device".into(), format!("{t},chardev=console")]),
    }
    a
}

/// qtest on the unix socket `path`.
///
/// `-qtest` selects the qtest accelerator where QEMU has it; Debian's 7.2
/// lacks it and runs the firmware under TCG instead, racing qtest's port
/// I/O. `-S` keeps guest code from ever running, which is what qtest means.
fn qtest_args(path: &Path) -> Vec<String> {
    vec![
        "-qtest".into(),
        format!("unix:{}", option_value(&path.display().to_string())),
        "-qtest-log".into(),
        "/dev/null".into(),
        "-S".into(),
    ]
}

/// `text` as the value of a QEMU option (`path=…` in `-chardev socket,…`):
/// QEMU reads a `,` as the end of the value, and `,,` as a comma in it.
fn option_value(text: &str) -> String {
    text.replace(',', ",,")
}

// ---- accepting QEMU's connection ------------------------------------------

/// A listening socket QEMU connects to; a unix one with the path to remove
/// once QEMU is connected.
enum Listener {
    Unix(UnixListener, Option<PathBuf>),
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
        if let Listener::Unix(_, Some(path)) = &self {
            let _ = std::fs::remove_file(path);
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_starts_without_display_or_vga() {
        assert_eq!(display_args(), ["-display", "none", "-vga", "none"]);
    }

    #[test]
    fn the_monitor_chardev_names_an_inherited_fd_a_path_or_an_address() {
        assert_eq!(MonitorChardev::Fd(7).spec(), "socket,id=mon,fd=7");
        assert_eq!(
            MonitorChardev::Unix(Path::new("/tmp/a,b/qmp.sock")).spec(),
            "socket,id=mon,path=/tmp/a,,b/qmp.sock"
        );
        assert_eq!(
            MonitorChardev::Tcp("127.0.0.1", 4444).spec(),
            "socket,id=mon,host=127.0.0.1,port=4444"
        );
    }

    #[test]
    fn the_monitor_is_a_qmp_monitor_on_its_chardev() {
        assert_eq!(
            monitor_args("socket,id=mon,fd=7"),
            [
                "-chardev",
                "socket,id=mon,fd=7",
                "-mon",
                "chardev=mon,mode=control"
            ]
        );
    }

    #[test]
    fn optional_pieces_are_empty_when_not_asked_for() {
        assert!(monitor_null_args(false).is_empty());
        assert_eq!(monitor_null_args(true), ["-monitor", "null"]);
        assert!(machine_args(None).is_empty());
        assert_eq!(machine_args(Some("q35")), ["-machine", "q35"]);
        assert!(serial_padding_args(0).is_empty());
    }

    #[test]
    fn add_fd_escapes_the_opaque_value_and_appends_options() {
        let f = AddFd {
            fd: 9,
            fdset: 2,
            opaque: "disk,a".into(),
            opts: String::new(),
        };
        assert_eq!(add_fd_args(&f), ["-add-fd", "fd=9,set=2,opaque=disk,,a"]);
        let f = AddFd {
            opts: "extra=1".into(),
            ..f
        };
        assert_eq!(
            add_fd_args(&f),
            ["-add-fd", "fd=9,set=2,opaque=disk,,a,extra=1"]
        );
    }

    #[test]
    fn a_console_index_pads_the_serial_ports_before_it() {
        assert_eq!(
            serial_padding_args(2),
            ["-serial", "null", "-serial", "null"]
        );
    }

    #[test]
    fn the_console_goes_on_a_serial_port_or_on_a_device() {
        let serial = ConsoleConfig {
            enabled: true,
            device_type: None,
            index: 0,
        };
        assert_eq!(
            console_args(5, &serial),
            [
                "-chardev",
                "socket,id=console,fd=5",
                "-serial",
                "chardev:console"
            ]
        );
        let device = ConsoleConfig {
            device_type: Some("virtconsole".into()),
            ..serial
        };
        assert_eq!(
            console_args(5, &device),
            [
                "-chardev",
                "socket,id=console,fd=5",
                "-device",
                "virtconsole,chardev=console"
            ]
        );
    }

    #[test]
    fn qtest_listens_on_an_escaped_path_and_keeps_the_guest_stopped() {
        assert_eq!(
            qtest_args(Path::new("/s,d/vm.qtest.sock")),
            [
                "-qtest",
                "unix:/s,,d/vm.qtest.sock",
                "-qtest-log",
                "/dev/null",
                "-S"
            ]
        );
    }

    #[test]
    fn the_command_line_keeps_its_pieces_in_order() {
        let line = command_line(&[
            strings(&["valgrind"]),
            strings(&["qemu"]),
            display_args(),
            Vec::new(),
            strings(&["-M", "none"]),
        ]);
        assert_eq!(
            line,
            ["valgrind", "qemu", "-display", "none", "-vga", "none", "-M", "none"]
        );
    }
}
