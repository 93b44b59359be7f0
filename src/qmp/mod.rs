//! The QMP wire protocol on one socket; knows nothing of QEMU processes.
//!
//! A [`Client`] owns a connected stream (a unix socket, a socketpair end or
//! TCP). There is no reader thread: a thread that waits (for a reply, an
//! event, the greeting, the hang-up) reads the socket itself, so QEMU's
//! reply wakes the very thread that wants it, as in a plain blocking
//! client. When several threads wait at once, one reads for all (it holds
//! the read side) and files what comes: replies for their callers, events
//! in an ordered queue; the others sleep on a condition variable and one of
//! them takes over when the reader's wait ends. Calls that only look at the
//! queue first read whatever has already arrived, without waiting. Nothing
//! is ever dropped and nothing busy-polls. Between waits nobody reads:
//! QEMU keeps its output until asked, as it does for any QMP client.
//!
//! Commands go out as compact JSON (QEMU 7.2 reads its monitor input one
//! byte per main-loop pass, so every byte costs about 2 µs), each with a
//! numeric `id` of its own, and a reply is given only to the command whose
//! `id` it carries; the `id` is taken off again before the caller sees the
//! reply. A reply without a known `id` answers nothing we are waiting for:
//! QEMU sends such replies for input it could not parse (about 1030 of
//! them for an argument nested deeper than its limit), and a broken peer
//! may send one unasked. Such stray replies are a desync: the command in
//! progress (or the next one, if none is) fails with [`Error::Desync`],
//! after a check command (`query-version` with an `id` of its own) has
//! come back, so that every stray reply sent before it has been read and
//! the next command starts in step. Replies to commands that timed out or
//! were interrupted are recognised by their `id` and dropped.
//!
//! Start reading at [`Client::new`] and [`Client::execute`].

mod reader;
mod wire;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::{Map, Value};

pub use crate::sync::Interrupter;
pub use reader::Limits;
pub use wire::{command_bytes, Direction};

use crate::sync::{lock, Guard, Interruptible, Look, Stop, Waitable};

/// Where a QMP server is, or where we listen for QEMU to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP host and port.
    Tcp(String, u16),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl Address {
    /// Parses `host:port` as TCP and anything else as a unix socket path.
    pub fn parse(text: &str) -> Address {
        if let Some((host, port)) = text.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                if !host.contains('/') {
                    return Address::Tcp(host.trim_matches(['[', ']']).to_string(), port);
                }
            }
        }
        Address::Unix(PathBuf::from(text))
    }
}

/// A connected stream: the transports QMP runs over.
#[derive(Debug)]
pub enum Stream {
    /// A unix socket or one end of a socketpair.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(bytes),
            Stream::Tcp(s) => s.write_all(bytes),
        }
    }

    fn shutdown(&self) {
        // Errors mean the peer is already gone, which is what we want.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

/// What went wrong talking QMP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The peer hung up (EOF or ECONNRESET).
    #[error("QMP connection closed while {what}")]
    Closed { what: String },
    /// Nothing arrived in time.
    #[error("timed out after {after:?} {what}")]
    Timeout { what: String, after: Duration },
    /// The peer sent something that is not a QMP message.
    #[error("malformed QMP message: {detail}")]
    Malformed { detail: String },
    /// A line longer than the reader accepts.
    #[error("QMP message longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// Replies that answer no command arrived (see the module
    /// documentation); the connection is back in step.
    #[error("QMP replies out of step while {what}: {count} {replies} matching no command we sent arrived, the first: {first}; {outcome}", replies = if *.count == 1 { "reply" } else { "replies" })]
    Desync {
        what: String,
        count: usize,
        /// The first stray reply, shortened.
        first: String,
        /// What became of the command's own reply.
        outcome: String,
    },
    /// More events queued than the documented cap.
    #[error("more than {limit} QMP events queued unread")]
    EventQueueFull { limit: usize },
    /// The queued events take more memory than the documented cap.
    #[error("the {count} QMP events queued unread take more than {limit_mib} MiB of memory; the monitor was closed (read or clear events while a machine sends many)")]
    EventQueueTooBig { limit_mib: usize, count: usize },
    /// The server's greeting did not offer what we need.
    #[error("unexpected QMP greeting: {detail}")]
    Greeting { detail: String },
    /// The command was answered with an error.
    #[error("{class}: {desc}")]
    Response {
        class: String,
        desc: String,
        reply: Box<Value>,
    },
    /// An operating system error on the socket.
    #[error("QMP socket error while {what}: {message}")]
    Io { what: String, message: String },
    /// The operation needs a unix socket.
    #[error("{what} needs a unix socket monitor, not TCP")]
    NotUnix { what: String },
    /// [`Interrupter::interrupt`] woke the wait; the connection is intact.
    #[error("interrupted while {what}")]
    Interrupted { what: String },
}

