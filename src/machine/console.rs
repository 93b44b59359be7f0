//! The guest's serial console on one connected unix socket, drained by a
//! background thread into a transcript; knows nothing of QEMU processes or
//! QMP.
//!
//! A [`Console`] owns the socket. By default one thread, `console-drain`,
//! owns its read side: it appends everything to an in-memory transcript
//! and to the log files, then wakes the waiters. It never stops for long,
//! because QEMU's serial emulation sends one byte per `sendmsg` and only
//! about 290 bytes fit in the socket at once, so a reader that pauses for
//! more than ~0.4 ms stalls the guest. It does nap 150 µs after each read:
//! that measured faster than reading eagerly, since every wake-up of ours
//! costs QEMU's sending thread too.
//!
//! Console text is one model everywhere: the transcript is lossy UTF-8
//! text, decoded once as the bytes arrive. A byte that is not part of a
//! valid UTF-8 sequence becomes U+FFFD there, as
//! [`String::from_utf8_lossy`] would make it of the whole stream; a
//! character split across two reads is held back until its last byte
//! comes (and becomes U+FFFD if the console ends first). Waits, reads,
//! [`Console::output`] and the tails in errors all see that same text, so
//! a regex like `[\s\S]*` matches whatever `output()` shows. Only the log
//! files keep the raw bytes.
//!
//! Waits ([`Console::wait_for`], [`Console::wait_for_regex`],
//! [`Console::expect`], [`Console::wait_for_either`]) match on the text
//! stream, not on lines (busybox's prompt `/ # ` is followed by `ESC[6n`
//! and no newline). They start at a cursor that marks what earlier reads
//! and waits consumed, and move it past their match. They sleep on a
//! condition variable with a deadline, and fail at once with
//! [`ConsoleError::Closed`] when the peer hangs up, after a last look at
//! what had already arrived.
//!
//! Without the drain thread (`drain = false`) the waits read the socket
//! themselves, so output only moves while someone waits or reads.
//!
//! Memory: the transcript kept in memory is capped at 64 MiB (of decoded
//! text). Past that the oldest characters are dropped, down to 48 MiB: consumed ones first, as they
//! are the oldest, and unconsumed ones only when a single wait has let
//! more than that pile up (it cannot match text that fell out). So
//! [`Console::output`] returns the last 48-64 MiB; the log files keep
//! everything.
//!
//! Closing (explicitly, or by dropping the last clone) shuts the socket
//! down and joins the drain thread, so the log files are complete when it
//! returns.
//!
//! Start reading at [`Console::start`] and [`Console::wait_for`].

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

pub use crate::sync::Interrupter;
use crate::sync::{lock, try_lock, Guard, Interruptible, Look, Stop, Stopped, Waitable};

/// The most transcript kept in memory; see the module documentation.
const TRANSCRIPT_CAP: usize = 64 << 20;
/// How much of the transcript an error carries.
const ERROR_TAIL: usize = 2 << 10;
/// The read buffer, far larger than what the socket ever holds.
const READ_BUF: usize = 64 << 10;
/// The drain thread's nap after each read (see the module documentation).
const NAP: Duration = Duration::from_micros(150);
/// How long a send may wait for the guest to take its input.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Unconsumed output below this size is searched by regex on every wake-up.
const REGEX_RESCAN_FREE: usize = 64 << 10;
/// Above that, a regex is searched again only after this many nanoseconds
/// per unconsumed byte, or when the output grew by 1/16: searching then
/// costs at most a fraction of a core, and the transcript is not scanned
/// from the cursor on each of QEMU's thousands of writes per second.
const REGEX_RESCAN_NS_PER_BYTE: u64 = 4;
/// How long a regex match that ends at the end of the output waits for the
/// output to stop before it is taken (see [`Console::wait_for_regex`]).
const REGEX_SETTLE: Duration = Duration::from_millis(10);
/// Without a drain thread, the longest a waiter reads the socket before it
/// looks at the transcript (and at interrupts) again.
const DIRECT_SLICE: Duration = Duration::from_millis(100);

/// What went wrong on the console.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsoleError {
    /// What was awaited did not arrive before the deadline.
    #[error("timed out after {after:?} {what}; last output: {}", brief(.tail))]
    Timeout {
        what: String,
        after: Duration,
        /// The last 2 KiB of the transcript.
        tail: String,
    },
    /// The peer (QEMU) hung up, or the console was closed.
    #[error("console closed while {what}; last output: {}", brief(.tail))]
    Closed { what: String, tail: String },
    /// A failure pattern appeared before the success pattern.
    #[error("console showed failure pattern {pattern:?}; last output: {}", brief(.tail))]
    Failure { pattern: String, tail: String },
    /// An operating system error on the socket.
    #[error("console socket error while {what}: {message}")]
    Io { what: String, message: String },
    /// A pattern that does not compile.
    #[error("invalid console regex {pattern:?}: {message}")]
    BadRegex { pattern: String, message: String },
    /// [`Interrupter::interrupt`] woke the wait; the console is intact.
    #[error("interrupted while {what}")]
    Interrupted { what: String },
}

/// The end of `tail` as one quoted line, for error messages; the whole
/// tail stays in the error's field.
fn brief(tail: &str) -> String {
    const KEEP: usize = 160;
    if tail.is_empty() {
        return "(none)".to_string();
    }
    let count = tail.chars().count();
    if count <= KEEP {
        return format!("{tail:?}");
    }
    let cut: String = tail.chars().skip(count - KEEP).collect();
    format!("…{cut:?}")
}

/// A serial console; clones share it. The last clone dropped closes it.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.shared.lock();
        f.debug_struct("Console")
            .field("received", &st.received)
            .field("consumed", &st.cursor)
            .field("closed", &st.ended.is_some())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// The socket; sends go through it, and `close` shuts it down.
    stream: UnixStream,
    /// Keeps concurrent sends from interleaving.
    send_lock: Mutex<()>,
    mode: Mode,
}

