//! The host helpers of the script API: assertions, `skip`, `log`, `sleep`,
//! files, JSON, `run_host`, `wait_until` and `param`.
//!
//! Each helper is a plain function over the [`Run`]; [`register`] lists
//! them. Everything that waits (`sleep`, `wait_until`, `run_host`) waits on
//! the run's cancellation token, so a timeout or a signal ends it at once.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, FLOAT, INT};

use super::args;
use super::convert;
use super::docs::func;
use super::errors::{self, ScriptResult};
use super::memory;
use super::run::Run;
use crate::machine::process::Watchdog;
use crate::sync::lock;

/// How often `wait_until` calls its closure by default.
const WAIT_UNTIL_INTERVAL: Duration = Duration::from_millis(100);
/// How often `run_host` looks at its child.
const POLL: Duration = Duration::from_millis(10);

/// Equality for `assert_eq`: by JSON value (1 == 1.0), else by type and
/// debug form for values without one.
pub fn values_equal(a: &Dynamic, b: &Dynamic) -> bool {
    match (convert::to_json(a), convert::to_json(b)) {
        (Ok(x), Ok(y)) => convert::json_eq(&x, &y),
        _ => a.type_name() == b.type_name() && format!("{a:?}") == format!("{b:?}"),
    }
}

/// Indents every line after the first, for values shown in messages.
fn indented(text: &str) -> String {
    text.replace('\n', "\n        ")
}

fn assert_eq(a: &Dynamic, b: &Dynamic, msg: Option<&str>) -> ScriptResult<()> {
    if values_equal(a, b) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  left: {}\n right: {}",
        msg.unwrap_or("assert_eq: the values differ"),
        indented(&convert::show(a)),
        indented(&convert::show(b)),
    )))
}

fn assert_ne(a: &Dynamic, b: &Dynamic, msg: Option<&str>) -> ScriptResult<()> {
    if !values_equal(a, b) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  left: {}\n right: {}",
        msg.unwrap_or("assert_ne: the values are equal"),
        indented(&convert::show(a)),
        indented(&convert::show(b)),
    )))
}

fn assert_match(text: &str, re: &str, msg: Option<&str>) -> ScriptResult<()> {
    let regex = regex::Regex::new(re)
        .map_err(|e| errors::host(format!("assert_match: invalid regex {re:?}: {e}")))?;
    if regex.is_match(text) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  regex: {re:?}\n   text: {}",
        msg.unwrap_or("assert_match: the text does not match"),
        indented(&convert::show(&text.into())),
    )))
}

/// The text of a message argument: a string as is, anything else shown.
fn text_of(v: &Dynamic) -> String {
    match v.read_lock::<rhai::ImmutableString>() {
        Some(s) => s.to_string(),
        None => convert::show(v),
    }
}

/// `run_host`'s options.
struct HostCommand {
    argv: Vec<String>,
    timeout: Duration,
    cwd: Option<String>,
    env: Vec<(String, String)>,
}

