//! `run_host`: host commands run without a shell, each in its own process
//! group, with their output captured under the memory limit; and
//! [`HostProcesses`], which finds and kills what those commands leave
//! running once the script ends, is cancelled or vmscript exits.
//!
//! Start reading from [`HostCommand`] (a call's options and its start) and
//! [`HostRun`] (the wait for it); the script bindings live in the parent
//! module.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use rhai::{Array, Dynamic, Map, INT};

use crate::machine::process::Watchdog;
use crate::script::args;
use crate::script::errors::{self, ScriptResult};
use crate::script::memory;
use crate::script::run::Run;
use crate::sync::lock;

/// How often `run_host` looks at its child.
const POLL: Duration = Duration::from_millis(10);

/// `run_host`'s options.
pub(super) struct HostCommand {
    argv: Vec<String>,
    timeout: Duration,
    cwd: Option<String>,
    env: Vec<(String, String)>,
}

impl HostCommand {
    pub(super) fn new(run: &Run, argv: Array, options: &Map) -> ScriptResult<HostCommand> {
        args::known_keys(options, &["timeout", "cwd", "env"], "run_host()")?;
        let argv = args::strings(&Dynamic::from_array(argv), "run_host argv")?;
        if argv.is_empty() {
            return Err(errors::host("run_host: argv is empty"));
        }
        let timeout = match options.get("timeout") {
            Some(t) => args::secs(t, "timeout")?,
            None => run.until_timeout(),
        };
        let cwd = options
            .get("cwd")
            .map(|c| args::string(c, "cwd"))
            .transpose()?;
        let env = match options.get("env") {
            None => Vec::new(),
            Some(e) => {
                let Some(m) = e.read_lock::<Map>() else {
                    return Err(errors::bad_type("env", "a map of strings", e));
                };
                m.iter()
                    .map(|(k, v)| Ok((k.to_string(), args::string(v, k)?)))
                    .collect::<ScriptResult<_>>()?
            }
        };
        Ok(HostCommand {
            argv,
            timeout,
            cwd,
            env,
        })
    }

    /// Runs the command (never through a shell); see [`HostRun`].
    pub(super) fn run(self, run: &Run) -> ScriptResult<Map> {
        let program = &self.argv[0];
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(HOST_MARK_VAR, run.cancel().host_processes().mark())
            .process_group(0);
        if let Some(c) = &self.cwd {
            cmd.current_dir(c);
        }
        // Started before vmscript becomes a subreaper, so that it is never
        // adopted as vmscript's child.
        Watchdog::get();
        adopt_orphans();
        crate::machine::process::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| errors::host(format!("run_host: starting {program}: {e}")))?;
        let pgid = child.id() as i32;
        run.cancel().host_processes().started(pgid);
        let result = HostRun {
            argv: &self.argv,
            child,
            timeout: self.timeout,
            limit: memory::limit(),
        }
        .finish(run);
        run.cancel().host_processes().ended(pgid);
        result
    }
}

/// The environment variable that marks every process `run_host` starts,
/// and so their descendants, with the run that started them.
pub const HOST_MARK_VAR: &str = "VMSCRIPT_RUN_HOST";

/// How long `run_host` goes on reading after its command exited, for
/// output that processes it left in the background still write.
const LINGER: Duration = Duration::from_millis(200);

/// Makes vmscript the subreaper of what it starts: a process whose parent
/// exits (a command's background child, a daemon) is reparented to
/// vmscript instead of init, so the run can still find, kill and reap it.
fn adopt_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Failure leaves orphans to init, and they are still found by their mark.
    ONCE.call_once(|| {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    });
}

/// One captured stream of a host command.
struct Capture {
    pipe: Option<std::os::fd::OwnedFd>,
    bytes: Vec<u8>,
}

impl Capture {
    fn new(pipe: Option<impl Into<std::os::fd::OwnedFd>>) -> Capture {
        let pipe = pipe.map(Into::into);
        if let Some(p) = &pipe {
            crate::machine::process::set_nonblocking(p);
        }
        Capture {
            pipe,
            bytes: Vec::new(),
        }
    }