enum Mode {
    /// A drain thread owns the read side.
    Drained {
        thread: Mutex<Option<JoinHandle<()>>>,
    },
    /// Whoever holds this reads the socket; the others wait on the condvar.
    Direct { reader: Mutex<Reader> },
}

/// The read side's buffer and log files.
struct Reader {
    buf: Vec<u8>,
    logs: Vec<File>,
}

impl Reader {
    fn new(log: Option<File>, extra_log: Option<File>) -> Reader {
        Reader {
            buf: vec![0; READ_BUF],
            logs: log.into_iter().chain(extra_log).collect(),
        }
    }

    /// Writes one chunk to every log. A log that fails (a full disk) is
    /// dropped: the guest must not stall for it, and the transcript goes on.
    /// Returns the error of a log that failed now.
    fn log(&mut self, bytes: &[u8]) -> Option<String> {
        let mut failed = None;
        self.logs.retain_mut(|f| match f.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                failed.get_or_insert_with(|| e.to_string());
                false
            }
        });
        failed
    }
}

/// Why the read side stopped.
#[derive(Debug, Clone)]
enum Ended {
    /// The peer hung up, or `close` shut the socket down.
    Closed,
    /// An operating system error.
    Failed(String),
}

struct State {
    /// The transcript kept in memory, decoded: absolute offsets
    /// `base..end()` (in bytes of the decoded text; every offset kept is
    /// on a character boundary).
    buf: String,
    base: usize,
    /// Absolute offset of the first character not yet consumed; `>= base`.
    cursor: usize,
    /// The start of a character whose last bytes have not arrived yet.
    partial: Vec<u8>,
    /// Raw bytes received so far.
    received: usize,
    cap: usize,
    ended: Option<Ended>,
    /// The first error writing a log file; the log stopped there.
    log_error: Option<String>,
}

impl State {
    /// Absolute offset just past the last byte received.
    fn end(&self) -> usize {
        self.base + self.buf.len()
    }

    /// The retained transcript from absolute offset `at` (clamped to what
    /// is kept, and moved back to the start of the character it falls in)
    /// on.
    fn from(&self, at: usize) -> &str {
        let mut i = at.saturating_sub(self.base).min(self.buf.len());
        while !self.buf.is_char_boundary(i) {
            i -= 1;
        }
        &self.buf[i..]
    }

    /// Decodes a chunk of raw bytes onto the transcript.
    fn append(&mut self, bytes: &[u8]) {
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
            let mut drop = self.buf.len() - self.cap / 4 * 3;
            while !self.buf.is_char_boundary(drop) {
                drop += 1;
            }
            self.buf.drain(..drop);
            self.base += drop;
            self.cursor = self.cursor.max(self.base);
        }
    }

    /// The input ended: a character still waiting for its last bytes never
    /// gets them.
    fn end_input(&mut self) {
        if !self.partial.is_empty() {
            self.partial.clear();
            self.buf.push(char::REPLACEMENT_CHARACTER);
        }
    }

    /// Consumes output up to absolute offset `to` and returns it.
    fn take_to(&mut self, to: usize) -> String {
        let from = self.from(self.cursor);
        let n = to.saturating_sub(self.cursor).min(from.len());
        let text = from[..n].to_string();
        self.cursor = self.cursor.max(to);
        text
    }

    /// The last `max_bytes` of the transcript, not starting inside a character.
    fn tail(&self, max_bytes: usize) -> String {
        let mut start = self.buf.len().saturating_sub(max_bytes);
        while !self.buf.is_char_boundary(start) {
            start += 1;
        }
        self.buf[start..].to_string()
    }

    fn closed_error(&self, what: &str) -> ConsoleError {
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

struct Shared {
    state: Waitable<State>,
}

impl Interruptible for Shared {
    fn interrupt(&self) {
        self.state.interrupt();
    }
}

impl Shared {
    fn lock(&self) -> Guard<'_, State> {
        self.state.lock()
    }

    /// Logs one chunk, appends it to the transcript and wakes the waiters.
    /// The log comes first, so whoever sees a match can find it there too.
    fn deliver(&self, bytes: &[u8], reader: &mut Reader) {
        let log_error = reader.log(bytes);
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
    fn finish(&self, why: Ended) {
        let mut st = self.lock();
        st.end_input();
        st.ended.get_or_insert(why);
        drop(st);
        self.state.notify_all();
    }
}

/// Marks the console ended when the drain thread stops, even by a panic.
struct FinishOnDrop(Arc<Shared>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0
            .finish(Ended::Failed("the console drain thread stopped".into()));
    }
}

/// The drain thread: reads until the peer hangs up or `close` shuts the
/// socket down.
fn drain_loop(mut stream: UnixStream, shared: &Shared, mut reader: Reader) {
    let mut buf = std::mem::take(&mut reader.buf);
    let why = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ended::Closed,
            Ok(n) => {
                shared.deliver(&buf[..n], &mut reader);
                std::thread::sleep(NAP);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if is_hangup(&e) => break Ended::Closed,
            Err(e) => break Ended::Failed(e.to_string()),
        }
    };
    shared.finish(why);
}

fn is_hangup(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::NotConnected
    )
}

