//! A supervised QEMU process: spawned in its own process group with a
//! parent-death signal, reaped by a waiter thread, killed through a pidfd
//! so a signal can never reach a recycled pid.
//!
//! Every child is started from one long-lived spawner thread, because
//! Linux sends the parent-death signal when the *thread* that forked the
//! child exits, and script threads come and go. It is started the way
//! `posix_spawn` starts one (see [`vfork_exec`]), not with `fork`, whose
//! cost grows with our memory.
//!
//! The child's stdout and stderr go through a pipe that its reaper thread
//! copies into the log file. The reaper makes that file while QEMU starts
//! up, so a launch does not wait for it (making a file costs 0.1-0.5 ms
//! on a busy ext4), and it records the exit only once everything QEMU
//! wrote is in the file.
//!
//! The parent-death signal reaches only our own child: what that child
//! forks (QEMU under a wrapper that does not `exec` it, a host command's
//! background job) stays in its process group but lives on. The
//! [`Watchdog`], a small process of its own, kills those groups when
//! vmscript dies, however it dies.
//!
//! This module holds the crate's unsafe code (bar the allocator's
//! accounting): the supervision here, the child's start in `spawn.rs`, the
//! watchdog in `watchdog.rs`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::sync::{lock, Look, Waitable};

mod spawn;
mod watchdog;

use spawn::vfork_exec;
pub use watchdog::Watchdog;

/// What the spawner thread needs to start one child.
struct Request {
    argv: Vec<String>,
    log: PathBuf,
    keep_fds: Vec<RawFd>,
    reply: mpsc::Sender<std::io::Result<Arc<Process>>>,
}

/// A running (or exited, not yet forgotten) child.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    pidfd: OwnedFd,
    status: Waitable<Option<i32>>,
    /// The signals sent to the child (bit N: signal N), so that a death
    /// by another signal is known for a crash.
    sent: std::sync::atomic::AtomicU64,
    /// Why the log is missing or incomplete.
    log_error: Mutex<Option<String>>,
}

impl Process {
    /// Starts `argv` with stdin from /dev/null and stdout+stderr into the
    /// file `log` (made, or emptied, by the reaper). `keep_fds` are
    /// inherited by the child (all else is close-on-exec).
    pub fn spawn(
        argv: Vec<String>,
        log: PathBuf,
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
                        match spawn_here(req.argv, req.log, &req.keep_fds) {
                            Ok((p, output)) => {
                                let _ = req.reply.send(Ok(p.clone()));
                                // After the reply: the caller goes on to
                                // wait for QEMU while its reaper starts.
                                start_reaper(p, output);
                            }
                            Err(e) => {
                                let _ = req.reply.send(Err(e));
                            }
                        }
                    }
                })
                .expect("the spawner thread starts once at first launch");
            Mutex::new(tx)
        });
        let (reply, rx) = mpsc::channel();
        lock(tx)
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
        self.pidfd.as_fd()
    }

    /// The exit code once reaped: the code, or minus the signal number.
    pub fn exit_code(&self) -> Option<i32> {
        *self.status.lock()
    }

    /// Waits up to `timeout` for the child to exit; its exit code if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let exited = self.status.wait_until(Some(deadline), |st, _| match *st {
            Some(code) => Look::Done(code),
            None => Look::NotYet,
        });
        exited.ok()
    }

    /// Sends `signal` to the child's whole process group, unless it has
    /// already been reaped.
    pub fn signal(&self, signal: i32) {
        // While the lock is held and no status is recorded, the child is
        // not reaped, so its pid and process group id are still its own.
        let st = self.status.lock();
        if st.is_none() {
            if (0..64).contains(&signal) {
                self.sent.fetch_or(1u64 << signal, Ordering::SeqCst);
            }
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

    /// Whether `signal` was sent to the child by [`Process::signal`].
    pub fn was_sent(&self, signal: i32) -> bool {
        (0..64).contains(&signal) && self.sent.load(Ordering::SeqCst) & (1u64 << signal) != 0
    }

    /// Why the log file is missing or incomplete (it could not be made or
    /// written), once the child has exited.
    pub fn log_error(&self) -> Option<String> {
        lock(&self.log_error).clone()
    }

    /// SIGKILL to the process group, then waits for the reaper.
    pub fn kill(&self) -> Option<i32> {
        self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(10))
    }

    /// Copies the child's output into its log until it exits, then
    /// records its status and reaps it.
    fn reap(&self, output: Option<OutputToLog>) {
        if let Some(output) = output {
            if let Some(e) = output.copy_until_exit(self.pidfd.as_fd()) {
                *lock(&self.log_error) = Some(e);
            }
        }
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
            let mut st = self.status.lock();
            // Anything else left in the group dies with QEMU.
            libc::kill(-self.pid, libc::SIGKILL);
            // Before the reap, while the group's id cannot be anyone
            // else's: the watchdog must never kill a stranger.
            if let Some(w) = Watchdog::get() {
                w.forget(self.pid);
            }
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
        self.status.notify_all();
    }
}

