//! The console's output as one lossy UTF-8 text (see the [module
//! documentation](super)): decoded as the bytes arrive, trimmed to its
//! cap, with the cursor that reads and waits move. The reader appends to
//! it; the waits and their matchers read it.

use super::{ConsoleError, ERROR_TAIL};
use crate::machine::tail::last_bytes;
use crate::sync::{Guard, Interruptible, Waitable};

/// Why the read side stopped.
#[derive(Debug, Clone)]
pub(super) enum Ended {
    /// The peer hung up, or `close` shut the socket down.
    Closed,
    /// An operating system error.
    Failed(String),
}

/// The console's output as text, and where reads and waits are in it.
pub(super) struct Transcript {
    /// The transcript kept in memory, decoded: absolute offsets
    /// `base..end()` (in bytes of the decoded text; every offset kept is
    /// on a character boundary).
    pub(super) buf: String,
    pub(super) base: usize,
    /// Absolute offset of the first character not yet consumed; `>= base`.
    pub(super) cursor: usize,
    /// The start of a character whose last bytes have not arrived yet.
    pub(super) partial: Vec<u8>,
    /// Raw bytes received so far.
    pub(super) received: usize,
    pub(super) cap: usize,
    pub(super) ended: Option<Ended>,
    /// The first error writing a log file; the log stopped there.
    pub(super) log_error: Option<String>,
}

impl Transcript {
    pub(super) fn new(cap: usize) -> Transcript {
        Transcript {
            buf: String::new(),
            base: 0,
            cursor: 0,
            partial: Vec::new(),
            received: 0,
            cap,
            ended: None,
            log_error: None,
        }
    }

    /// Absolute offset just past the last byte received.
    pub(super) fn end(&self) -> usize {
        self.base + self.buf.len()
    }

    /// The retained transcript from absolute offset `at` (clamped to what
    /// is kept, and moved back to the start of the character it falls in)
    /// on.
    pub(super) fn from(&self, at: usize) -> &str {
        let mut i = at.saturating_sub(self.base).min(self.buf.len());
        while !self.buf.is_char_boundary(i) {
            i -= 1;
        }
        &self.buf[i..]
    }

    /// Decodes a chunk of raw bytes onto the transcript.
    pub(super) fn append(&mut self, bytes: &[u8]) {
        self.received += bytes.len();
        let joined;
        let input = if self.partial.is_empty() {
            bytes
        } else {
            let mut v = std::mem::take(&mut self.partial);
            v.extend_from_slice(bytes);
            joined = v;
            &joined[..]
        };
        decode_lossy(input, &mut self.buf, &mut self.partial);
        if self.buf.len() > self.cap {
            // Down to 3/4 of the cap, so trimming happens once per quarter.
            let drop = self.buf.len() - last_bytes(&self.buf, self.cap / 4 * 3).len();
            self.buf.drain(..drop);
            self.base += drop;
            self.cursor = self.cursor.max(self.base);
        }
    }

    /// The input ended: a character still waiting for its last bytes never
    /// gets them.
    pub(super) fn end_input(&mut self) {
        if !self.partial.is_empty() {
            self.partial.clear();
            self.buf.push(char::REPLACEMENT_CHARACTER);
        }
    }

    /// Consumes output up to absolute offset `to` and returns it.
    pub(super) fn take_to(&mut self, to: usize) -> String {
        let from = self.from(self.cursor);
        let n = to.saturating_sub(self.cursor).min(from.len());
        let text = from[..n].to_string();
        self.cursor = self.cursor.max(to);
        text
    }

    /// The last `max_bytes` of the transcript, not starting inside a character.
    pub(super) fn tail(&self, max_bytes: usize) -> String {
        last_bytes(&self.buf, max_bytes).to_string()
    }

    pub(super) fn closed_error(&self, what: &str) -> ConsoleError {
        match &self.ended {
            Some(Ended::Failed(message)) => ConsoleError::Io {
                what: what.to_string(),
                message: message.clone(),
            },
            _ => ConsoleError::Closed {
                what: what.to_string(),
                tail: self.tail(ERROR_TAIL),
            },
        }
    }
}

/// Appends `bytes` to `out` as [`String::from_utf8_lossy`] would, except
/// that a trailing sequence that is a valid but incomplete character is
/// put in `partial` (its other bytes may be on their way).
fn decode_lossy(mut bytes: &[u8], out: &mut String, partial: &mut Vec<u8>) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // Valid by construction, so this borrows and never replaces.
                out.push_str(&String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes = &rest[bad..];
                    }
                    None => {
                        partial.extend_from_slice(rest);
                        return;
                    }
                }
            }
        }
    }
}

/// The transcript, shared by the reader that fills it and the waits that
/// read it.
pub(super) struct Shared {
    pub(super) state: Waitable<Transcript>,
}

impl Interruptible for Shared {
    fn interrupt(&self) {
        self.state.interrupt();
    }
}

impl Shared {
    pub(super) fn lock(&self) -> Guard<'_, Transcript> {
        self.state.lock()
    }

    /// Appends one chunk (already logged, with the error of a log that
    /// failed now) to the transcript and wakes the waiters.
    pub(super) fn append(&self, bytes: &[u8], log_error: Option<String>) {
        let mut st = self.lock();
        if let Some(e) = log_error {
            st.log_error.get_or_insert(e);
        }
        st.append(bytes);
        // With nobody asleep, a chunk wakes nobody: a syscall saved per
        // chunk on the drain thread's hot path.
        let anyone = st.has_sleepers();
        drop(st);
        if anyone {
            self.state.notify_all();
        }
    }

    /// Records why reading stopped (the first reason wins) and wakes the waiters.
    pub(super) fn finish(&self, why: Ended) {
        let mut st = self.lock();
        st.end_input();
        st.ended.get_or_insert(why);
        drop(st);
        self.state.notify_all();
    }
}