    /// Reads what is there without blocking; the pipe is dropped at its end.
    fn read_available(&mut self) -> std::io::Result<()> {
        let Some(p) = &self.pipe else { return Ok(()) };
        let mut f = std::fs::File::from(p.try_clone()?);
        let mut buf = [0u8; 64 << 10];
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return Ok(());
                }
                Ok(n) => self.bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if self.bytes.len() >= 1 << 20 {
                // Back to the caller, which checks the memory limit.
                return Ok(());
            }
        }
    }

    fn text(self) -> String {
        String::from_utf8(self.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// A started host command, in its own process group, waited for in the
/// calling thread: its output is read as it comes and counted against the
/// memory limit; its timeout, the run's timeout or cancellation and an
/// interrupt kill the whole group and end the call at once, whoever holds
/// the pipes. Once the command has exited, what it left running in the
/// background no longer holds the call up (after [`LINGER`]); it is
/// killed with the rest of the run's host processes when the script ends.
struct HostRun<'a> {
    argv: &'a [String],
    child: std::process::Child,
    timeout: Duration,
    limit: usize,
}

impl HostRun<'_> {
    fn finish(mut self, run: &Run) -> ScriptResult<Map> {
        let mut out = Capture::new(self.child.stdout.take());
        let mut err = Capture::new(self.child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
        loop {
            if let Some(r) = run.cancel().stop_reason() {
                self.kill();
                return Err(errors::terminated(r.kind(), r.message()));
            }
            if exited.is_none() {
                match self.child.try_wait() {
                    Ok(Some(s)) => exited = Some((s, Instant::now())),
                    Ok(None) => {}
                    Err(e) => {
                        self.kill();
                        return Err(errors::host(format!(
                            "run_host: waiting for {}: {e}",
                            self.argv[0]
                        )));
                    }
                }
            }
            let now = Instant::now();
            match exited {
                Some(_) if out.pipe.is_none() && err.pipe.is_none() => break,
                Some((_, at)) if now >= at + LINGER => break,
                _ => {}
            }
            if exited.is_none() && now >= deadline {
                self.kill();
                return Err(errors::timeout(
                    &format!("the host command {:?} to exit", self.argv),
                    self.timeout,
                ));
            }
            wait_readable(
                &[&out, &err],
                POLL.min(deadline.saturating_duration_since(now)),
            );
            for c in [&mut out, &mut err] {
                if let Err(e) = c.read_available() {
                    self.kill();
                    return Err(errors::host(format!(
                        "run_host: reading the output of {}: {e}",
                        self.argv[0]
                    )));
                }
            }
            if let Some(msg) = memory::exceeded(self.limit) {
                self.kill();
                return Err(errors::host(format!(
                    "run_host: {:?} was stopped after {} MiB of output: {msg}",
                    self.argv,
                    (out.bytes.len() + err.bytes.len()) >> 20
                )));
            }
        }
        let Some((status, _)) = exited else {
            unreachable!("the loop ends only once the command exited")
        };
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| -s))
            .unwrap_or(-1);
        let mut m = Map::new();
        m.insert("status".into(), INT::from(code).into());
        m.insert("stdout".into(), out.text().into());
        m.insert("stderr".into(), err.text().into());
        Ok(m)
    }

    /// SIGKILLs the command's process group and reaps the command. The
    /// group is signalled before the reaping, while its id cannot have
    /// been given to anyone else.
    fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Waits until one of the open pipes has something to read, or `d`.
fn wait_readable(captures: &[&Capture], d: Duration) {
    let mut fds: Vec<PollFd> = captures
        .iter()
        .filter_map(|c| c.pipe.as_ref())
        .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms = d.as_millis().clamp(1, 1000) as u16;
    if fds.is_empty() {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        return;
    }
    let _ = nix::poll::poll(&mut fds, ms);
}