impl Error {
    fn io(what: &str, err: std::io::Error) -> Error {
        Error::Io {
            what: what.to_string(),
            message: err.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A callback that sees every message sent and received, for transcripts.
pub type Observer = Arc<dyn Fn(Direction, &[u8]) + Send + Sync>;

/// How many stray replies are kept to describe a desync.
const STRAYS_KEPT: usize = 1;

#[derive(Default)]
struct State {
    /// Replies to the commands in `expected`, by `id`.
    replies: std::collections::HashMap<u64, Value>,
    /// The ids of the commands sent whose replies are awaited.
    expected: std::collections::HashSet<u64>,
    /// The ids of the commands whose callers gave up waiting: their
    /// replies are dropped when they come.
    orphans: std::collections::HashSet<u64>,
    /// Replies with no known id not yet reported ([`Error::Desync`]): how
    /// many, and the first ones.
    stray_count: usize,
    strays: Vec<Value>,
    /// The last id used.
    last_id: u64,
    events: std::collections::VecDeque<Value>,
    /// What the queued events take, as [`reader::footprint`] estimates.
    event_bytes: usize,
    greeting: Option<Value>,
    /// Why the connection ended, once it has.
    ended: Option<Error>,
    /// A thread holds the read side and is reading for everyone.
    reading: bool,
}

struct Shared {
    state: Waitable<State>,
    /// Locked only by the thread whose `reading` flag is set.
    read: Mutex<reader::ReadSide>,
    /// Wakes the thread waiting in `poll` (interrupts).
    wake: EventFd,
}

impl State {
    /// Files a reply that answers no command we wait for.
    fn stray(&mut self, reply: Value) {
        self.stray_count += 1;
        if self.strays.len() < STRAYS_KEPT {
            self.strays.push(reply);
        }
    }

    /// Removes the `i`th queued event.
    fn remove_event(&mut self, i: usize) -> Option<Value> {
        let ev = self.events.remove(i)?;
        self.event_bytes = self.event_bytes.saturating_sub(reader::footprint(&ev));
        Some(ev)
    }

    /// Removes every queued event.
    fn take_events(&mut self) -> Vec<Value> {
        self.event_bytes = 0;
        self.events.drain(..).collect()
    }

    /// A fresh id, awaited from now on.
    fn new_id(&mut self) -> u64 {
        self.last_id += 1;
        self.expected.insert(self.last_id);
        self.last_id
    }

    /// Stops waiting for `id`: a reply that comes later is dropped.
    fn give_up(&mut self, id: u64) {
        if self.expected.remove(&id) && self.replies.remove(&id).is_none() {
            self.orphans.insert(id);
        }
    }
}

/// What a command's wait for its reply found first.
enum Heard {
    Reply(Value),
    Strays,
}

impl Shared {
    fn lock(&self) -> Guard<'_, State> {
        self.state.lock()
    }

    /// Waits until `ready` yields a value, the connection ends, the
    /// deadline passes, or an interrupt comes ([`Error::Interrupted`]).
    /// Reads the socket while no other thread does; at least one read
    /// (without waiting, when the deadline has passed) is tried before
    /// giving up, so what has already arrived is always seen.
    fn wait_for<T>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> std::result::Result<Option<T>, Error> {
        let looked = self.state.wait_until_with(
            Some(deadline),
            |st, _| match ready(st) {
                Some(v) => Look::Done(Ok(Some(v))),
                None => match &st.ended {
                    Some(err) => Look::Done(Err(err.clone())),
                    None => Look::NotYet,
                },
            },
            |st, until| {
                if st.reading {
                    // Another thread reads for us and wakes us when it
                    // files something or stops reading.
                    return st.sleep(until);
                }
                let left = until.map_or(Duration::MAX, |t| {
                    t.saturating_duration_since(Instant::now())
                });
                self.read_once(st, left).0
            },
        );
        match looked {
            Ok(out) => out,
            Err(stopped) => match stopped.why {
                Stop::Deadline => Ok(None),
                Stop::Interrupted => Err(Error::Interrupted {
                    what: "waiting".into(),
                }),
            },
        }
    }

    /// Takes the read side for one read of up to `timeout`; gives it back,
    /// recording the end of the connection, and wakes the waiters. True
    /// when bytes were read.
    fn read_once<'a>(
        &'a self,
        mut st: Guard<'a, State>,
        timeout: Duration,
    ) -> (Guard<'a, State>, bool) {
        st.reading = true;
        drop(st);
        let r = lock(&self.read).read_once(self, &self.wake, timeout);
        let mut st = self.lock();
        st.reading = false;
        let progress = match r {
            Ok(p) => p,
            Err(e) => {
                st.ended.get_or_insert(e);
                true
            }
        };
        // They wait for what was filed, or to read in turn.
        if st.has_sleepers() {
            self.state.notify_all();
        }
        (st, progress)
    }

    /// Reads whatever has arrived, without waiting, unless another thread
    /// is reading already (then it files it).
    fn read_arrived(&self) {
        let mut st = self.lock();
        // Bounded, so that a peer sending without pause cannot keep us.
        for _ in 0..64 {
            if st.reading || st.ended.is_some() {
                return;
            }
            let (next, progress) = self.read_once(st, Duration::ZERO);
            st = next;
            if !progress {
                return;
            }
        }
    }

    /// Wakes the thread waiting in `poll`, if any.
    fn poke(&self) {
        // A full counter (EAGAIN) already means "wake up".
        let _ = self.wake.write(1);
    }
}

/// A QMP connection.
pub struct Client {
    shared: Arc<Shared>,
    writer: Mutex<Stream>,
    /// Held from sending a command until its reply is taken: one command
    /// at a time, so a desync is blamed on the command it happened during.
    command_lock: Mutex<()>,
    observer: Option<Observer>,
    negotiated: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Takes over a connected stream and waits for the greeting.
    pub fn new(stream: Stream, timeout: Duration) -> Result<Client> {
        Self::with_options(stream, timeout, Limits::default(), None)
    }