/// Waits until `fd` is ready for `events` or `until` passes (`None`: no
/// limit); false when it was not ready (or a signal interrupted).
fn poll_until(fd: BorrowedFd<'_>, events: PollFlags, until: Option<Instant>) -> nix::Result<bool> {
    let timeout = match until {
        None => PollTimeout::NONE,
        Some(t) => {
            // Rounded up, so a wait never ends just short of its deadline.
            let micros = t.saturating_duration_since(Instant::now()).as_micros();
            PollTimeout::try_from(micros.div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(fd, events)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Finds a plain text, searching each byte about once across repeated looks.
struct Finder {
    text: String,
    re: regex::Regex,
    /// Absolute offset up to which the transcript was searched in vain.
    searched: usize,
}

impl Finder {
    fn new(text: &str) -> Result<Finder, ConsoleError> {
        // An escaped literal: the regex crate searches it with memchr/memmem.
        let re = regex::Regex::new(&regex::escape(text)).map_err(|e| ConsoleError::BadRegex {
            pattern: text.to_string(),
            message: e.to_string(),
        })?;
        Ok(Finder {
            text: text.to_string(),
            re,
            searched: 0,
        })
    }

    /// The absolute end of the first occurrence after the cursor.
    fn find(&mut self, st: &State) -> Option<usize> {
        // A match can straddle the old end by at most len - 1 bytes.
        let overlap = self.text.len().saturating_sub(1);
        let start = self
            .searched
            .saturating_sub(overlap)
            .max(st.cursor)
            .max(st.base);
        let hay = st.from(start);
        // `from` may have moved back to a character's start.
        let start = st.end() - hay.len();
        match self.re.find(hay) {
            Some(m) => Some(start + m.end()),
            None => {
                self.searched = st.end();
                None
            }
        }
    }
}

/// Of several texts, the one complete first in the stream (the earliest
/// end; ties go to the earlier text), so the answer does not depend on how
/// the output was chunked. Returns its index and absolute end.
fn first_complete(finders: &mut [Finder], st: &State) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, f) in finders.iter_mut().enumerate() {
        if let Some(end) = f.find(st) {
            if best.is_none_or(|(_, e)| end < e) {
                best = Some((i, end));
            }
        }
    }
    best
}

impl Console {
    /// Takes over a connected console socket. With `drain`, a thread reads
    /// it continuously (what QEMU needs); without, waits read it
    /// themselves. Every byte received goes to `log` and `extra_log`.
    pub fn start(
        stream: UnixStream,
        log: Option<File>,
        extra_log: Option<File>,
        drain: bool,
    ) -> std::io::Result<Console> {
        Self::start_capped(stream, log, extra_log, drain, TRANSCRIPT_CAP)
    }

    fn start_capped(
        stream: UnixStream,
        log: Option<File>,
        extra_log: Option<File>,
        drain: bool,
        cap: usize,
    ) -> std::io::Result<Console> {
        stream.set_nonblocking(false)?;
        let shared = Arc::new(Shared {
            state: Waitable::new(State {
                buf: String::new(),
                base: 0,
                cursor: 0,
                partial: Vec::new(),
                received: 0,
                cap,
                ended: None,
                log_error: None,
            }),
        });
        let reader = Reader::new(log, extra_log);
        let mode = if drain {
            let read_side = stream.try_clone()?;
            let guard = FinishOnDrop(shared.clone());
            let thread = std::thread::Builder::new()
                .name("console-drain".into())
                .stack_size(128 << 10)
                .spawn(move || {
                    let guard = guard;
                    drain_loop(read_side, &guard.0, reader);
                })?;
            Mode::Drained {
                thread: Mutex::new(Some(thread)),
            }
        } else {
            Mode::Direct {
                reader: Mutex::new(reader),
            }
        };
        Ok(Console {
            inner: Arc::new(Inner {
                shared,
                stream,
                send_lock: Mutex::new(()),
                mode,
            }),
        })
    }

    /// Sends `text` to the guest as is.
    pub fn send(&self, text: &str) -> Result<(), ConsoleError> {
        self.inner.send_bytes(text.as_bytes())
    }

    /// Sends raw bytes (any value 0x00–0xFF).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        self.inner.send_bytes(bytes)
    }

    /// Sends `text` followed by `"\n"`.
    pub fn send_line(&self, text: &str) -> Result<(), ConsoleError> {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        self.inner.send_bytes(line.as_bytes())
    }

    /// The output since the last read or wait, consumed. A character
    /// whose last bytes have not arrived yet is left for the next read.
    pub fn read(&self) -> String {
        self.inner.read_arrived();
        let mut st = self.inner.shared.lock();
        let end = st.end();
        st.take_to(end)
    }

    /// Waits for `text` and returns the output from the cursor up to and
    /// including it, consumed.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Result<String, ConsoleError> {
        let what = format!("waiting for console text {text:?}");
        let mut finder = Finder::new(text)?;
        self.inner.wait(&what, timeout, |st, _| {
            Ok(match finder.find(st) {
                Some(end) => Look::Done(st.take_to(end)),
                None => Look::NotYet,
            })
        })
    }

    /// Waits for a match of the regex `re` (on the decoded text, see the
    /// module documentation) and returns its captures, index 0 being the
    /// whole match (`None` for a group that did not take part). Consumes up
    /// to the end of the match.
    ///
    /// A match that ends exactly where the output so far ends might grow
    /// (`val=(\d+)` on `val=4` while the `2` is on its way), so it is taken
    /// only once no output came for 10 ms, or at the deadline, or when the
    /// console closed.
    pub fn wait_for_regex(
        &self,
        re: &str,
        timeout: Duration,
    ) -> Result<Vec<Option<String>>, ConsoleError> {
        let regex = regex::Regex::new(re).map_err(|e| ConsoleError::BadRegex {
            pattern: re.to_string(),
            message: e.to_string(),
        })?;
        let what = format!("waiting for console regex {re:?}");
        // When and up to where the output was last searched.
        let mut searched: Option<(Instant, usize)> = None;
        // Since when a match has ended at the end of the output, and that end.
        let mut at_end_since: Option<(Instant, usize)> = None;
        self.inner.wait(&what, timeout, |st, final_look| {
            let (start, end) = (st.cursor, st.end());
            let window = end - start;
            let now = Instant::now();
            if let (false, true, Some((at, searched_end))) =
                (final_look, window > REGEX_RESCAN_FREE, searched)
            {
                let due = at + Duration::from_nanos(window as u64 * REGEX_RESCAN_NS_PER_BYTE);
                if end - searched_end < window / 16 && now < due {
                    return Ok(Look::LookAgainAt(due));
                }
            }
            searched = Some((now, end));
            let Some(caps) = regex.captures(st.from(start)) else {
                return Ok(Look::NotYet);
            };
            let match_end = start + caps.get(0).map_or(0, |m| m.end());
            if match_end == end && !final_look {
                let since = match at_end_since {
                    Some((since, seen_end)) if seen_end == end => since,
                    _ => now,
                };
                at_end_since = Some((since, end));
                if now < since + REGEX_SETTLE {
                    return Ok(Look::LookAgainAt(since + REGEX_SETTLE));
                }
            }
            let groups = caps
                .iter()
                .map(|g| g.map(|m| m.as_str().to_string()))
                .collect();
            st.cursor = match_end;
            Ok(Look::Done(groups))
        })
    }

    /// Waits for any of the plain texts `patterns` and returns the index of
    /// the one complete first in the stream (ties go to the earlier in the
    /// list). Consumes up to its end.
    pub fn expect(&self, patterns: &[&str], timeout: Duration) -> Result<usize, ConsoleError> {
        let what = format!("waiting for any of console texts {patterns:?}");
        let mut finders = patterns
            .iter()
            .map(|p| Finder::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.wait(&what, timeout, |st, _| {
            Ok(match first_complete(&mut finders, st) {
                Some((i, end)) => {
                    st.cursor = end;
                    Look::Done(i)
                }
                None => Look::NotYet,
            })
        })
    }

    /// [`Console::wait_for`] `success`, unless `failure` is complete first:
    /// then [`ConsoleError::Failure`], with the output consumed up to it.
    pub fn wait_for_either(
        &self,
        success: &str,
        failure: Option<&str>,
        timeout: Duration,
    ) -> Result<String, ConsoleError> {
        let what = match failure {
            Some(f) => format!("waiting for console text {success:?} (failure: {f:?})"),
            None => format!("waiting for console text {success:?}"),
        };
        let mut finders = vec![Finder::new(success)?];
        if let Some(f) = failure {
            finders.push(Finder::new(f)?);
        }
        self.inner.wait(&what, timeout, |st, _| {
            match first_complete(&mut finders, st) {
                Some((0, end)) => Ok(Look::Done(st.take_to(end))),
                Some((_, end)) => {
                    st.cursor = end;
                    Err(ConsoleError::Failure {
                        pattern: failure.unwrap_or_default().to_string(),
                        tail: st.tail(ERROR_TAIL),
                    })
                }
                None => Ok(Look::NotYet),
            }
        })
    }

    /// The whole transcript kept in memory; consumes nothing.
    pub fn output(&self) -> String {
        self.inner.read_arrived();
        self.inner.shared.lock().buf.clone()
    }

    /// The last `max_bytes` of the transcript; consumes nothing.
    pub fn tail(&self, max_bytes: usize) -> String {
        self.inner.read_arrived();
        self.inner.shared.lock().tail(max_bytes)
    }

    /// Whether the peer hung up or the console was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.read_arrived();
        self.inner.shared.lock().ended.is_some()
    }

    /// The first error writing a log file (a full or read-only disk): the
    /// log stopped there, the in-memory transcript did not.
    pub fn log_error(&self) -> Option<String> {
        self.inner.shared.lock().log_error.clone()
    }

    /// Shuts the socket down and joins the drain thread, so the log files
    /// are complete when it returns. Idempotent; the transcript stays
    /// readable.
    pub fn close(&self) {
        self.inner.close();
    }

    /// A handle that interrupts this console's waits from any thread:
    /// every wait under way returns [`ConsoleError::Interrupted`],
    /// consuming nothing.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter::new(&self.inner.shared)
    }
}

