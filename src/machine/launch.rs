//! Starting QEMU, in three steps with an error of their own each: a
//! [`Plan`] (temp dir, sockets, listeners and the command line, whose
//! pieces [`super::args`] builds), a spawn, and a connect (accept the
//! monitor, negotiate QMP, start the console reader and the qtest channel).
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

use super::args::{
    add_fd_args, agent_args, command_line, console_args, display_args, incoming_args, machine_args,
    monitor_args, monitor_null_args, qtest_args, second_qmp_args, serial_padding_args,
    MonitorChardev,
};
use super::lifecycle::{Exited, Launched, Running, State};
use super::process::Process;
use super::{Console, Error, Interrupters, Machine, Result};
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
    agent: Option<UnixStream>,
    qtest: Option<UnixListener>,
}

/// What QEMU connected to, once it runs.
pub(super) struct Connected {
    pub qmp: Option<qmp::Client>,
    pub greeting: serde_json::Value,
    pub console: Option<Console>,
    pub agent: Option<super::Agent>,
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

        let (agent, agent_fd) = if m.agent {
            let (ours, fd) = pair("guest agent socketpair")?;
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
            // Before the user's devices, so that a migration destination
            // (the source's arguments, then more) has the same layout.
            agent_fd.map(agent_args).unwrap_or_default(),
            qtest_path.as_deref().map(qtest_args).unwrap_or_default(),
            m.second_qmp_path_in(&sock_dir)
                .as_deref()
                .map(second_qmp_args)
                .unwrap_or_default(),
            m.opts.args.clone(),
            incoming_args(m.incoming),
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
            agent,
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
            agent: None,
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
            let timed = create(&m.console_timed_log_path())?;
            // The QMP transcript's clock: the test's, else about the launch.
            let clock = m.opts.clock.unwrap_or_else(std::time::Instant::now);
            let console =
                Console::start_timed(ours, Some(log), extra, (timed, clock), m.opts.drain_console)
                    .map_err(LaunchError::connect("starting the console reader"))?;
            out.console = Some(console);
        }
        if let Some(ours) = self.agent.take() {
            out.agent = Some(
                super::Agent::new(ours)
                    .map_err(LaunchError::connect("setting up the guest agent's socket"))?,
            );
        }
        Ok(out)
    }
}

impl Machine {
    /// Starts QEMU and negotiates QMP. On failure everything is cleaned up
    /// and the error is [`Error::LaunchFailure`] with QEMU's output.
    pub fn launch(&mut self) -> Result<()> {
        if self.running().is_some() {
            return Err(Error::Machine(format!(
                "launch: the machine {} is already launched",
                self.name
            )));
        }
        let mut plan = match Plan::new(self) {
            Ok(plan) => plan,
            Err(e) => {
                self.state = State::Exited(Exited::never_ran(Launched::default()));
                return Err(launch_failure(e, None, Vec::new(), String::new()));
            }
        };
        let launched = Launched {
            sock_dir: plan.sock_dir.clone(),
            log_dir: plan.log_dir.clone(),
            full_args: plan.args.clone(),
            greeting: serde_json::Value::Null,
        };
        let process = match plan.spawn(self.log_file(&launched.log_dir, "log")) {
            Ok(p) => p,
            Err(e) => {
                self.state = State::Exited(Exited::never_ran(launched));
                return Err(launch_failure(e, None, plan.args, String::new()));
            }
        };
        self.kill_handle.set(Some(process.clone()));
        self.state = State::Running(Running {
            launched,
            temp_dir: plan.temp_dir.take(),
            process: process.clone(),
            qmp: None,
            console: None,
            agent: None,
            qtest: None,
            transcript: None,
            quit_issued: false,
        });
        if let Err(e) = self.connect(&mut plan, &process) {
            let code = process
                .exit_code()
                .or_else(|| process.wait_timeout(Duration::from_millis(200)));
            self.cleanup();
            let (code, output) = match &self.state {
                State::Exited(x) => (code.or(x.code), x.log.clone().unwrap_or_default()),
                _ => (code, String::new()),
            };
            return Err(launch_failure(e, code, plan.args, output));
        }
        Ok(())
    }

    /// The connect step of a launch, on the running machine: the QMP
    /// transcript and observer, then [`Plan::connect`].
    fn connect(
        &mut self,
        plan: &mut Plan,
        process: &Process,
    ) -> std::result::Result<(), LaunchError> {
        // Made while QEMU starts up, which it takes far longer to do.
        let transcript = if self.qmp_enabled {
            self.open_transcript()
        } else {
            None
        };
        let (transcript, to_file) = transcript.unzip();
        let observer = match (to_file, self.observer.clone()) {
            (Some(a), Some(b)) => Some(Arc::new(move |d: qmp::Direction, m: &[u8]| {
                a(d, m);
                b(d, m);
            }) as qmp::Observer),
            (a, b) => a.or(b),
        };
        let watch = self.observer.is_some();
        let running = self.running_mut().expect("launch made it running");
        running.transcript = transcript;
        let connected = plan.connect(self, process, observer, watch)?;
        self.interrupt_handle.set(Interrupters {
            qmp: connected.qmp.as_ref().map(qmp::Client::interrupter),
            console: connected.console.as_ref().map(Console::interrupter),
            agent: connected.agent.as_ref().map(super::Agent::interrupter),
        });
        let running = self.running_mut().expect("launch made it running");
        running.launched.greeting = connected.greeting;
        running.qmp = connected.qmp;
        running.console = connected.console;
        running.agent = connected.agent;
        running.qtest = connected.qtest;
        Ok(())
    }
}

fn launch_failure(
    cause: LaunchError,
    exitcode: Option<i32>,
    command: Vec<String>,
    output: String,
) -> Error {
    Error::LaunchFailure {
        cause: cause.to_string(),
        exitcode,
        command,
        output,
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
