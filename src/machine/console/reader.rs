//! The console's read side: the drain thread that reads the socket
//! continuously, or, without one, the read a waiting thread does for
//! everyone. Every chunk goes to the log files first, then onto the
//! [`Transcript`](super::transcript::Transcript).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{recv, MsgFlags};

use super::timed::TimedLog;
use super::transcript::{Ended, Shared};

/// The read buffer, far larger than what the socket ever holds.
const READ_BUF: usize = 64 << 10;
/// The drain thread's nap after each read (see the [console
/// documentation](super)).
const NAP: Duration = Duration::from_micros(150);

/// The read side's buffer and log files.
pub(super) struct Reader {
    buf: Vec<u8>,
    logs: Vec<File>,
    timed: Option<TimedLog>,
}

impl Reader {
    pub(super) fn new(
        log: Option<File>,
        extra_log: Option<File>,
        timed: Option<TimedLog>,
    ) -> Reader {
        Reader {
            buf: vec![0; READ_BUF],
            logs: log.into_iter().chain(extra_log).collect(),
            timed,
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
        if let Some(Err(e)) = self.timed.as_mut().map(|t| t.write(bytes)) {
            failed.get_or_insert_with(|| e.to_string());
            self.timed = None;
        }
        failed
    }

    /// Logs one chunk, then appends it to the transcript. The log comes
    /// first, so whoever sees a match can find it there too.
    fn deliver(&mut self, shared: &Shared, bytes: &[u8]) {
        let log_error = self.log(bytes);
        shared.append(bytes, log_error);
    }

    /// Without a drain thread: waits until `until` for output on `fd`, then
    /// reads what is there.
    pub(super) fn read_available(
        &mut self,
        fd: BorrowedFd<'_>,
        shared: &Shared,
        until: Option<Instant>,
    ) {
        match poll_until(fd, PollFlags::POLLIN, until) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return shared.finish(Ended::Failed(e.desc().to_string())),
        }
        let mut buf = std::mem::take(&mut self.buf);
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
            self.deliver(shared, &buf[..got]);
        }
        self.buf = buf;
        if let Some(why) = ended {
            shared.finish(why);
        }
    }
}

/// Starts the drain thread, which owns `read_side` from now on.
pub(super) fn start_drain(
    read_side: UnixStream,
    shared: Arc<Shared>,
    reader: Reader,
) -> std::io::Result<JoinHandle<()>> {
    let guard = FinishOnDrop(shared);
    std::thread::Builder::new()
        .name("console-drain".into())
        .stack_size(128 << 10)
        .spawn(move || {
            let guard = guard;
            drain_loop(read_side, &guard.0, reader);
        })
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
                reader.deliver(shared, &buf[..n]);
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
pub(super) fn poll_until(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    until: Option<Instant>,
) -> nix::Result<bool> {
    crate::sync::poll_until(&mut [PollFd::new(fd, events)], until)
}
