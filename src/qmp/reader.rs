//! The read side of a QMP socket: splits it into messages and files them
//! as replies, events or the greeting.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use serde_json::Value;

use super::{Direction, Error, Observer, Shared, Stream};
use crate::sync::{is_ready, poll_until};

/// Bounds on what a peer can make the reader hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest message line accepted, in bytes.
    pub max_line: usize,
    /// The most events kept queued and unread.
    pub max_events: usize,
    /// The most memory the queued events may take, in bytes as
    /// [`footprint`] estimates it.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // `query-qmp-schema` on QEMU 7.2 is about 200 KiB; 64 MiB leaves
        // room for any real reply while bounding a misbehaving peer.
        Limits {
            max_line: 64 << 20,
            max_events: 1_000_000,
            // Half a million small events took ~790 MB before this bound.
            max_event_bytes: 256 << 20,
        }
    }
}

/// The read side of a QMP socket, used by one thread at a time: the one
/// that waits (see the [module documentation](super)).
pub(super) struct ReadSide {
    stream: Stream,
    buf: Vec<u8>,
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
    limits: Limits,
    observer: Option<Observer>,
}

impl ReadSide {
    pub(super) fn new(stream: Stream, limits: Limits, observer: Option<Observer>) -> ReadSide {
        ReadSide {
            stream,
            buf: vec![0u8; 64 << 10],
            pending: Vec::new(),
            limits,
            observer,
        }
    }

    /// Waits up to `timeout` for bytes (or a poke on `wake`), then reads
    /// what is there and files every whole message in `shared`. True when
    /// bytes were read; an error when the connection has ended, and why.
    pub(super) fn read_once(
        &mut self,
        shared: &Shared,
        wake: &EventFd,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let (socket, woken) = {
            let mut fds = [
                PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            if let Err(e) = poll_until(&mut fds, Instant::now().checked_add(timeout)) {
                return Err(Error::io("waiting for the socket", e.into()));
            }
            (is_ready(&fds[0]), is_ready(&fds[1]))
        };
        if woken {
            // Resets the counter; nonblocking, so it never waits.
            let _ = wake.read();
        }
        if !socket {
            return Ok(false);
        }
        let n = match read(&mut self.stream, &mut self.buf) {
            Ok(0) => {
                return Err(if self.pending.iter().all(u8::is_ascii_whitespace) {
                    closed()
                } else {
                    Error::Malformed {
                        detail: format!(
                            "connection closed inside a message ({} bytes without an end of line)",
                            self.pending.len()
                        ),
                    }
                });
            }
            Ok(n) => n,
            // QEMU exiting with our bytes unread reports the hang-up as a
            // reset: the same expected end as EOF.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(closed()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(Error::io("reading", e)),
        };
        let limits = self.limits;
        let mut chunk = &self.buf[..n];
        let mut messages = Vec::new();
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let line = if self.pending.is_empty() {
                &chunk[..nl]
            } else {
                self.pending.extend_from_slice(&chunk[..nl]);
                &self.pending[..]
            };
            if line.len() > limits.max_line {
                return Err(Error::LineTooLong {
                    limit: limits.max_line,
                });
            }
            if let Some(v) = parse(line, self.observer.as_ref())? {
                messages.push(v);
            }
            self.pending.clear();
            chunk = &chunk[nl + 1..];
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() > limits.max_line {
            return Err(Error::LineTooLong {
                limit: limits.max_line,
            });
        }
        file(shared, messages, limits)?;
        Ok(true)
    }
}

/// Files replies, events and the greeting where their waiters look.
fn file(shared: &Shared, messages: Vec<Value>, limits: Limits) -> Result<(), Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut st = shared.lock();
    for msg in messages {
        if msg.get("event").is_some() {
            if st.events.len() >= limits.max_events {
                return Err(Error::EventQueueFull {
                    limit: limits.max_events,
                });
            }
            let size = footprint(&msg);
            if st.event_bytes + size > limits.max_event_bytes {
                return Err(Error::EventQueueTooBig {
                    limit_mib: limits.max_event_bytes >> 20,
                    count: st.events.len(),
                });
            }
            st.event_bytes += size;
            st.events.push_back(msg);
        } else if msg.get("return").is_some() || msg.get("error").is_some() {
            match msg.get("id").and_then(Value::as_u64) {
                Some(id) if st.expected.contains(&id) => {
                    st.replies.insert(id, msg);
                }
                Some(id) if st.orphans.remove(&id) => {}
                // QEMU answers what it could not parse without an id; a
                // peer may also send a reply nobody asked for.
                _ => st.stray(msg),
            }
        } else if msg.get("QMP").is_some() && st.greeting.is_none() {
            st.greeting = Some(msg);
        } else {
            return Err(Error::Malformed {
                detail: format!("not a reply, event or greeting: {}", excerpt(&msg)),
            });
        }
    }
    Ok(())
}

/// About how many bytes of memory a parsed message takes: its strings and
/// keys plus the bookkeeping of each node (measured: a 100-byte event
/// takes about 1.6 KB once parsed).
pub(super) fn footprint(v: &Value) -> usize {
    match v {
        Value::Object(m) => {
            64 + m
                .iter()
                .map(|(k, v)| 96 + k.len() + footprint(v))
                .sum::<usize>()
        }
        Value::Array(a) => 32 + a.iter().map(footprint).sum::<usize>(),
        Value::String(s) => 32 + s.len(),
        _ => 32,
    }
}

fn closed() -> Error {
    Error::Closed {
        what: "reading".into(),
    }
}

fn read(stream: &mut Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    match stream {
        Stream::Unix(s) => s.read(buf),
        Stream::Tcp(s) => s.read(buf),
    }
}

/// Parses one line; blank lines are skipped.
fn parse(line: &[u8], observer: Option<&Observer>) -> Result<Option<Value>, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| Error::Malformed {
        detail: format!("{e} in {}", excerpt_bytes(line)),
    })?;
    if !value.is_object() {
        return Err(Error::Malformed {
            detail: format!("not a JSON object: {}", excerpt_bytes(line)),
        });
    }
    if let Some(obs) = observer {
        obs(Direction::Received, line);
    }
    Ok(Some(value))
}

pub(super) fn excerpt(v: &Value) -> String {
    excerpt_bytes(v.to_string().as_bytes())
}

fn excerpt_bytes(b: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    if b.len() > MAX {
        format!("{s}… ({} bytes)", b.len())
    } else {
        s.into_owned()
    }
}
