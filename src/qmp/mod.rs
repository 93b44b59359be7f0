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
//! Start reading at [`Client::new`] and [`Client::execute`]. Beside the
//! client: `shared.rs` (the filed replies and events, the wait that reads
//! for everyone), `reader.rs` (the socket split into messages), `wire.rs`
//! (what goes out), `stream.rs` (the transports), `error.rs`.

mod error;
mod reader;
mod shared;
mod stream;
mod wire;

use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::{Map, Value};

pub use crate::sync::Interrupter;
pub use error::{response_error, split_reply, Error, ErrorReply, Result};
pub use reader::Limits;
pub use stream::{Address, Stream};
pub use wire::{command_bytes, Direction};

use crate::sync::{lock, Waitable};
use error::strip_id;
use shared::{Heard, Shared, State};

/// A callback that sees every message sent and received, for transcripts.
pub type Observer = Arc<dyn Fn(Direction, &[u8]) + Send + Sync>;

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

#[cfg(test)]
mod tests;
