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
//! The files follow the seam between reading and matching: `reader.rs`
//! (the drain thread, or the read a waiter does) fills the transcript
//! (`transcript.rs`), the matchers (`matchers.rs`) read it, and this file
//! holds the API and the wait that joins them.
//!
//! Start reading at [`Console::start`] and [`Console::wait_for`].

mod matchers;
mod reader;
mod timed;
mod transcript;

use std::fs::File;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{send, MsgFlags};

pub use crate::sync::Interrupter;
use crate::sync::{lock, try_lock, Guard, Look, Stop, Stopped, Waitable};
use matchers::{first_complete, Finder, RegexMatcher};
use reader::Reader;
use transcript::{Ended, Shared, Transcript};

/// The most transcript kept in memory; see the module documentation.
const TRANSCRIPT_CAP: usize = 64 << 20;
/// How much of the transcript an error carries.
const ERROR_TAIL: usize = 2 << 10;
/// How long a send may wait for the guest to take its input.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
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

    /// [`Console::start`], also writing each line with the time it began
    /// (seconds since `clock`) to `timed`, as JSON lines.
    pub fn start_timed(
        stream: UnixStream,
        log: Option<File>,
        extra_log: Option<File>,
        timed: (File, Instant),
        drain: bool,
    ) -> std::io::Result<Console> {
        let timed = Some(timed::TimedLog::new(timed.0, timed.1));
        Self::start_with(
            stream,
            Reader::new(log, extra_log, timed),
            drain,
            TRANSCRIPT_CAP,
        )
    }

    fn start_capped(
        stream: UnixStream,
        log: Option<File>,
        extra_log: Option<File>,
        drain: bool,
        cap: usize,
    ) -> std::io::Result<Console> {
        Self::start_with(stream, Reader::new(log, extra_log, None), drain, cap)
    }

    fn start_with(
        stream: UnixStream,
        reader: Reader,
        drain: bool,
        cap: usize,
    ) -> std::io::Result<Console> {
        stream.set_nonblocking(false)?;
        let shared = Arc::new(Shared {
            state: Waitable::new(Transcript::new(cap)),
        });
        let mode = if drain {
            let thread = reader::start_drain(stream.try_clone()?, shared.clone(), reader)?;
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
        let mut matcher = RegexMatcher::new(re)?;
        let what = format!("waiting for console regex {re:?}");
        self.inner
            .wait(&what, timeout, |st, last| Ok(matcher.look(st, last)))
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

    /// Where the transcript ends now, as an offset in the whole output
    /// (decoded text): where [`Console::output_since`] starts to follow it.
    pub fn end_offset(&self) -> usize {
        self.inner.read_arrived();
        self.inner.shared.lock().end()
    }

    /// The output after offset `from` (of [`Console::end_offset`]) and
    /// where it ends, without waiting and consuming nothing: a terminal
    /// follows the console with it while waits and reads still see every
    /// character.
    pub fn output_since(&self, from: usize) -> (String, usize) {
        self.inner.read_arrived();
        let st = self.inner.shared.lock();
        (st.from(from.max(st.base)).to_string(), st.end())
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
                    reader::poll_until(fd, PollFlags::POLLOUT, Some(deadline)).map_err(io)?;
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
        mut matcher: impl FnMut(&mut Transcript, bool) -> Result<Look<T>, ConsoleError>,
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
    fn block<'a>(
        &'a self,
        st: Guard<'a, Transcript>,
        until: Option<Instant>,
    ) -> Guard<'a, Transcript> {
        if let Mode::Direct { reader } = &self.mode {
            if let Some(mut reader) = try_lock(reader) {
                drop(st);
                // In slices, so that an interrupt is seen soon.
                let slice = Instant::now() + DIRECT_SLICE;
                let until = Some(until.map_or(slice, |t| t.min(slice)));
                reader.read_available(self.stream.as_fd(), &self.shared, until);
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
                reader.read_available(self.stream.as_fd(), &self.shared, Some(Instant::now()));
            }
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
mod tests;