    /// [`Client::new`] with reader limits and a transcript observer.
    pub fn with_options(
        stream: Stream,
        timeout: Duration,
        limits: Limits,
        observer: Option<Observer>,
    ) -> Result<Client> {
        Self::open(stream, timeout, limits, observer, true)
    }

    /// Takes over a connected stream of a peer that sends no greeting
    /// (qemu-ga); commands can be sent at once.
    pub fn without_greeting(stream: Stream) -> Result<Client> {
        Self::open(stream, Duration::ZERO, Limits::default(), None, false)
    }

    fn open(
        stream: Stream,
        timeout: Duration,
        limits: Limits,
        observer: Option<Observer>,
        greeting: bool,
    ) -> Result<Client> {
        let read_side = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the socket", e))?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::io("creating an eventfd", e.into()))?;
        let shared = Arc::new(Shared {
            state: Waitable::new(State::default()),
            read: Mutex::new(reader::ReadSide::new(read_side, limits, observer.clone())),
            wake,
        });
        let client = Client {
            shared,
            writer: Mutex::new(stream),
            command_lock: Mutex::new(()),
            observer,
            negotiated: false,
        };
        if !greeting {
            return Ok(client);
        }
        let deadline = Instant::now() + timeout;
        match client
            .shared
            .wait_for(deadline, |st| st.greeting.clone())
            .map_err(|e| match e {
                Error::Closed { .. } => Error::Closed {
                    what: "waiting for the greeting".into(),
                },
                e => e,
            })? {
            Some(_) => Ok(client),
            None => Err(Error::Timeout {
                what: "waiting for the QMP greeting".into(),
                after: timeout,
            }),
        }
    }

    /// Connects to a QMP server (QEMU started with `-qmp …,server=on`).
    pub fn connect(address: &Address, timeout: Duration) -> Result<Client> {
        Client::new(Self::dial(address, timeout)?, timeout)
    }

