//! The host's end of the guest agent (`scripts/guest-agent.sh`): commands
//! and files carried on a virtio-serial port of their own, so that nothing
//! of it passes through the serial console.
//!
//! QEMU gets one end of a socketpair as the port's chardev; an [`Agent`]
//! holds the other for the machine's whole run. Requests go one at a time,
//! each a line perhaps followed by as many bytes as it announces, and so
//! does each reply (the protocol is in the agent's header). A request that
//! failed half-way leaves the stream somewhere unknown: the next one first
//! sends `sync NONCE` and skips everything up to its echo.
//!
//! Every wait on the port (a reply, room to write) can be interrupted
//! from another thread ([`Agent::interrupter`]): Ctrl-C in the REPL and a
//! test's timeout end a long `run` at once. The request is then abandoned
//! as a failed one is; the guest finishes it on its own.
//!
//! Knows nothing of the machine around it, nor of scripts; the machine
//! adds the port to QEMU's command line (`args.rs`) and hands out the
//! [`Agent`].

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{Error, Result};
use crate::sync::{is_ready, lock, poll_until, Interrupter, Interruptible, Look, Stop, Waitable};

/// The port's name, which the agent looks for.
pub const PORT_NAME: &str = "org.vmscript.agent";

/// How long a guest that has the port may take to answer its first sync
/// before it counts as one without the agent.
const FIRST_SYNC: Duration = Duration::from_secs(5);
/// How long a later sync may take: the agent may still be finishing what
/// an abandoned request started.
const RESYNC: Duration = Duration::from_secs(30);
/// How long the guest may leave a reply (or a copy) without progress
/// beyond a command's own time.
const SLACK: Duration = Duration::from_secs(30);
/// Copies move in pieces this big.
const CHUNK: usize = 1 << 20;

/// What a command in the guest did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub status: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A handle on a machine's agent; clones share the one connection.
#[derive(Debug, Clone)]
pub struct Agent {
    conn: Arc<Mutex<Conn>>,
    bell: Arc<Bell>,
}

#[derive(Debug)]
struct Conn {
    /// The socket, nonblocking: waits happen in [`Conn::wait_port`].
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    state: Sync,
    nonce: u64,
    /// Until when the guest may be busy with the last `run`: a resync
    /// after an abandoned one waits for it to end there.
    busy_until: Instant,
    /// Bytes of a request's payload that the agent still waits for: one
    /// abandoned while sending (a copy interrupted) is completed with
    /// zeros before the next sync, which the agent then reads as a
    /// request. Not used for a `run`'s command, which no padding can
    /// make harmless (and which is small enough never to wait).
    owed: u64,
    bell: Arc<Bell>,
}

/// What ends a wait on the port besides the port: an interrupt, which
/// also pokes `wake` so that the waiter leaves `poll`.
struct Bell {
    waits: Waitable<()>,
    wake: EventFd,
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell").finish_non_exhaustive()
    }
}