fn spawn_here(
    argv: Vec<String>,
    log: PathBuf,
    keep_fds: &[RawFd],
) -> std::io::Result<(Arc<Process>, OutputToLog)> {
    let (out, theirs) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let pid = vfork_exec(&argv, theirs.as_raw_fd(), keep_fds)?;
    // Our copy of the write end goes now, so that the pipe ends with QEMU.
    drop(theirs);
    set_nonblocking(&out);
    // SAFETY: pidfd_open on our own unreaped child.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        // The child is ours and unreaped.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        if let Some(w) = Watchdog::get() {
            w.forget(pid);
        }
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(err);
    }
    // SAFETY: a fresh fd from pidfd_open that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let process = Arc::new(Process {
        pid,
        pidfd,
        status: Waitable::new(None),
        sent: std::sync::atomic::AtomicU64::new(0),
        log_error: Mutex::new(None),
    });
    Ok((process, OutputToLog { out, path: log }))
}

/// Makes reads of `fd` return at once when there is nothing to read.
pub fn set_nonblocking(fd: &impl AsRawFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // A failure leaves the descriptor blocking, as it was.
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    fd >= 0 && nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Calls `f` with `fd` borrowed, if `fd` is an open descriptor of this
/// process (a number a script names); `None` when it is not.
pub fn with_open_fd<T>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> T) -> Option<T> {
    if !fd_is_open(fd) {
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and is only borrowed
    // while `f` runs.
    Some(f(unsafe { BorrowedFd::borrow_raw(fd) }))
}

/// Makes the child `cmd` starts die with vmscript (SIGKILL when its parent
/// exits), like every QEMU [`vfork_exec`] starts.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
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
            // vmscript may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Starts the thread that copies `p`'s output into its log, reaps it and
/// records its exit. Without one (no thread could start), `p` is killed
/// and reaped at once, so that its exit is still recorded and nothing
/// waits for it in vain.
fn start_reaper(p: Arc<Process>, output: OutputToLog) {
    let reaper = p.clone();
    let path = output.path.display().to_string();
    let spawned = std::thread::Builder::new()
        .name("qemu-reaper".into())
        .stack_size(64 << 10)
        .spawn(move || reaper.reap(Some(output)));
    if let Err(e) = spawned {
        *lock(&p.log_error) = Some(format!(
            "writing {path}: no thread to copy QEMU's output ({e})"
        ));
        p.signal(libc::SIGKILL);
        p.reap(None);
    }
}

/// The read end of a child's output pipe and the log it goes to.
struct OutputToLog {
    out: OwnedFd,
    path: PathBuf,
}

impl OutputToLog {
    /// Makes the log, then copies the pipe into it until the child (its
    /// pidfd) has exited and the pipe is empty. The first error, after
    /// which the rest is read and dropped so that the child never blocks.
    fn copy_until_exit(self, pidfd: BorrowedFd<'_>) -> Option<String> {
        let mut error = None;
        let mut file = match File::create(&self.path) {
            Ok(f) => Some(f),
            Err(e) => {
                error = Some(format!("creating {}: {e}", self.path.display()));
                None
            }
        };
        let mut buf = vec![0u8; 16 << 10];
        let mut open = true;
        loop {
            let mut fds = [
                PollFd::new(pidfd, PollFlags::POLLIN),
                PollFd::new(self.out.as_fd(), PollFlags::POLLIN),
            ];
            let n = if open { 2 } else { 1 };
            match nix::poll::poll(&mut fds[..n], PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                // Cannot wait for output any more: only for the exit.
                Err(_) => break,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let exited = ready(&fds[0]);
            if open && (exited || ready(&fds[1])) {
                open = self.copy(&mut buf, &mut file, &mut error);
            }
            if exited {
                break;
            }
        }
        error
    }

    /// Copies what the pipe holds now; false at its end.
    fn copy(&self, buf: &mut [u8], file: &mut Option<File>, error: &mut Option<String>) -> bool {
        loop {
            let n = match nix::unistd::read(self.out.as_raw_fd(), buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            };
            if let Some(f) = file {
                if let Err(e) = f.write_all(&buf[..n]) {
                    error.get_or_insert(format!("writing {}: {e}", self.path.display()));
                    *file = None;
                }
            }
        }
    }
}

/// Finds `program` in `$PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn run(argv: &[&str], keep: Vec<RawFd>) -> (i32, String) {
        let log = tempfile::NamedTempFile::new().unwrap();
        let argv = argv.iter().map(|a| a.to_string()).collect();
        let p = Process::spawn(argv, log.path().to_path_buf(), keep).unwrap();
        let code = p.wait_timeout(Duration::from_secs(10)).unwrap();
        (code, std::fs::read_to_string(log.path()).unwrap())
    }

    fn run_sh(script: &str, keep: Vec<RawFd>) -> (i32, String) {
        run(&["sh", "-c", script], keep)
    }

    #[test]
    fn output_goes_to_the_log_and_kept_descriptors_are_inherited() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let (code, log) = run_sh(
            &format!("echo out; echo err >&2; echo kept >&{fd}"),
            vec![fd],
        );
        drop(theirs);
        assert_eq!(code, 0, "{log}");
        assert_eq!(log, "out\nerr\n");
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, "kept\n");
    }

    #[test]
    fn everything_written_before_the_exit_is_in_the_log_when_it_is_seen() {
        // Four times the pipe's buffer, then an exit at once.
        let (code, log) = run_sh(
            "head -c 262144 /dev/zero | tr '\\0' x; echo; exit 3",
            vec![],
        );
        assert_eq!(code, 3);
        assert_eq!(log.len(), 262145);
        assert!(log.bytes().take(262144).all(|b| b == b'x'));
    }

    #[test]
    fn a_log_that_cannot_be_made_is_reported_and_the_child_never_blocks() {
        let log = PathBuf::from("/nonexistent/dir/vm.log");
        let argv = ["sh", "-c", "head -c 262144 /dev/zero; exit 4"];
        let p = Process::spawn(argv.iter().map(|a| a.to_string()).collect(), log, vec![]).unwrap();
        assert_eq!(p.wait_timeout(Duration::from_secs(10)), Some(4));
        let e = p.log_error().unwrap();
        assert!(e.starts_with("creating /nonexistent/dir/vm.log: "), "{e}");
    }

    #[test]
    fn descriptors_not_kept_are_closed() {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let (code, log) = run_sh(&format!("[ -e /proc/self/fd/{fd} ] && echo leaked"), vec![]);
        assert_eq!((code, log.as_str()), (1, ""));
    }

    #[test]
    fn child_leads_its_own_process_group() {
        // Field 5 of /proc/PID/stat is the process group.
        let (code, log) = run_sh(
            "set -- $(cat /proc/$$/stat); [ \"$5\" = $$ ] && echo own-group",
            vec![],
        );
        assert_eq!((code, log.as_str()), (0, "own-group\n"));
    }

    #[test]
    fn child_starts_with_no_signal_blocked_and_sigpipe_default() {
        // Hex masks; SIGPIPE (bit 13) is ignored by Rust programs. (Read by
        // the child itself: a shell's mask changes while it forks.)
        let (code, log) = run(
            &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
            vec![],
        );
        assert_eq!(code, 0, "{log}");
        assert!(log.contains("SigBlk:\t0000000000000000"), "{log}");
        let ign = log
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .map(|h| u64::from_str_radix(h, 16).unwrap())
            .unwrap();
        assert_eq!(
            ign & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {log}"
        );
    }

    #[test]
    fn a_missing_program_is_not_found() {
        for program in ["no-such-program-vmscript", "/nonexistent/no-such-program"] {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("log");
            let err = Process::spawn(vec![program.into()], log, vec![]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{program}: {err}");
        }
    }
}