    /// Opens a connection to `address`, without reading from it.
    pub fn dial(address: &Address, timeout: Duration) -> Result<Stream> {
        let stream = match address {
            Address::Unix(path) => Stream::Unix(
                UnixStream::connect(path)
                    .map_err(|e| Error::io(&format!("connecting to {}", path.display()), e))?,
            ),
            Address::Tcp(host, port) => {
                use std::net::ToSocketAddrs;
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| Error::io(&format!("resolving {host}:{port}"), e))?;
                let mut last = None;
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = found.ok_or_else(|| {
                    Error::io(
                        &format!("connecting to {host}:{port}"),
                        last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
                    )
                })?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        };
        Ok(stream)
    }

    /// The server's greeting, `{"QMP": {"version": …, "capabilities": […]}}`.
    pub fn greeting(&self) -> Value {
        self.shared.lock().greeting.clone().unwrap_or(Value::Null)
    }

    /// Sends `qmp_capabilities`, enabling out-of-band execution when offered.
    pub fn negotiate(&mut self, timeout: Duration) -> Result<()> {
        let greeting = self.greeting();
        let caps = greeting
            .pointer("/QMP/capabilities")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Greeting {
                detail: greeting.to_string(),
            })?;
        let oob = caps.iter().any(|c| c == "oob");
        let args = oob.then(|| {
            let mut m = Map::new();
            m.insert("enable".into(), Value::Array(vec![Value::from("oob")]));
            m
        });
        let reply = self.execute("qmp_capabilities", args.as_ref(), timeout)?;
        if let Some(err) = reply.get("error") {
            return Err(response_error(&reply, err));
        }
        self.negotiated = true;
        Ok(())
    }

    /// Whether `qmp_capabilities` succeeded.
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// Sends one command and returns its whole reply (`return` or `error`).
    pub fn execute(
        &self,
        command: &str,
        arguments: Option<&Map<String, Value>>,
        timeout: Duration,
    ) -> Result<Value> {
        self.round_trip(command, timeout, |id| command_bytes(command, arguments, id))
    }

    /// Sends one command and returns its `return` value; an error reply is
    /// [`Error::Response`].
    pub fn command(
        &self,
        command: &str,
        arguments: Option<&Map<String, Value>>,
        timeout: Duration,
    ) -> Result<Value> {
        let reply = self.execute(command, arguments, timeout)?;
        split_reply(reply).map_err(Error::from)
    }

    /// Sends an already-encoded message and waits for the reply. A JSON
    /// object gets this client's `id` (a caller's own `id` is put back
    /// into the reply); anything else goes out as it is, and what QEMU
    /// answers to it, without an id, is an [`Error::Desync`].
    pub fn execute_raw(&self, bytes: &[u8], what: &str, timeout: Duration) -> Result<Value> {
        let message = serde_json::from_slice::<Value>(bytes).ok();
        let Some(Value::Object(mut message)) = message else {
            return self.round_trip(what, timeout, |_| bytes.to_vec());
        };
        let theirs = message.remove("id");
        let mut reply = self.round_trip(what, timeout, |id| {
            message.insert("id".into(), Value::from(id));
            serde_json::to_vec(&message).unwrap_or_else(|_| bytes.to_vec())
        })?;
        if let (Some(id), Some(m)) = (theirs, reply.as_object_mut()) {
            m.insert("id".into(), id);
        }
        Ok(reply)
    }

    /// Sends the message `encode` makes with a fresh id, and waits for the
    /// reply with that id (returned without it).
    fn round_trip(
        &self,
        what: &str,
        timeout: Duration,
        encode: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let _turn = lock(&self.command_lock);
        let id = self.shared.lock().new_id();
        if let Err(e) = self.send_bytes(&encode(id), what) {
            self.shared.lock().give_up(id);
            return Err(e);
        }
        let what = format!("waiting for the reply to {what}");
        let heard = self.shared.wait_for(deadline, |st| {
            if let Some(reply) = st.replies.remove(&id) {
                Some(Heard::Reply(reply))
            } else {
                (st.stray_count > 0).then_some(Heard::Strays)
            }
        });
        let own = match heard {
            Ok(Some(Heard::Reply(reply))) if self.shared.lock().stray_count == 0 => {
                self.shared.lock().expected.remove(&id);
                return Ok(strip_id(reply));
            }
            Ok(Some(Heard::Reply(reply))) => Some(reply),
            Ok(Some(Heard::Strays)) => None,
            Ok(None) => {
                self.shared.lock().give_up(id);
                return Err(Error::Timeout {
                    what,
                    after: timeout,
                });
            }
            Err(e) => {
                self.shared.lock().give_up(id);
                return Err(match e {
                    Error::Interrupted { .. } => Error::Interrupted { what },
                    Error::Closed { .. } => Error::Closed { what },
                    e => e,
                });
            }
        };
        Err(self.resync(id, own, what, deadline))
    }