/// The processes a run's `run_host` calls started, found again by the
/// mark in their environment ([`HOST_MARK_VAR`]) and by their process
/// groups: a command's background children and the daemons it left (a
/// QEMU started with `&` or `-daemonize`) are killed when the script ends,
/// when it is cancelled, or when vmscript exits without waiting for it.
#[derive(Debug)]
pub struct HostProcesses {
    mark: String,
    /// The process group of every command started, for reaping the
    /// orphans of each that died by themselves.
    groups: std::sync::Mutex<Vec<i32>>,
    /// The groups the [`Watchdog`] still kills should vmscript die: a
    /// command's group until it is found empty after its call, or until
    /// the script ends.
    watched: std::sync::Mutex<Vec<i32>>,
}

impl Default for HostProcesses {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HostProcesses {
            mark: format!("{}-{n}", std::process::id()),
            groups: Default::default(),
            watched: Default::default(),
        }
    }
}

impl HostProcesses {
    /// The value of [`HOST_MARK_VAR`] in the run's commands.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Records a command's group, and has the watchdog kill it should
    /// vmscript die: what the command leaves in it in the background has
    /// no parent-death signal. (Told here rather than by the command
    /// before its `exec`, which may fail after the telling, when the
    /// group's id is no longer the command's.)
    fn started(&self, pgid: i32) {
        lock(&self.groups).push(pgid);
        if let Some(w) = Watchdog::get() {
            w.watch(pgid);
            lock(&self.watched).push(pgid);
        }
    }

    /// After the call of the command that leads `pgid` (reaped by now):
    /// an empty group is forgotten by the watchdog at once, since its id
    /// is free for anyone; one with background processes stays watched.
    fn ended(&self, pgid: i32) {
        // No signal: only asks whether the group has a member.
        if killpg(Pid::from_raw(pgid), None).is_err() {
            self.forget(|g| g == pgid);
        }
    }

    /// Takes the watched groups that `which` selects off the watchdog.
    fn forget(&self, which: impl Fn(i32) -> bool) {
        let mut watched = lock(&self.watched);
        if watched.is_empty() {
            return;
        }
        let Some(w) = Watchdog::get() else {
            return watched.clear();
        };
        watched.retain(|&g| {
            let forget = which(g);
            if forget {
                w.forget(g);
            }
            !forget
        });
    }

    /// SIGKILLs every live process of the run's commands; with `reap`
    /// (the script has ended), also collects those that became vmscript's
    /// children (orphans adopted as subreaper), dead ones included, and
    /// takes the run's groups off the watchdog. Nothing to do, and no look
    /// at /proc, when the run never called `run_host`.
    pub fn kill_all(&self, reap: bool) {
        self.sweep(reap);
        if reap {
            self.forget(|_| true);
        }
    }

    fn sweep(&self, reap: bool) {
        let groups = lock(&self.groups).clone();
        if groups.is_empty() {
            return;
        }
        let me = std::process::id() as i32;
        let needle = format!("{HOST_MARK_VAR}={}", self.mark);
        // A process may fork while it is being killed: look again until
        // nothing marked is left (bounded, should one keep forking).
        for _ in 0..50 {
            let found = descendants(&needle, &groups, me);
            if found.is_empty() {
                return;
            }
            for p in &found {
                if p.alive {
                    // A process that carries our run's mark (or is our own
                    // child), seen just now.
                    let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                }
            }
            if !reap {
                return;
            }
            for p in found.iter().filter(|p| p.ppid == me) {
                // Reaps one process that is our child (adopted); no other
                // code waits for it.
                let _ = waitpid(Pid::from_raw(p.pid), None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A process of a run's commands.
struct Found {
    pid: i32,
    ppid: i32,
    alive: bool,
}

/// The live processes marked with `needle` in their environment, and our
/// own adopted children (dead or alive) in one of `groups` that are not
/// their group's leader (which its `run_host` call reaps itself).
fn descendants(needle: &str, groups: &[i32], me: i32) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name, which may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(ppid), Some(pgrp)) = (
            f.first(),
            f.get(1).and_then(|v| v.parse::<i32>().ok()),
            f.get(2).and_then(|v| v.parse::<i32>().ok()),
        ) else {
            continue;
        };
        let alive = !matches!(*state, "Z" | "X");
        let adopted = ppid == me && pgrp != pid && groups.contains(&pgrp);
        let marked = alive
            && std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()));
        if marked || adopted {
            out.push(Found { pid, ppid, alive });
        }
    }
    out
}
