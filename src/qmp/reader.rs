//! The reader thread: owns the read side of a QMP socket, splits it into
//! messages and files them as replies, events or the greeting.

use std::io::Read;
use std::sync::Arc;

use serde_json::Value;

use super::{Direction, Error, Observer, Shared, Stream};

/// Bounds on what a peer can make the reader hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest message line accepted, in bytes.
    pub max_line: usize,
    /// The most events kept queued and unread.
    pub max_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // `query-qmp-schema` on QEMU 7.2 is about 200 KiB; 64 MiB leaves
        // room for any real reply while bounding a misbehaving peer.
        Limits {
            max_line: 64 << 20,
            max_events: 1_000_000,
        }
    }
}

pub(super) fn spawn(
    stream: Stream,
    shared: Arc<Shared>,
    limits: Limits,
    observer: Option<Observer>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("qmp-reader".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let err = run(stream, &shared, limits, observer.as_ref());
            let mut st = shared.lock();
            st.ended = Some(err);
            drop(st);
            shared.cond.notify_all();
        })
}

/// Reads until the stream ends or misbehaves; returns why it stopped.
fn run(mut stream: Stream, shared: &Shared, limits: Limits, observer: Option<&Observer>) -> Error {
    let mut buf = vec![0u8; 64 << 10];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match read(&mut stream, &mut buf) {
            Ok(0) => {
                return if pending.iter().all(u8::is_ascii_whitespace) {
                    closed()
                } else {
                    Error::Malformed {
                        detail: format!(
                            "connection closed inside a message ({} bytes without an end of line)",
                            pending.len()
                        ),
                    }
                };
            }
            Ok(n) => n,
            // QEMU exiting with our bytes unread reports the hang-up as a
            // reset: the same expected end as EOF.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return closed(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Error::io("reading", e),
        };
        let mut chunk = &buf[..n];
        let mut messages = Vec::new();
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let line = if pending.is_empty() {
                &chunk[..nl]
            } else {
                pending.extend_from_slice(&chunk[..nl]);
                &pending[..]
            };
            if line.len() > limits.max_line {
                return Error::LineTooLong {
                    limit: limits.max_line,
                };
            }
            match parse(line, observer) {
                Ok(Some(v)) => messages.push(v),
                Ok(None) => {}
                Err(e) => return e,
            }
            pending.clear();
            chunk = &chunk[nl + 1..];
        }
        pending.extend_from_slice(chunk);
        if pending.len() > limits.max_line {
            return Error::LineTooLong {
                limit: limits.max_line,
            };
        }
        if messages.is_empty() {
            continue;
        }
        let mut st = shared.lock();
        for msg in messages {
            if msg.get("event").is_some() {
                if st.events.len() >= limits.max_events {
                    return Error::EventQueueFull {
                        limit: limits.max_events,
                    };
                }
                st.events.push_back(msg);
            } else if msg.get("return").is_some() || msg.get("error").is_some() {
                if st.orphans > 0 {
                    st.orphans -= 1;
                } else {
                    st.replies.push_back(msg);
                }
            } else if msg.get("QMP").is_some() && st.greeting.is_none() {
                st.greeting = Some(msg);
            } else {
                return Error::Malformed {
                    detail: format!("not a reply, event or greeting: {}", excerpt(&msg)),
                };
            }
        }
        drop(st);
        shared.cond.notify_all();
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

fn excerpt(v: &Value) -> String {
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