    /// After stray replies: sends a check command and waits (up to
    /// `deadline`) for its reply, so that every stray reply sent before it
    /// has been read, then describes the desync.
    fn resync(&self, id: u64, mut own: Option<Value>, what: String, deadline: Instant) -> Error {
        let check = self.shared.lock().new_id();
        let checked = match self.send_bytes(&command_bytes("query-version", None, check), &what) {
            Err(e) => Err(e),
            Ok(()) => self.shared.wait_for(deadline, |st| {
                if own.is_none() {
                    own = st.replies.remove(&id);
                }
                st.replies.remove(&check)
            }),
        };
        let mut st = self.shared.lock();
        st.give_up(id);
        st.give_up(check);
        let outcome = match (&own, &checked) {
            (Some(_), Ok(Some(_))) => "the command's own reply came too, and was dropped",
            (Some(_), _) => "the command's own reply came too, and was dropped; the peer did not answer a check command",
            (None, Ok(Some(_))) => "the command itself was not answered (QEMU could not read it)",
            (None, _) => "the command itself was not answered, nor a check command",
        };
        let first = st.strays.first().map(reader::excerpt).unwrap_or_default();
        let count = std::mem::take(&mut st.stray_count);
        st.strays.clear();
        Error::Desync {
            what,
            count,
            first,
            outcome: outcome.to_string(),
        }
    }

