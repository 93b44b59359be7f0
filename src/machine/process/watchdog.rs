//! The [`Watchdog`] process that kills our children's process groups when
//! vmscript dies. Part of the process module's unsafe code (a `fork` and
//! what the forked child may do).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use super::spawn::reset_signals;

/// Kills the process groups of vmscript's children when vmscript dies,
/// a SIGKILL included, so that nothing they forked outlives it.
///
/// A process of its own, forked at first use (`vmscript run` and `repl`
/// use it at once, while they are small, since a fork keeps the pages it
/// was forked with) and forked again, so that it is nobody's child of
/// ours and, in a session of its own, out of reach of the terminal's
/// signals for vmscript. It reads group ids from a pipe whose only write
/// end vmscript holds: `+id` watches a group, `-id` forgets it. When the
/// pipe ends, every writer is gone, so vmscript is: it SIGKILLs each group
/// still watched, then exits. A child tells the watchdog of its own group
/// before it `exec`s ([`Watchdog::watch_own_group`]), so nothing it runs
/// can fork before the watch; its owner forgets the group once it has
/// killed it or found it empty (QEMU's, before reaping its leader), so
/// that the id is never a stranger's when the watchdog uses it.
#[derive(Debug)]
pub struct Watchdog {
    /// The write end: close-on-exec and non-blocking (a stopped watchdog
    /// costs a group its watch, never a stalled launch).
    pipe: OwnedFd,
}

/// Groups watched at once; past that, a group has only its leader's
/// parent-death signal.
const WATCHED_GROUPS: usize = 4096;

impl Watchdog {
    /// The watchdog, started at first use; `None` when it could not be
    /// (children then have their parent-death signal only).
    pub fn get() -> Option<&'static Watchdog> {
        static WATCHDOG: OnceLock<Option<Watchdog>> = OnceLock::new();
        WATCHDOG.get_or_init(|| Watchdog::start().ok()).as_ref()
    }

    /// Has the calling process's group (it must lead one) killed when
    /// vmscript dies. Async-signal-safe and allocation-free: for a child
    /// between fork and exec, where the pipe is still open.
    pub fn watch_own_group(&self) {
        // SAFETY: getpid has no preconditions.
        self.send(unsafe { libc::getpid() });
    }

    /// Has group `pgid`, led by a child of ours not yet reaped, killed
    /// when vmscript dies.
    pub fn watch(&self, pgid: i32) {
        self.send(pgid);
    }

    /// Stops watching group `pgid`: call it once the group has been
    /// killed or is empty, before its leader is reaped.
    pub fn forget(&self, pgid: i32) {
        self.send(-pgid);
    }

    fn send(&self, record: i32) {
        let bytes = record.to_ne_bytes();
        // SAFETY: a write of 4 bytes from a local array; at most
        // PIPE_BUF, so records from several threads never interleave.
        unsafe {
            while libc::write(self.pipe.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
    }

    fn start() -> std::io::Result<Watchdog> {
        let mut ends = [0; 2];
        // SAFETY: pipe2 fills `ends` with two new descriptors we then own.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors from pipe2 that nothing else owns.
        let (read, first) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        // Above the standard descriptors, which a child's set-up replaces
        // before it tells the watchdog of its group.
        // SAFETY: fcntl on our own descriptor; the copy is then owned.
        let write = unsafe {
            let fd = libc::fcntl(first.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            fd
        };
        drop(first);
        // Allocated now: after the fork only syscalls are safe.
        let mut groups = vec![0i32; WATCHED_GROUPS];
        // SAFETY: the child runs only syscalls (watch_groups), on memory
        // it was given before the fork, and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child of the fork above.
            unsafe { watch_groups(read.as_raw_fd(), &mut groups) }
        }
        drop(read);
        // SAFETY: reaps the short-lived first child, which is ours.
        let mut status = 0;
        unsafe {
            while libc::waitpid(pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(std::io::Error::other("the watchdog process did not start"));
        }
        Ok(Watchdog { pipe: write })
    }
}

/// The watchdog's life, in the first child of [`Watchdog::start`]: a new
/// session, a second fork (its parent exits at once), every descriptor
/// but the pipe's read end closed, then the watch.
///
/// # Safety
/// Only in a freshly forked child: syscalls only, `groups` allocated
/// before the fork.
unsafe fn watch_groups(pipe: RawFd, groups: &mut [i32]) -> ! {
    if libc::setsid() < 0 {
        libc::_exit(1);
    }
    match libc::fork() {
        0 => {}
        n if n > 0 => libc::_exit(0),
        _ => libc::_exit(1),
    }
    // Holding no copy of vmscript's descriptors: a socket or pipe of
    // vmscript must end when vmscript closes it, and the pipe's write end
    // when vmscript dies.
    let rest = (pipe as libc::c_uint).saturating_add(1);
    let closed = pipe == 0 || libc::syscall(libc::SYS_close_range, 0, pipe - 1, 0) == 0;
    if !(closed && libc::syscall(libc::SYS_close_range, rest, libc::c_uint::MAX, 0) == 0) {
        for fd in (0..65536).filter(|&fd| fd != pipe) {
            libc::close(fd);
        }
    }
    reset_signals();
    libc::prctl(libc::PR_SET_NAME, c"vmscript-watch".as_ptr(), 0, 0, 0);
    let mut watched = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = libc::read(pipe, buf.as_mut_ptr().cast(), buf.len());
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        // Writes of 4 bytes are atomic, so a read holds whole records.
        for record in buf[..n as usize].chunks_exact(4) {
            let id = i32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
            if id > 0 && watched < groups.len() {
                groups[watched] = id;
                watched += 1;
            } else if id < 0 {
                if let Some(at) = groups[..watched].iter().position(|&g| g == -id) {
                    watched -= 1;
                    groups[at] = groups[watched];
                }
            }
        }
    }
    for &g in &groups[..watched] {
        libc::kill(-g, libc::SIGKILL);
    }
    libc::_exit(0)
}