impl Interruptible for Bell {
    fn interrupt(&self) {
        self.waits.interrupt();
        // A full counter (EAGAIN) already means "wake up".
        let _ = self.wake.write(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sync {
    /// Never asked: whether the guest runs the agent is unknown.
    Unknown,
    /// The stream is at a request's start.
    InStep,
    /// A request failed half-way; sync before the next.
    Lost,
    /// The guest did not answer the first sync: it has no agent.
    Absent,
}

impl Agent {
    /// The agent on `stream`, our end of the port's chardev.
    pub fn new(stream: UnixStream) -> std::io::Result<Agent> {
        stream.set_nonblocking(true)?;
        let reader = BufReader::with_capacity(CHUNK, stream.try_clone()?);
        let bell = Arc::new(Bell {
            waits: Waitable::new(()),
            wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        });
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(Agent {
            conn: Arc::new(Mutex::new(Conn {
                writer: stream,
                reader,
                state: Sync::Unknown,
                nonce,
                busy_until: Instant::now(),
                owed: 0,
                bell: bell.clone(),
            })),
            bell,
        })
    }

    /// A handle that ends the wait in progress (a reply, room to write)
    /// from any thread with [`Error::Interrupted`]; the request is
    /// abandoned, and the next one first brings the stream back in step.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter::new(&self.bell)
    }

    /// Whether the guest answers on the port: the first call waits a few
    /// seconds for it, later ones know. `false` means the guest has no
    /// agent (use the console instead).
    pub fn available(&self) -> Result<bool> {
        let mut c = lock(&self.conn);
        c.ready()
    }

    /// Runs `cmd` with `sh -c` in the guest, with stdin `/dev/null`, in a
    /// process group of its own that is killed when it takes longer than
    /// `timeout` ([`Error::Timeout`], with what it wrote so far). More than
    /// `max` bytes of output is an error.
    pub fn run(&self, cmd: &str, timeout: Duration, max: u64) -> Result<RunOutput> {
        let what = format!("running `{cmd}` in the guest");
        let mut c = lock(&self.conn);
        c.require(&what)?;
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let busy_until = Instant::now() + Duration::from_secs(secs);
        let deadline = busy_until + SLACK;
        c.state = Sync::Lost;
        c.busy_until = busy_until;
        // An interrupted command is not killed: the guest ends it at its
        // timeout, and the next request waits for that.
        let goes_on = interrupted_leaves(format!("it runs on there until its timeout, {secs}s"));
        c.send(
            format!("run {secs} {max} {}\n", cmd.len()).as_bytes(),
            &what,
        )
        .map_err(&goes_on)?;
        c.send(cmd.as_bytes(), &what).map_err(&goes_on)?;
        let reply = c.line(deadline, &what).map_err(&goes_on)?;
        let f: Vec<&str> = reply.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<i64>().ok());
        let (Some("ran"), Some(status), Some(timed_out), Some(out), Some(err), Some(sent)) =
            (f.first().copied(), num(1), num(2), num(3), num(4), num(5))
        else {
            return Err(c.protocol(&what, &reply));
        };
        if sent != 1 {
            c.state = Sync::InStep;
            return Err(Error::host(
                what,
                format!(
                    "it wrote {} bytes (stdout {out}, stderr {err}), more than the {max} allowed",
                    out + err
                ),
            ));
        }
        let stdout = c.bytes(out as usize, deadline, &what)?;
        let stderr = c.bytes(err as usize, deadline, &what)?;
        c.state = Sync::InStep;
        if timed_out == 1 {
            let mut seen = String::from_utf8_lossy(&stdout).into_owned();
            seen.push_str(&String::from_utf8_lossy(&stderr));
            return Err(Error::Timeout {
                what: format!("`{cmd}` in the guest (killed there, with its process group)"),
                after: timeout,
                seen: if seen.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("{:?}", super::tail::last_bytes(&seen, 2000))]
                },
            });
        }
        Ok(RunOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Copies the host file `from` to `to` in the guest, byte for byte.
    pub fn copy_to(&self, from: &Path, to: &str) -> Result<()> {
        let what = format!("copying {} to {to} in the guest", from.display());
        check_guest_path(to, &what)?;
        let mut file = File::open(from).map_err(|e| Error::host(&what, e))?;
        let meta = file.metadata().map_err(|e| Error::host(&what, e))?;
        if meta.is_dir() {
            return Err(Error::host(
                what,
                "it is a folder; copy its files one by one",
            ));
        }
        let size = meta.len();
        let mut c = lock(&self.conn);
        c.require(&what)?;
        c.state = Sync::Lost;
        c.send(format!("put {size} {}\n", to.len()).as_bytes(), &what)?;
        c.owed = to.len() as u64 + size;
        let zeros = interrupted_leaves("the rest of the guest's file becomes zeros".into());
        c.send(to.as_bytes(), &what).map_err(&zeros)?;
        // Exactly `size` bytes go, whatever happens to the file meanwhile:
        // the agent reads that many before it answers.
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        let mut read_error = None;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = if read_error.is_some() {
                buf[..want].fill(0);
                want
            } else {
                match file.read(&mut buf[..want]) {
                    Ok(0) => {
                        read_error = Some(format!("{} shrank while it was copied", from.display()));
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        read_error = Some(e.to_string());
                        continue;
                    }
                }
            };
            c.send(&buf[..n], &what).map_err(&zeros)?;
            left -= n as u64;
        }
        let reply = c.line(Instant::now() + SLACK, &what)?;
        c.state = Sync::InStep;
        if let Some(e) = read_error {
            return Err(Error::host(what, e));
        }
        match reply.split_once(' ') {
            _ if reply == "ok" => Ok(()),
            Some(("err", msg)) => Err(Error::host(what, msg)),
            _ => Err(c.protocol(&what, &reply)),
        }
    }

