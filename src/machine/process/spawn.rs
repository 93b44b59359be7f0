//! The child's start: [`vfork_exec`], `clone(CLONE_VM | CLONE_VFORK)` and
//! `execve` with everything the child does prepared by the parent. Part of
//! the process module's unsafe code, kept apart from the supervision that
//! uses it.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use super::{which, Watchdog};

/// Everything the child does between the clone and `execve`, prepared by
/// the parent: the child shares the parent's memory (`CLONE_VM`) and must
/// not allocate, since another thread may hold the allocator's lock.
struct Exec {
    path: CString,
    /// Null-terminated, pointing into `strings`.
    argv: Vec<*const libc::c_char>,
    /// Null-terminated, pointing into `strings`.
    envp: Vec<*const libc::c_char>,
    _strings: Vec<CString>,
    stdin: RawFd,
    log: RawFd,
    keep: Vec<RawFd>,
    parent: libc::pid_t,
    watchdog: Option<&'static Watchdog>,
    /// The errno of the step that failed in the child; 0 once it reached
    /// a successful `execve`.
    error: AtomicI32,
}

/// The child's stack; it needs well under a page.
const CHILD_STACK: usize = 64 << 10;

/// Starts `argv` the way `posix_spawn` does, with `clone(CLONE_VM |
/// CLONE_VFORK)`: no copy of our page tables, and this thread sleeps only
/// until the child has called `execve`. A `fork` (what `Command` does once
/// `pre_exec` is set) costs time proportional to our memory, and every page
/// we write afterwards faults once; `posix_spawn` itself cannot set the
/// parent-death signal. In the child: a process group of its own,
/// `PR_SET_PDEATHSIG`, stdin from /dev/null, stdout and stderr into `log`,
/// and `keep` inherited. Returns the child's pid.
pub(super) fn vfork_exec(
    argv: &[String],
    log: RawFd,
    keep: &[RawFd],
) -> std::io::Result<libc::pid_t> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    };
    let program = argv
        .first()
        .ok_or_else(|| std::io::Error::other("empty command line"))?;
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        which(program).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{program} not found in PATH"),
            )
        })?
    };
    let path = CString::new(path.into_os_string().into_vec()).map_err(|_| invalid("the path"))?;
    let mut strings = Vec::with_capacity(argv.len() + 64);
    for a in argv {
        strings.push(CString::new(a.as_bytes()).map_err(|_| invalid("an argument"))?);
    }
    for (k, v) in std::env::vars_os() {
        let mut kv: OsString = k;
        kv.push("=");
        kv.push(v);
        strings.push(CString::new(kv.into_vec()).map_err(|_| invalid("the environment"))?);
    }
    let ptrs = |s: &[CString]| {
        s.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    let exec = Exec {
        path,
        argv: ptrs(&strings[..argv.len()]),
        envp: ptrs(&strings[argv.len()..]),
        _strings: strings,
        stdin: devnull.as_raw_fd(),
        log,
        keep: keep.to_vec(),
        parent: std::process::id() as libc::pid_t,
        watchdog: Watchdog::get(),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // SAFETY: the child runs `exec_child` on `stack` with `exec`, both
    // alive and untouched until clone returns, which CLONE_VFORK delays
    // until the child has exec'd or exited. All signals are blocked across
    // the clone so that no handler of ours runs in the child before it
    // resets them; the mask is restored right after.
    let (pid, clone_err) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let pid = libc::clone(
            exec_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &exec as *const Exec as *mut libc::c_void,
        );
        let err = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, err)
    };
    if pid < 0 {
        return Err(clone_err);
    }
    match exec.error.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            if let Some(w) = exec.watchdog {
                w.forget(pid);
            }
            // SAFETY: reaping our own child, which has exited.
            unsafe {
                while libc::waitpid(pid, std::ptr::null_mut(), 0) < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
            }
            Err(std::io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`vfork_exec`]: only async-signal-safe syscalls, no
/// allocation, no panics.
extern "C" fn exec_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Exec`, which outlives this call (the
    // parent is suspended until we exec or exit).
    let exec = unsafe { &*(arg as *const Exec) };
    // SAFETY: syscalls on this (child) process's own state; the pointers
    // are the Exec's null-terminated arrays.
    unsafe {
        let fail = |exec: &Exec| -> libc::c_int {
            let errno = *libc::__errno_location();
            exec.error
                .store(if errno == 0 { libc::EIO } else { errno }, Ordering::SeqCst);
            libc::_exit(127)
        };
        // A handler of ours must never run here, on the parent's memory:
        // reset them all (exec would, but only later).
        if !reset_signals() {
            return fail(exec);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(exec);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return fail(exec);
        }
        if let Some(w) = exec.watchdog {
            w.watch_own_group();
        }
        // The parent may have died before prctl took effect (or before
        // the watchdog heard of the group).
        if libc::getppid() != exec.parent {
            libc::_exit(1);
        }
        for (from, to) in [(exec.stdin, 0), (exec.log, 1), (exec.log, 2)] {
            if libc::dup2(from, to) < 0 {
                return fail(exec);
            }
        }
        for &fd in &exec.keep {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return fail(exec);
            }
        }
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        fail(exec)
    }
}

/// Gives every signal its default action (SIGPIPE, which Rust programs
/// ignore, included, as `Command` does) and unblocks them all, in a child
/// between fork and exec. False if the mask could not be set.
///
/// # Safety
/// Only for a child process that runs nothing of ours but syscalls.
pub(super) unsafe fn reset_signals() -> bool {
    for sig in 1..=libc::SIGRTMAX() {
        let mut sa: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut sa) != 0 {
            continue;
        }
        let ignored = sa.sa_sigaction == libc::SIG_IGN;
        if sa.sa_sigaction != libc::SIG_DFL && (!ignored || sig == libc::SIGPIPE) {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == 0
}