    fn send_bytes(&self, bytes: &[u8], what: &str) -> Result<()> {
        if let Some(err) = &self.shared.lock().ended {
            return Err(match err {
                Error::Closed { .. } => Error::Closed {
                    what: format!("sending {what}"),
                },
                e => e.clone(),
            });
        }
        if let Some(obs) = &self.observer {
            obs(Direction::Sent, bytes);
        }
        let mut w = lock(&self.writer);
        match w.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                drop(w);
                // Reading shows the hang-up and may know more (a
                // truncated message, say): prefer its reason.
                let soon = Instant::now() + Duration::from_secs(1);
                Err(match self.shared.wait_for(soon, |_| None::<()>) {
                    Err(Error::Closed { .. }) | Ok(_) => Error::Closed {
                        what: format!("sending {what}"),
                    },
                    Err(reason) => reason,
                })
            }
            Err(e) => Err(Error::io(&format!("sending {what}"), e)),
        }
    }

    /// Passes a file descriptor to QEMU with SCM_RIGHTS (for `getfd`/`add-fd`).
    pub fn send_fd_scm(&self, fd: impl AsFd) -> Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let w = lock(&self.writer);
        if !matches!(&*w, Stream::Unix(_)) {
            return Err(Error::NotUnix {
                what: "send_fd_scm".into(),
            });
        }
        let fds = [fd.as_fd().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        // QEMU's JSON parser skips whitespace, so one space carries the fd.
        let iov = [std::io::IoSlice::new(b" ")];
        sendmsg::<()>(w.as_fd().as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .map_err(|e| Error::io("sending a file descriptor", e.into()))?;
        Ok(())
    }

    /// Removes and returns the first queued event for which `pred` is true,
    /// waiting up to `timeout` for one to arrive. Events that do not match
    /// stay queued in order. `Ok(None)` when the time runs out.
    pub fn take_event(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        let found = self.shared.wait_for(deadline, |st| {
            // Events already rejected are not offered to `pred` again.
            let start = scanned.min(st.events.len());
            let hit = st.events.iter().skip(start).position(&mut pred);
            scanned = st.events.len();
            hit.and_then(|i| st.remove_event(start + i))
        });
        match found {
            Err(Error::Interrupted { .. }) => Err(Error::Interrupted {
                what: "waiting for an event".into(),
            }),
            // Even after the reader ended, queued events stay readable.
            Err(err) => {
                let mut st = self.shared.lock();
                match st.events.iter().position(&mut pred) {
                    Some(i) => Ok(st.remove_event(i)),
                    None => Err(err),
                }
            }
            ok => ok,
        }
    }

    /// Removes and returns every queued event (and every one that has
    /// arrived).
    pub fn drain_events(&self) -> Vec<Value> {
        self.shared.read_arrived();
        self.shared.lock().take_events()
    }

    /// A copy of the queued events (and of every one that has arrived),
    /// oldest first.
    pub fn queued_events(&self) -> Vec<Value> {
        self.shared.read_arrived();
        self.shared.lock().events.iter().cloned().collect()
    }

    /// Empties the event queue, of every event that has arrived.
    pub fn clear_events(&self) {
        self.shared.read_arrived();
        self.shared.lock().take_events();
    }

    /// Starts a thread that reads whenever no other thread waits, so that
    /// the observer sees every message as it arrives (the REPL shows
    /// events while it sits at its prompt). It ends with the connection.
    pub fn watch(&self) -> std::io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("qmp-watch".into())
            .stack_size(256 << 10)
            .spawn(move || loop {
                let far = Instant::now() + Duration::from_secs(3600);
                match shared.wait_for(far, |_| None::<()>) {
                    Ok(_) | Err(Error::Interrupted { .. }) => {}
                    Err(_) => return,
                }
            })?;
        Ok(())
    }

    /// A handle that interrupts this client's waits from any thread.
    /// Every wait under way then returns [`Error::Interrupted`]; a command
    /// whose reply was being awaited still gets its reply, which is then
    /// discarded.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter::new(&self.shared)
    }

    /// Why the connection ended, if it has (as far as what has arrived
    /// shows).
    pub fn ended(&self) -> Option<Error> {
        self.shared.read_arrived();
        self.shared.lock().ended.clone()
    }

    /// Waits until the peer hangs up, up to `timeout`. True when it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        !matches!(
            self.shared.wait_for(deadline, |_| None::<()>),
            Ok(None) | Err(Error::Interrupted { .. })
        )
    }

    /// Closes the connection, first filing the events that have arrived.
    /// A wait in progress on another thread ends with [`Error::Closed`].
    pub fn close(&mut self) {
        self.shared.read_arrived();
        lock(&self.writer).shutdown();
        self.shared.poke();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

impl Interruptible for Shared {
    /// Wakes every wait in progress with [`Error::Interrupted`], the one
    /// in `poll` too.
    fn interrupt(&self) {
        self.state.interrupt();
        self.poke();
    }
}

/// The reply as the caller sees it: without the `id` this client added.
fn strip_id(mut reply: Value) -> Value {
    if let Some(m) = reply.as_object_mut() {
        m.remove("id");
    }
    reply
}

/// Builds [`Error::Response`] from an error reply.
pub fn response_error(reply: &Value, err: &Value) -> Error {
    ErrorReply::new(reply.clone(), err).into()
}

/// An error reply, taken apart: what [`Error::Response`] and the
/// machine's own error for it carry.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    pub class: String,
    pub desc: String,
    /// The whole reply.
    pub reply: Box<Value>,
}

impl ErrorReply {
    fn new(reply: Value, err: &Value) -> ErrorReply {
        let text = |k: &str, default: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        ErrorReply {
            class: text("class", "GenericError"),
            desc: text("desc", ""),
            reply: Box::new(reply),
        }
    }
}

impl From<ErrorReply> for Error {
    fn from(e: ErrorReply) -> Error {
        Error::Response {
            class: e.class,
            desc: e.desc,
            reply: e.reply,
        }
    }
}

/// A command's reply as its `return` value (`null` when it has none), or
/// the error it carries.
pub fn split_reply(mut reply: Value) -> std::result::Result<Value, ErrorReply> {
    if let Some(err) = reply.get("error") {
        let err = err.clone();
        return Err(ErrorReply::new(reply, &err));
    }
    Ok(reply
        .as_object_mut()
        .and_then(|m| m.remove("return"))
        .unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests;