    /// Copies the guest file `from` to the host file `to`, byte for byte.
    pub fn copy_from(&self, from: &str, to: &Path) -> Result<()> {
        let what = format!("copying {from} in the guest to {}", to.display());
        check_guest_path(from, &what)?;
        let mut c = lock(&self.conn);
        c.require(&what)?;
        c.state = Sync::Lost;
        c.send(format!("get {}\n", from.len()).as_bytes(), &what)?;
        c.owed = from.len() as u64;
        c.send(from.as_bytes(), &what)?;
        let reply = c.line(Instant::now() + SLACK, &what)?;
        let size = match reply.split_once(' ') {
            Some(("data", n)) => match n.parse::<u64>() {
                Ok(n) => n,
                Err(_) => return Err(c.protocol(&what, &reply)),
            },
            Some(("err", msg)) => {
                c.state = Sync::InStep;
                return Err(Error::host(what, msg));
            }
            _ => return Err(c.protocol(&what, &reply)),
        };
        // The bytes are read off the port even when the file cannot be
        // written, so that the stream stays in step.
        let mut file = File::create(to).map_err(|e| (e, true));
        let mut write_error = None;
        let mut left = size;
        while left > 0 {
            let deadline = Instant::now() + SLACK;
            let want = left.min(CHUNK as u64) as usize;
            let got = c.some(want, deadline, &what)?;
            if let Ok(f) = &mut file {
                if let Err(e) = f.write_all(got) {
                    write_error.get_or_insert(e.to_string());
                }
            }
            let n = got.len();
            c.reader.consume(n);
            left -= n as u64;
        }
        c.state = Sync::InStep;
        match (file, write_error) {
            (Err((e, _)), _) => Err(Error::host(what, e)),
            (_, Some(e)) => Err(Error::host(what, e)),
            (Ok(_), None) => Ok(()),
        }
    }
}

/// Adds to an interrupt's error what the abandoned request leaves behind
/// in the guest; other errors pass as they are.
fn interrupted_leaves(behind: String) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Interrupted { what } => Error::Interrupted {
            what: format!("{what} ({behind})"),
        },
        e => e,
    }
}

/// A guest path the protocol can carry.
fn check_guest_path(path: &str, what: &str) -> Result<()> {
    if path.is_empty() || path.contains('\n') || path.contains('\0') {
        return Err(Error::host(
            what,
            format!(
                "{path:?} is not a guest path this copy can name (empty, or with a newline or NUL)"
            ),
        ));
    }
    Ok(())
}