impl HostCommand {
    fn new(run: &Run, argv: Array, options: &Map) -> ScriptResult<HostCommand> {
        args::known_keys(options, &["timeout", "cwd", "env"], "run_host()")?;
        let argv = args::strings(&Dynamic::from_array(argv), "run_host argv")?;
        if argv.is_empty() {
            return Err(errors::host("run_host: argv is empty"));
        }
        let timeout = match options.get("timeout") {
            Some(t) => args::secs(t, "timeout")?,
            None => run.remaining(),
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
    fn run(self, run: &Run) -> ScriptResult<Map> {
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

/// `read_file`: read in chunks, each checked against the memory limit
/// and the run's cancellation, so that an endless file (`/dev/zero`) ends
/// with an error naming it instead of taking the host's memory.
fn read_file(run: &Run, path: &str) -> ScriptResult<String> {
    let fail = |e: std::io::Error| errors::host(format!("read_file: {path}: {e}"));
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let limit = memory::limit();
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        // Before the end too: cancelling kills the writer of a pipe.
        if let Some(r) = run.cancel().stop_reason() {
            return Err(errors::terminated(r.kind(), r.message()));
        }
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(msg) = memory::exceeded(limit) {
            return Err(errors::host(format!(
                "read_file: {path}: stopped after {} MiB: {msg}",
                bytes.len() >> 20
            )));
        }
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// How deeply arrays and maps may nest in JSON text: what `parse_json`
/// (serde_json's recursion limit) reads back.
pub const MAX_JSON_DEPTH: usize = 127;

/// How deeply arrays and objects nest in `v` (a scalar is 0), counted
/// without recursion.
fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// `to_json`'s text: refused when `parse_json` could not read it back.
fn json_text(v: &serde_json::Value) -> ScriptResult<String> {
    let depth = json_depth(v);
    if depth > MAX_JSON_DEPTH {
        return Err(errors::host(format!(
            "to_json: the value nests arrays and maps {depth} levels deep; JSON text is limited to {MAX_JSON_DEPTH} levels (what parse_json reads)"
        )));
    }
    Ok(v.to_string())
}

/// Calls `f` until it returns true, sleeping `interval` in between.
fn wait_until(
    run: &Run,
    ctx: &NativeCallContext,
    f: &FnPtr,
    timeout: Duration,
    interval: Duration,
) -> ScriptResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let v: Dynamic = f.call_within_context(ctx, ())?;
        match v.as_bool() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) if v.is_unit() => {}
            Err(_) => {
                return Err(errors::bad_type(
                    "wait_until's function result",
                    "a bool",
                    &v,
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let what = match f.fn_name() {
                n if n.starts_with("anon$") => "wait_until's condition".to_string(),
                n => format!("wait_until's condition {n}"),
            };
            return Err(errors::timeout(&what, timeout));
        }
        run.sleep(interval.min(left))?;
    }
}

fn now() -> FLOAT {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Registers the host helpers.
pub fn register(e: &mut Engine) {
    register_assertions(e);
    register_files(e);
    register_processes(e);
}

fn register_assertions(e: &mut Engine) {
    func(
        "assert(cond: bool)",
        "Fails with AssertionFailed unless `cond` is true.",
    )
    .register_into_engine(e, |c: bool| {
        if c {
            Ok(())
        } else {
            Err(errors::assertion("assertion failed"))
        }
    });
    func(
        "assert(cond: bool, msg: String)",
        "Fails with AssertionFailed and `msg` unless `cond` is true.",
    )
    .register_into_engine(e, |c: bool, m: Dynamic| {
        if c {
            Ok(())
        } else {
            Err(errors::assertion(text_of(&m)))
        }
    });
    func(
        "assert_eq(left: any, right: any)",
        "Fails unless the values are equal (1 == 1.0); shows both, maps as JSON.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic| assert_eq(&a, &b, None));
    func(
        "assert_eq(left: any, right: any, msg: String)",
        "assert_eq with a message.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic, m: Dynamic| {
        assert_eq(&a, &b, Some(&text_of(&m)))
    });
    func(
        "assert_ne(left: any, right: any)",
        "Fails when the values are equal.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic| assert_ne(&a, &b, None));
    func(
        "assert_ne(left: any, right: any, msg: String)",
        "assert_ne with a message.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic, m: Dynamic| {
        assert_ne(&a, &b, Some(&text_of(&m)))
    });
    func(
        "assert_match(text: String, regex: String)",
        "Fails unless `regex` matches somewhere in `text`.",
    )
    .register_into_engine(e, |t: &str, re: &str| assert_match(t, re, None));
    func(
        "assert_match(text: String, regex: String, msg: String)",
        "assert_match with a message.",
    )
    .register_into_engine(e, |t: &str, re: &str, m: Dynamic| {
        assert_match(t, re, Some(&text_of(&m)))
    });
    func(
        "fail(msg: String)",
        "Fails the test with AssertionFailed and `msg`.",
    )
    .register_into_engine(e, |m: Dynamic| -> ScriptResult<()> {
        Err(errors::assertion(text_of(&m)))
    });
    func(
        "skip(reason: String)",
        "Ends the test as skipped (cannot be caught).",
    )
    .register_into_engine(e, |m: Dynamic| -> ScriptResult<()> {
        Err(errors::skipped(&text_of(&m)))
    });
    func(
        "log(msg: String)",
        "Writes a timestamped line to the test's log (shown when it fails).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, m: &str| {
        Run::of(&ctx).map(|r| r.log(m))
    });
    func("log(msg: Map)", "Logs a map as JSON.")
        .register_into_engine(e, |ctx: NativeCallContext, m: Map| {
            Run::of(&ctx).map(|r| r.log(&convert::show(&m.into())))
        });
    func(
        "param(key: String) -> String",
        "The value of KEY=VALUE given after `--` on the command line, or ().",
    )
    .register_into_engine(e, |ctx: NativeCallContext, k: &str| {
        Run::of(&ctx).map(|r| r.param(k).map_or(Dynamic::UNIT, |v| v.to_string().into()))
    });
    func(
        "param(key: String, default: any) -> any",
        "The value of KEY=VALUE, or `default`.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, k: &str, d: Dynamic| {
        Run::of(&ctx).map(|r| r.param(k).map_or(d, |v| v.to_string().into()))
    });
}

fn register_files(e: &mut Engine) {
    func(
        "env(name: String) -> String",
        "An environment variable, or ().",
    )
    .register_into_engine(e, |n: &str| {
        std::env::var(n).map_or(Dynamic::UNIT, Dynamic::from)
    });
    func(
        "temp_dir() -> String",
        "The test's own temp dir, removed when it ends.",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        Run::of(&ctx).map(|r| r.temp_dir().display().to_string())
    });
    func(
        "read_file(path: String) -> String",
        "A file's contents (lossy UTF-8).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, p: &str| {
        read_file(&*Run::of(&ctx)?, p)
    });
    func(
        "write_file(path: String, text: String)",
        "Writes `text` to a file as UTF-8, replacing it (\"\\xff\" is ÿ, two bytes: write_blob writes raw bytes).",
    )
    .register_into_engine(e, |p: &str, t: &str| {
        std::fs::write(p, t).map_err(|e| errors::host(format!("write_file: {p}: {e}")))
    });
    func(
        "read_blob(path: String) -> Blob",
        "A file's contents as bytes.",
    )
    .register_into_engine(e, |p: &str| {
        std::fs::read(p).map_err(|e| errors::host(format!("read_blob: {p}: {e}")))
    });
    func(
        "write_blob(path: String, bytes: Blob)",
        "Writes bytes to a file, replacing it.",
    )
    .register_into_engine(e, |p: &str, b: rhai::Blob| {
        std::fs::write(p, b).map_err(|e| errors::host(format!("write_blob: {p}: {e}")))
    });
    func(
        "join(items: Array, separator: String) -> String",
        "The items as text (strings as they are, others as print shows them), separated by `separator`.",
    )
    .register_into_engine(e, |a: rhai::Array, sep: &str| {
        a.iter()
            .map(|v| match v.clone().into_immutable_string() {
                Ok(s) => s.to_string(),
                Err(_) => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join(sep)
    });
    func(
        "file_exists(path: String) -> bool",
        "Whether the path exists.",
    )
    .register_into_engine(e, |p: &str| std::path::Path::new(p).exists());
    func("now() -> float", "Seconds since the Unix epoch.").register_into_engine(e, now);
    func(
        "timeout_multiplier() -> float",
        "The factor the run scales every timeout by (`--timeout-multiplier`, \
         `$VMSCRIPT_TIMEOUT_MULTIPLIER`; 1 by default). The API's waits are \
         scaled already; a script that keeps its own deadline with `now()` \
         multiplies it by this.",
    )
    .register_into_engine(e, super::args::timeout_multiplier);
    let to_json = |v: &Dynamic| {
        convert::to_json(v)
            .map_err(|m| errors::host(format!("to_json: {m}")))
            .and_then(|j| json_text(&j))
    };
    // Typed for maps and arrays, so that they are chosen over Rhai's own.
    func(
        "to_json(value: Map) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Map| to_json(&v.into()));
    func(
        "to_json(value: Array) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Array| to_json(&v.into()));
    func(
        "to_json(value: any) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Dynamic| to_json(&v));
    func(
        "parse_json(text: String) -> any",
        "A JSON text as a value (maps, arrays, INT, FLOAT, …).",
    )
    .register_into_engine(e, |t: &str| {
        serde_json::from_str::<serde_json::Value>(t)
            .map(|v| convert::from_json(&v))
            .map_err(|m| errors::host(format!("parse_json: {m}")))
    });
}

fn register_processes(e: &mut Engine) {
    // Typed, so that they are chosen over Rhai's own (blocking) sleep.
    func(
        "sleep(secs: int)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, s: INT| {
        Run::of(&ctx)?.sleep(args::plain_secs(&s.into(), "sleep")?)
    });
    func(
        "sleep(secs: float)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, s: FLOAT| {
        Run::of(&ctx)?.sleep(args::plain_secs(&s.into(), "sleep")?)
    });
    func(
        "run_host(argv: Array) -> Map",
        "Runs a host command (no shell); returns #{status, stdout, stderr} once it exits. What it leaves running in the background is killed when the test ends.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, a: Array| {
        let r = Run::of(&ctx)?;
        HostCommand::new(&r, a, &Map::new())?.run(&r)
    });
    func(
        "run_host(argv: Array, options: Map) -> Map",
        "run_host with #{timeout: secs, cwd: String, env: Map}.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, a: Array, o: Map| {
        let r = Run::of(&ctx)?;
        HostCommand::new(&r, a, &o)?.run(&r)
    });
    func(
        "wait_until(f: FnPtr, timeout: secs)",
        "Calls `f` every 0.1s until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, f: FnPtr, t: Dynamic| {
        wait_until(
            &*Run::of(&ctx)?,
            &ctx,
            &f,
            args::secs(&t, "timeout")?,
            WAIT_UNTIL_INTERVAL,
        )
    });
    func(
        "wait_until(f: FnPtr, timeout: secs, interval: secs)",
        "Calls `f` every `interval` until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, f: FnPtr, t: Dynamic, i: Dynamic| {
            wait_until(
                &*Run::of(&ctx)?,
                &ctx,
                &f,
                args::secs(&t, "timeout")?,
                args::plain_secs(&i, "interval")?,
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_json_writes_only_what_parse_json_reads() {
        let nested = |n: usize| {
            let mut v = serde_json::json!(1);
            for _ in 0..n {
                v = serde_json::json!([v]);
            }
            v
        };
        let text = json_text(&nested(MAX_JSON_DEPTH)).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        let deeper = nested(MAX_JSON_DEPTH + 1);
        assert!(serde_json::from_str::<serde_json::Value>(&deeper.to_string()).is_err());
        let err = json_text(&deeper).unwrap_err().to_string();
        assert!(err.contains("128 levels deep"), "{err}");
        assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(json_depth(&serde_json::json!("x")), 0);
    }

    #[test]
    fn equality_is_by_value() {
        let m = |j: serde_json::Value| convert::from_json(&j);
        assert!(values_equal(
            &Dynamic::from_int(1),
            &Dynamic::from_float(1.0)
        ));
        assert!(values_equal(
            &m(serde_json::json!({"a": [1]})),
            &m(serde_json::json!({"a": [1]}))
        ));
        assert!(!values_equal(&Dynamic::from("1"), &Dynamic::from_int(1)));
    }

    #[test]
    fn assertion_messages_show_both_sides() {
        let err = assert_eq(&Dynamic::from_int(1), &Dynamic::from("1"), None).unwrap_err();
        let (kind, msg, _) = match *err {
            rhai::EvalAltResult::ErrorRuntime(v, _) => errors::thrown_kind_and_message(&v),
            e => panic!("{e}"),
        };
        assert_eq!(kind, "AssertionFailed");
        assert!(
            msg.contains("left: 1") && msg.contains("right: \"1\""),
            "{msg}"
        );
    }
}