impl Inner {
    fn send_bytes(&self, mut bytes: &[u8]) -> Result<(), ConsoleError> {
        const WHAT: &str = "sending to the console";
        {
            let st = self.shared.lock();
            if st.ended.is_some() {
                return Err(st.closed_error(WHAT));
            }
        }
        let _turn = lock(&self.send_lock);
        let deadline = Instant::now() + SEND_TIMEOUT;
        let fd = self.stream.as_fd();
        let io = |e: Errno| ConsoleError::Io {
            what: WHAT.to_string(),
            message: e.desc().to_string(),
        };
        while !bytes.is_empty() {
            // MSG_NOSIGNAL: a peer that hung up is an error, not a SIGPIPE.
            match send(
                fd.as_raw_fd(),
                bytes,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if Instant::now() >= deadline {
                        return Err(ConsoleError::Timeout {
                            what: WHAT.to_string(),
                            after: SEND_TIMEOUT,
                            tail: self.shared.lock().tail(ERROR_TAIL),
                        });
                    }
                    poll_until(fd, PollFlags::POLLOUT, Some(deadline)).map_err(io)?;
                }
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(ConsoleError::Closed {
                        what: WHAT.to_string(),
                        tail: self.shared.lock().tail(ERROR_TAIL),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    /// Looks at the transcript with `matcher` until it is done, the
    /// deadline passes or the read side ends. `matcher` gets the state and
    /// whether this is the last look (then it must search everything).
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut matcher: impl FnMut(&mut State, bool) -> Result<Look<T>, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        // `None`: a timeout too large to represent, i.e. no deadline.
        let deadline = Instant::now().checked_add(timeout);
        self.read_arrived();
        let looked = self.shared.state.wait_until_with(
            deadline,
            |st, last| {
                let ended = st.ended.is_some();
                match matcher(st, last || ended) {
                    Ok(Look::Done(v)) => Look::Done(Ok(v)),
                    Err(e) => Look::Done(Err(e)),
                    Ok(_) if ended => Look::Done(Err(st.closed_error(what))),
                    Ok(Look::NotYet) => Look::NotYet,
                    Ok(Look::LookAgainAt(t)) => Look::LookAgainAt(t),
                }
            },
            |st, until| self.block(st, until),
        );
        match looked {
            Ok(result) => result,
            Err(Stopped {
                why: Stop::Interrupted,
                ..
            }) => Err(ConsoleError::Interrupted {
                what: what.to_string(),
            }),
            Err(Stopped {
                why: Stop::Deadline,
                state,
            }) => Err(ConsoleError::Timeout {
                what: what.to_string(),
                after: timeout,
                tail: state.tail(ERROR_TAIL),
            }),
        }
    }

    /// Sleeps until new output, the read side ending, or `until`. In direct
    /// mode the first waiter to get here reads the socket for everyone.
    fn block<'a>(&'a self, st: Guard<'a, State>, until: Option<Instant>) -> Guard<'a, State> {
        if let Mode::Direct { reader } = &self.mode {
            if let Some(mut reader) = try_lock(reader) {
                drop(st);
                // In slices, so that an interrupt is seen soon.
                let slice = Instant::now() + DIRECT_SLICE;
                let until = Some(until.map_or(slice, |t| t.min(slice)));
                self.read_socket(&mut reader, until);
                drop(reader);
                // Taking the state lock before notifying: a waiter that
                // found the reader busy is then already asleep on the
                // condvar, and wakes up to take over reading.
                let st = self.shared.lock();
                self.shared.state.notify_all();
                return st;
            }
        }
        st.sleep(until)
    }

    /// In direct mode, takes in what has arrived, without waiting (and not
    /// at all while someone else is reading).
    fn read_arrived(&self) {
        if let Mode::Direct { reader } = &self.mode {
            if let Some(mut reader) = try_lock(reader) {
                self.read_socket(&mut reader, Some(Instant::now()));
            }
        }
    }

    /// Direct mode: waits until `until` for output, then reads what is there.
    fn read_socket(&self, reader: &mut Reader, until: Option<Instant>) {
        let fd = self.stream.as_fd();
        match poll_until(fd, PollFlags::POLLIN, until) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.shared.finish(Ended::Failed(e.desc().to_string())),
        }
        let mut buf = std::mem::take(&mut reader.buf);
        let mut got = 0;
        let ended = loop {
            if got == buf.len() {
                break None;
            }
            match recv(fd.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break Some(Ended::Closed),
                Ok(n) => got += n,
                Err(Errno::EAGAIN) => break None,
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET | Errno::EPIPE | Errno::ENOTCONN) => {
                    break Some(Ended::Closed)
                }
                Err(e) => break Some(Ended::Failed(e.desc().to_string())),
            }
        };
        if got > 0 {
            self.shared.deliver(&buf[..got], reader);
        }
        reader.buf = buf;
        if let Some(why) = ended {
            self.shared.finish(why);
        }
    }

    fn close(&self) {
        // Direct mode: what already arrived still goes to the log.
        self.read_arrived();
        // Wakes the drain thread's read with end-of-file; errors mean the
        // socket is already down.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Mode::Drained { thread } = &self.mode {
            // Held while joining, so a concurrent close returns only once
            // the thread is gone too.
            let mut thread = lock(thread);
            if let Some(handle) = thread.take() {
                // A panic in the thread was already recorded by its guard.
                let _ = handle.join();
            }
        }
        self.shared.finish(Ended::Closed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const LONG: Duration = Duration::from_secs(10);

    fn console(drain: bool) -> (Console, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        (Console::start(ours, None, None, drain).unwrap(), peer)
    }

    /// A file path unique to this test, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            TempPath(
                std::env::temp_dir()
                    .join(format!("vmscript-console-{}-{name}", std::process::id())),
            )
        }
        fn create(&self) -> File {
            File::create(&self.0).unwrap()
        }
        fn read(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Waits until `len` bytes have been received.
    fn wait_len(con: &Console, len: usize) {
        let deadline = Instant::now() + LONG;
        while con.inner.shared.lock().received < len {
            assert!(Instant::now() < deadline, "only got {:?}", con.output());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn wait_for_matches_text_split_across_writes() {
        let (con, mut peer) = console(true);
        let writer = std::thread::spawn(move || {
            for part in ["boot...lo", "gi", "n: more"] {
                peer.write_all(part.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            peer
        });
        assert_eq!(con.wait_for("login:", LONG).unwrap(), "boot...login:");
        let _peer = writer.join().unwrap();
        wait_len(&con, "boot...login: more".len());
        assert_eq!(con.read(), " more");
    }

    #[test]
    fn wait_for_sees_prompt_without_newline() {
        let (con, mut peer) = console(true);
        peer.write_all(b"Welcome\r\n/ # \x1b[6n").unwrap();
        assert_eq!(con.wait_for("/ # ", LONG).unwrap(), "Welcome\r\n/ # ");
        wait_len(&con, 17);
        assert_eq!(con.read(), "\x1b[6n");
    }

    #[test]
    fn read_returns_only_new_output() {
        let (con, mut peer) = console(true);
        assert_eq!(con.read(), "");
        peer.write_all(b"hello").unwrap();
        wait_len(&con, 5);
        assert_eq!(con.read(), "hello");
        assert_eq!(con.read(), "");
        peer.write_all(b" world").unwrap();
        wait_len(&con, 11);
        assert_eq!(con.read(), " world");
        assert_eq!(con.output(), "hello world");
    }

    #[test]
    fn read_keeps_an_incomplete_character_for_later() {
        let (con, mut peer) = console(true);
        peer.write_all(b"caf\xC3").unwrap();
        wait_len(&con, 4);
        assert_eq!(con.read(), "caf");
        peer.write_all(b"\xA9!").unwrap();
        wait_len(&con, "café!".len());
        assert_eq!(con.read(), "é!");
    }

    #[test]
    fn expect_picks_the_pattern_complete_first() {
        let (con, mut peer) = console(true);
        peer.write_all(b"boot\nPassword: x\nlogin: y\n# ").unwrap();
        let pats = ["login:", "Password:", "# "];
        assert_eq!(con.expect(&pats, LONG).unwrap(), 1);
        assert_eq!(con.expect(&pats, LONG).unwrap(), 0);
        assert_eq!(con.expect(&pats, LONG).unwrap(), 2);
        // "b" is complete before "abc" is, whatever the chunking.
        peer.write_all(b"abc").unwrap();
        assert_eq!(con.expect(&["abc", "b"], LONG).unwrap(), 1);
        wait_len(&con, 29);
        assert_eq!(con.read(), "c");
    }

    #[test]
    fn wait_for_regex_returns_captures() {
        let (con, mut peer) = console(true);
        peer.write_all(b"eth0: IP 10.0.2.15 up\n").unwrap();
        let caps = con
            .wait_for_regex(r"IP (\d+)\.(\d+)\.\d+\.\d+( gw)?", LONG)
            .unwrap();
        assert_eq!(
            caps,
            vec![
                Some("IP 10.0.2.15".to_string()),
                Some("10".to_string()),
                Some("0".to_string()),
                None
            ]
        );
        assert_eq!(con.read(), " up\n");
    }

    #[test]
    fn wait_for_regex_finds_a_late_match_after_much_output() {
        let (con, mut peer) = console(true);
        let noise = "noise line without the marker\n".repeat(10_000);
        let writer = std::thread::spawn(move || {
            peer.write_all(noise.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(b"READY 42\n").unwrap();
            peer
        });
        let t0 = Instant::now();
        let caps = con.wait_for_regex(r"READY (\d+)", LONG).unwrap();
        assert_eq!(caps[1].as_deref(), Some("42"));
        assert!(t0.elapsed() < Duration::from_secs(3));
        let _peer = writer.join().unwrap();
    }

    #[test]
    fn wait_for_regex_lets_a_match_at_the_end_grow() {
        let (con, mut peer) = console(true);
        let writer = std::thread::spawn(move || {
            peer.write_all(b"val=4").unwrap();
            std::thread::sleep(Duration::from_millis(3));
            peer.write_all(b"2").unwrap();
            peer
        });
        let t0 = Instant::now();
        let caps = con.wait_for_regex(r"val=(\d+)", LONG).unwrap();
        let took = t0.elapsed();
        assert_eq!(caps[1].as_deref(), Some("42"));
        // Taken once the output has been quiet for a while, not at the deadline.
        assert!(took >= Duration::from_millis(10), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        let _peer = writer.join().unwrap();
    }

    #[test]
    fn wait_for_regex_takes_a_match_at_the_end_when_closed() {
        let (con, mut peer) = console(true);
        peer.write_all(b"rc=7").unwrap();
        drop(peer);
        let caps = con.wait_for_regex(r"rc=(\d+)", LONG).unwrap();
        assert_eq!(caps[1].as_deref(), Some("7"));
    }

    #[test]
    fn bad_regex_is_reported() {
        let (con, _peer) = console(true);
        let err = con.wait_for_regex("(unclosed", LONG).unwrap_err();
        assert!(matches!(&err, ConsoleError::BadRegex { pattern, .. } if pattern == "(unclosed"));
    }

    #[test]
    fn timeout_names_the_text_and_carries_the_tail() {
        let (con, mut peer) = console(true);
        peer.write_all(b"some boot text").unwrap();
        let t0 = Instant::now();
        let err = con
            .wait_for("never", Duration::from_millis(300))
            .unwrap_err();
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(800), "{took:?}");
        match &err {
            ConsoleError::Timeout { tail, after, .. } => {
                assert_eq!(tail, "some boot text");
                assert_eq!(*after, Duration::from_millis(300));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            err.to_string(),
            "timed out after 300ms waiting for console text \"never\"; \
             last output: \"some boot text\""
        );
        // Nothing was consumed.
        assert_eq!(con.read(), "some boot text");
    }

    #[test]
    fn timeout_tail_is_the_last_2_kib() {
        let (con, mut peer) = console(true);
        let text = "x".repeat(5000) + "END";
        peer.write_all(text.as_bytes()).unwrap();
        wait_len(&con, text.len());
        match con.wait_for("never", Duration::ZERO).unwrap_err() {
            ConsoleError::Timeout { tail, .. } => {
                assert_eq!(tail.len(), 2048);
                assert!(tail.ends_with("xEND"));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn wait_fails_fast_when_peer_hangs_up() {
        let (con, mut peer) = console(true);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            peer.write_all(b"bye\n").unwrap();
        });
        let t0 = Instant::now();
        let err = con.wait_for("never", Duration::from_secs(30)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(
            matches!(&err, ConsoleError::Closed { tail, .. } if tail == "bye\n"),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("console closed while waiting"));
        assert!(con.is_closed());
    }

    #[test]
    fn output_received_before_hang_up_still_matches() {
        let (con, mut peer) = console(true);
        peer.write_all(b"ready\n").unwrap();
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(con.wait_for("ready", LONG).unwrap(), "ready");
        let t0 = Instant::now();
        assert!(matches!(
            con.wait_for("more", LONG),
            Err(ConsoleError::Closed { .. })
        ));
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(matches!(
            con.send_line("ls"),
            Err(ConsoleError::Closed { .. })
        ));
    }

    #[test]
    fn failure_pattern_seen_first_fails_the_wait() {
        let (con, mut peer) = console(true);
        peer.write_all(b"booting\nKernel panic - not syncing\nlogin:")
            .unwrap();
        let err = con
            .wait_for_either("login:", Some("Kernel panic"), LONG)
            .unwrap_err();
        assert!(
            matches!(&err, ConsoleError::Failure { pattern, tail }
                if pattern == "Kernel panic" && tail.contains("not syncing")),
            "{err:?}"
        );
        // The failure was consumed; the success text is still ahead.
        assert_eq!(
            con.wait_for_either("login:", Some("Kernel panic"), LONG)
                .unwrap(),
            " - not syncing\nlogin:"
        );
    }

    #[test]
    fn send_and_send_line_reach_the_peer() {
        let (con, mut peer) = console(true);
        con.send("root").unwrap();
        con.send_line("ls /").unwrap();
        let mut got = [0u8; 9];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"rootls /\n");
    }

    #[test]
    fn streams_2_mib_written_one_byte_at_a_time() {
        let log = TempPath::new("stream.log");
        let extra = TempPath::new("stream.extra");
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let con = Console::start(ours, Some(log.create()), Some(extra.create()), true).unwrap();
        let mut data = Vec::with_capacity(2 << 20);
        let mut i = 0;
        while data.len() < (2 << 20) - 16 {
            data.extend_from_slice(format!("line {i:08}\n").as_bytes());
            i += 1;
        }
        data.extend_from_slice(b"END-OF-STREAM\n");
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            for b in &sent {
                peer.write_all(std::slice::from_ref(b)).unwrap();
            }
            peer
        });
        let t0 = Instant::now();
        let got = con
            .wait_for("END-OF-STREAM", Duration::from_secs(120))
            .unwrap();
        eprintln!("2 MiB one byte at a time in {:?}", t0.elapsed());
        let _peer = writer.join().unwrap();
        assert_eq!(got.len(), data.len() - 1);
        wait_len(&con, data.len());
        assert_eq!(con.output().as_bytes(), &data[..]);
        con.close();
        assert_eq!(log.read(), data);
        assert_eq!(extra.read(), data);
    }

    #[test]
    fn log_has_what_a_wait_has_seen() {
        let log = TempPath::new("seen.log");
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let con = Console::start(ours, Some(log.create()), None, true).unwrap();
        peer.write_all(b"first\n").unwrap();
        con.wait_for("first", LONG).unwrap();
        assert_eq!(log.read(), b"first\n");
    }

    #[test]
    fn output_returns_the_whole_transcript() {
        let (con, mut peer) = console(true);
        peer.write_all(b"one\n").unwrap();
        con.wait_for("one", LONG).unwrap();
        assert_eq!(con.read(), "\n");
        peer.write_all(b"two\n").unwrap();
        con.wait_for("two\n", LONG).unwrap();
        assert_eq!(con.output(), "one\ntwo\n");
        assert_eq!(con.tail(4), "two\n");
        assert_eq!(con.tail(100), "one\ntwo\n");
    }

    #[test]
    fn transcript_cap_drops_oldest_and_keeps_offsets() {
        let log = TempPath::new("cap.log");
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let con = Console::start_capped(ours, Some(log.create()), None, true, 1024).unwrap();
        peer.write_all(b"head\n").unwrap();
        assert_eq!(con.wait_for("head", LONG).unwrap(), "head");
        let body = "0123456789abcdef".repeat(640);
        peer.write_all(body.as_bytes()).unwrap();
        peer.write_all(b"MARK tail").unwrap();
        let got = con.wait_for("MARK", LONG).unwrap();
        assert!(got.ends_with("cdefMARK"), "{got:?}");
        assert!(got.len() <= 1024);
        wait_len_at_least_end(&con, "MARK tail");
        assert!(con.output().len() <= 1024);
        assert_eq!(con.read(), " tail");
        con.close();
        let mut all = b"head\n".to_vec();
        all.extend_from_slice(body.as_bytes());
        all.extend_from_slice(b"MARK tail");
        assert_eq!(log.read(), all);
    }

    fn wait_len_at_least_end(con: &Console, end: &str) {
        let deadline = Instant::now() + LONG;
        while !con.output().ends_with(end) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn close_joins_the_drain_thread() {
        let (con, mut peer) = console(true);
        let shared = Arc::downgrade(&con.inner.shared);
        // The console's handle and the drain thread's.
        assert_eq!(shared.strong_count(), 2);
        peer.write_all(b"x").unwrap();
        con.wait_for("x", LONG).unwrap();
        con.close();
        assert_eq!(shared.strong_count(), 1);
        assert!(con.is_closed());
        con.close();
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
        assert!(matches!(con.send("y"), Err(ConsoleError::Closed { .. })));
        assert_eq!(con.output(), "x");
    }

    #[test]
    fn close_wakes_a_pending_wait() {
        let (con, _peer) = console(true);
        let other = con.clone();
        let waiter = std::thread::spawn(move || other.wait_for("never", Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        con.close();
        let res = waiter.join().unwrap();
        assert!(matches!(res, Err(ConsoleError::Closed { .. })), "{res:?}");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn dropping_the_last_handle_stops_the_thread() {
        let (con, mut peer) = console(true);
        let shared = Arc::downgrade(&con.inner.shared);
        let clone = con.clone();
        drop(con);
        assert_eq!(shared.strong_count(), 2, "a clone keeps it open");
        peer.write_all(b"still here").unwrap();
        clone.wait_for("here", LONG).unwrap();
        drop(clone);
        assert_eq!(shared.strong_count(), 0);
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn without_drain_waits_read_the_socket() {
        let log = TempPath::new("direct.log");
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let con = Console::start(ours, Some(log.create()), None, false).unwrap();
        assert_eq!(Arc::strong_count(&con.inner.shared), 1, "no thread");
        let writer = std::thread::spawn(move || {
            peer.write_all(b"Welcome\n/ # ").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(b"\x1b[6nIP 10.0.2.15\n").unwrap();
            peer
        });
        assert_eq!(con.wait_for("/ # ", LONG).unwrap(), "Welcome\n/ # ");
        let caps = con.wait_for_regex(r"IP (\S+)", LONG).unwrap();
        assert_eq!(caps[1].as_deref(), Some("10.0.2.15"));
        let mut peer = writer.join().unwrap();
        assert_eq!(con.read(), "\n");
        assert!(matches!(
            con.wait_for("never", Duration::from_millis(100)),
            Err(ConsoleError::Timeout { .. })
        ));
        con.send_line("ls").unwrap();
        let mut got = [0u8; 3];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ls\n");
        peer.write_all(b"late").unwrap();
        assert_eq!(con.read(), "late");
        assert!(!con.is_closed());
        let hang_up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(peer);
        });
        let t0 = Instant::now();
        assert!(matches!(
            con.wait_for("never", Duration::from_secs(30)),
            Err(ConsoleError::Closed { .. })
        ));
        assert!(t0.elapsed() < Duration::from_secs(1));
        hang_up.join().unwrap();
        assert!(con.is_closed());
        con.close();
        assert_eq!(log.read(), b"Welcome\n/ # \x1b[6nIP 10.0.2.15\nlate");
    }

    #[test]
    fn without_drain_close_wakes_a_pending_wait() {
        let (con, _peer) = console(false);
        let other = con.clone();
        let waiter = std::thread::spawn(move || other.wait_for("never", Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        con.close();
        let res = waiter.join().unwrap();
        assert!(matches!(res, Err(ConsoleError::Closed { .. })), "{res:?}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(con.is_closed());
    }

    #[test]
    fn without_drain_two_waiters_share_the_reading() {
        let (con, mut peer) = console(false);
        let other = con.clone();
        let first = std::thread::spawn(move || other.expect(&["one"], LONG));
        std::thread::sleep(Duration::from_millis(50));
        let second = con.clone();
        let later = std::thread::spawn(move || second.wait_for("two", LONG));
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(b"one ").unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 0);
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(b"two").unwrap();
        assert_eq!(later.join().unwrap().unwrap(), " two");
    }

    #[test]
    fn decoding_in_pieces_equals_decoding_the_whole_stream() {
        let stream: &[u8] =
            b"a\xC3\xA9b\xFF\xE2\x82\xACc\xE2\x82d\xF0\x9F\x98\x80\xC3\xF0\x9F\xED\xA0\x80e\xC3";
        let whole = String::from_utf8_lossy(stream).into_owned();
        // Every way of cutting the stream in two and in three.
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut st = State {
                    buf: String::new(),
                    base: 0,
                    cursor: 0,
                    partial: Vec::new(),
                    received: 0,
                    cap: TRANSCRIPT_CAP,
                    ended: None,
                    log_error: None,
                };
                st.append(&stream[..i]);
                st.append(&stream[i..j]);
                st.append(&stream[j..]);
                st.end_input();
                assert_eq!(st.buf, whole, "cut at {i} and {j}");
                assert_eq!(st.received, stream.len());
            }
        }
    }

    #[test]
    fn an_invalid_byte_does_not_stop_later_regex_waits() {
        for drain in [true, false] {
            let (con, mut peer) = console(drain);
            let (first, second): (&[u8], &[u8]) = (
                b"$ printf 'bin\\377'\r\nbin\xFF\r\nDONE-1\r\n",
                b"more\xFE output\r\nDONE-2\r\n",
            );
            peer.write_all(first).unwrap();
            let caps = con.wait_for_regex(r"([\s\S]*?)DONE-(\d+)", LONG).unwrap();
            assert_eq!(caps[2].as_deref(), Some("1"), "drain {drain}");
            assert!(caps[1].as_deref().unwrap().contains("bin\u{FFFD}\r\n"));
            peer.write_all(second).unwrap();
            let caps = con.wait_for_regex(r"([\s\S]*?)DONE-(\d+)", LONG).unwrap();
            assert_eq!(caps[1].as_deref(), Some("\r\nmore\u{FFFD} output\r\n"));
            assert_eq!(caps[2].as_deref(), Some("2"));
            // What the waits saw is what output() and read() show.
            assert!(con
                .output()
                .contains("bin\u{FFFD}\r\nDONE-1\r\nmore\u{FFFD} output"));
            wait_len(&con, first.len() + second.len());
            assert_eq!(con.read(), "\r\n");
        }
    }

    #[test]
    fn plain_waits_match_a_replacement_character_and_split_characters() {
        let (con, mut peer) = console(true);
        peer.write_all(b"x\xFFy \xE2\x82").unwrap();
        assert_eq!(con.wait_for("x\u{FFFD}y", LONG).unwrap(), "x\u{FFFD}y");
        wait_len(&con, 6);
        // The half of a character is not text yet.
        assert_eq!(con.read(), " ");
        peer.write_all(b"\xAC!").unwrap();
        assert_eq!(con.wait_for("\u{20AC}!", LONG).unwrap(), "\u{20AC}!");
    }

    #[test]
    fn a_character_cut_off_by_the_end_becomes_a_replacement_character() {
        let (con, mut peer) = console(true);
        peer.write_all(b"last \xE2\x82").unwrap();
        drop(peer);
        let err = con.wait_for("never", LONG).unwrap_err();
        assert!(
            matches!(&err, ConsoleError::Closed { tail, .. } if tail == "last \u{FFFD}"),
            "{err:?}"
        );
        assert_eq!(con.read(), "last \u{FFFD}");
    }

    #[test]
    fn an_interrupt_ends_a_wait_and_consumes_nothing() {
        for drain in [true, false] {
            let (con, mut peer) = console(drain);
            peer.write_all(b"partial output").unwrap();
            let interrupter = con.interrupter();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                interrupter.interrupt();
            });
            let start = Instant::now();
            let err = con.wait_for("never", Duration::from_secs(30)).unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(5), "drain {drain}");
            assert!(
                matches!(&err, ConsoleError::Interrupted { what } if what.contains("never")),
                "{err:?}"
            );
            t.join().unwrap();
            // The console goes on, with the output still unconsumed.
            peer.write_all(b" then more").unwrap();
            assert_eq!(
                con.wait_for("more", LONG).unwrap(),
                "partial output then more"
            );
        }
    }
}