impl Conn {
    /// Whether the agent answers, syncing the stream first when needed.
    fn ready(&mut self) -> Result<bool> {
        let deadline = match self.state {
            Sync::InStep => return Ok(true),
            Sync::Absent => return Ok(false),
            Sync::Unknown => Instant::now() + FIRST_SYNC,
            Sync::Lost => self.busy_until.max(Instant::now()) + RESYNC,
        };
        self.nonce = self
            .nonce
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let token = format!("sync {:016x}", self.nonce);
        let what = "waiting for the guest agent to answer";
        self.pay_owed(what)?;
        self.send(format!("{token}\n").as_bytes(), what)?;
        // Whatever an abandoned request left comes first: skip it. Its
        // last bytes may lack a newline, so the echo ends a line.
        loop {
            match self.line(deadline, what) {
                Ok(l) if l.ends_with(&token) => {
                    self.state = Sync::InStep;
                    return Ok(true);
                }
                Ok(_) => {}
                Err(Error::Timeout { .. }) if self.state == Sync::Unknown => {
                    self.state = Sync::Absent;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Like `ready`, but a guest without the agent is an error.
    fn require(&mut self, what: &str) -> Result<()> {
        if self.ready()? {
            Ok(())
        } else {
            Err(Error::host(
                what,
                format!("the guest agent did not answer on the {PORT_NAME} port; is scripts/guest-agent.sh running in the guest?"),
            ))
        }
    }

    /// Writes all of `bytes`, waiting up to [`SLACK`] at a time for the
    /// guest to take more; what goes pays off [`Conn::owed`] first.
    fn send(&mut self, mut bytes: &[u8], what: &str) -> Result<()> {
        let mut deadline = Instant::now() + SLACK;
        while !bytes.is_empty() {
            match self.writer.write(bytes) {
                Ok(0) => return Err(Error::host(what, "the guest agent's port closed")),
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.owed = self.owed.saturating_sub(n as u64);
                    deadline = Instant::now() + SLACK;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.wait_port(PollFlags::POLLOUT, deadline, what)?;
                }
                Err(e) => return Err(Error::host(what, e)),
            }
        }
        Ok(())
    }

    /// Sends the zeros that complete an abandoned payload ([`Conn::owed`]).
    fn pay_owed(&mut self, what: &str) -> Result<()> {
        let zeros = vec![0u8; CHUNK.min(self.owed as usize)];
        while self.owed > 0 {
            let n = self.owed.min(zeros.len() as u64) as usize;
            self.send(&zeros[..n], what)?;
        }
        Ok(())
    }

    /// One line of reply, without its newline. Of a line past 64 KiB
    /// (not the agent's) the end is kept: where an abandoned command's
    /// output did not end in a newline, a sync's echo follows it on the
    /// same line.
    fn line(&mut self, deadline: Instant, what: &str) -> Result<String> {
        const KEEP: usize = 64 << 10;
        let mut line = Vec::new();
        loop {
            let buf = self.some(KEEP, deadline, what)?;
            let (part, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            line.extend_from_slice(part);
            let used = end.unwrap_or(part.len());
            self.reader.consume(used);
            if line.len() > KEEP {
                line.drain(..line.len() - KEEP);
            }
            if end.is_some() {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }

    /// Exactly `n` bytes of reply.
    fn bytes(&mut self, n: usize, deadline: Instant, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let buf = self.some(n - out.len(), deadline, what)?;
            let k = buf.len();
            out.extend_from_slice(buf);
            self.reader.consume(k);
        }
        Ok(out)
    }

    /// Up to `max` (at least one) buffered bytes, waiting until `deadline`
    /// for some; the caller consumes what it used.
    fn some(&mut self, max: usize, deadline: Instant, what: &str) -> Result<&[u8]> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => {
                    return Err(Error::host(
                        what,
                        "the guest agent's port closed (QEMU exited?)",
                    ))
                }
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.wait_port(PollFlags::POLLIN, deadline, what)?;
                }
                Err(e) => return Err(Error::host(what, e)),
            }
        }
        let buf = self.reader.buffer();
        Ok(&buf[..buf.len().min(max)])
    }

    /// Waits until the port is ready for `flags` (or has hung up, which
    /// the next read or write reports), until `deadline`
    /// ([`Error::Timeout`]) or an interrupt ([`Error::Interrupted`]).
    fn wait_port(&self, flags: PollFlags, deadline: Instant, what: &str) -> Result<()> {
        let ready = Cell::new(None);
        let looked = self.bell.waits.wait_until_with(
            Some(deadline),
            |_, _| ready.take().map_or(Look::NotYet, Look::Done),
            |parked, until| {
                let waits = parked.waitable();
                // An interrupt takes the lock: not held in `poll`.
                drop(parked);
                ready.set(self.poll_port(flags, until, what));
                waits.lock()
            },
        );
        match looked {
            Ok(r) => r,
            Err(stopped) => Err(match stopped.why {
                Stop::Deadline => Error::Timeout {
                    what: what.to_string(),
                    after: SLACK,
                    seen: Vec::new(),
                },
                Stop::Interrupted => Error::Interrupted {
                    what: what.to_string(),
                },
            }),
        }
    }

    /// One `poll` of the port and the bell, until `until`: `Some` when
    /// the port is ready (or polling failed), `None` when the bell rang or
    /// the time ran out.
    fn poll_port(
        &self,
        flags: PollFlags,
        until: Option<Instant>,
        what: &str,
    ) -> Option<Result<()>> {
        let mut fds = [
            PollFd::new(self.writer.as_fd(), flags),
            PollFd::new(self.bell.wake.as_fd(), PollFlags::POLLIN),
        ];
        if let Err(e) = poll_until(&mut fds, until) {
            return Some(Err(Error::host(what, e)));
        }
        if is_ready(&fds[1]) {
            // Resets the counter; nonblocking, so it never waits.
            let _ = self.bell.wake.read();
        }
        is_ready(&fds[0]).then_some(Ok(()))
    }

    fn protocol(&self, what: &str, reply: &str) -> Error {
        Error::host(
            what,
            format!(
                "the guest agent answered {:?}, which this vmscript does not understand",
                super::tail::last_bytes(reply, 200)
            ),
        )
    }
}

#[cfg(test)]
mod tests;
