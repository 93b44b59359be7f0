//! A supervised QEMU process: spawned in its own process group with a
//! parent-death signal, reaped by a waiter thread, killed through a pidfd
//! so a signal can never reach a recycled pid.
//!
//! Every child is forked from one long-lived spawner thread, because
//! Linux sends the parent-death signal when the *thread* that forked the
//! child exits, and script threads come and go.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the spawner thread needs to start one child.
struct Request {
    argv: Vec<String>,
    log: File,
    keep_fds: Vec<RawFd>,
    reply: mpsc::Sender<std::io::Result<Arc<Process>>>,
}

/// A running (or exited, not yet forgotten) child.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    pidfd: OwnedFd,
    status: Mutex<Option<i32>>,
    exited: Condvar,
}

impl Process {
    /// Starts `argv` with stdin from /dev/null and stdout+stderr into `log`.
    /// `keep_fds` are inherited by the child (all else is close-on-exec).
    pub fn spawn(
        argv: Vec<String>,
        log: File,
        keep_fds: Vec<RawFd>,
    ) -> std::io::Result<Arc<Process>> {
        static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
        let tx = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("qemu-spawner".into())
                .stack_size(256 << 10)
                .spawn(move || {
                    for req in rx {
                        let res = spawn_here(req.argv, req.log, &req.keep_fds);
                        let _ = req.reply.send(res);
                    }
                })
                .expect("the spawner thread starts once at first launch");
            Mutex::new(tx)
        });
        let (reply, rx) = mpsc::channel();
        tx.lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Request {
                argv,
                log,
                keep_fds,
                reply,
            })
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A descriptor that polls readable once the child has exited.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// The exit code once reaped: the code, or minus the signal number.
    pub fn exit_code(&self) -> Option<i32> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the child to exit; its exit code if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(code) = *st {
                return Some(code);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .exited
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends `signal` to the child's whole process group, unless it has
    /// already been reaped.
    pub fn signal(&self, signal: i32) {
        // While the lock is held and no status is recorded, the child is
        // not reaped, so its pid and process group id are still its own.
        let st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if st.is_none() {
            // SAFETY: plain syscalls on ids we own; failures are harmless.
            unsafe {
                libc::kill(-self.pid, signal);
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    self.pidfd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }

    /// SIGKILL to the process group, then waits for the reaper.
    pub fn kill(&self) -> Option<i32> {
        self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(10))
    }

    /// Blocks until the child exits, records its status and reaps it.
    fn reap(&self) {
        // SAFETY: waitid on our own child, then waitpid to reap it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            loop {
                let r = libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                );
                if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            // Anything else left in the group dies with QEMU.
            libc::kill(-self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            *st = Some(if libc::WIFSIGNALED(status) {
                -libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
        self.exited.notify_all();
    }
}

fn spawn_here(argv: Vec<String>, log: File, keep_fds: &[RawFd]) -> std::io::Result<Arc<Process>> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command line"))?;
    let err_log = log.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log));
    let parent = std::process::id() as libc::pid_t;
    let keep = keep_fds.to_vec();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    // std's Child is never waited on: the reaper below owns the pid.
    drop(child);
    // SAFETY: pidfd_open on our own unreaped child.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: the child is ours and unreaped.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(err);
    }
    // SAFETY: a fresh fd from pidfd_open that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let process = Arc::new(Process {
        pid,
        pidfd,
        status: Mutex::new(None),
        exited: Condvar::new(),
    });
    let reaper = process.clone();
    let spawned = std::thread::Builder::new()
        .name("qemu-reaper".into())
        .stack_size(64 << 10)
        .spawn(move || reaper.reap());
    if let Err(e) = spawned {
        // SAFETY: as above.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    Ok(process)
}
