//! Stopping a script run from outside: its timeout or a signal.
//!
//! A [`Cancel`] is shared by a run, its [`Watchdog`] thread and the
//! signal handler. Cancelling records why (the first reason wins), kills
//! every QEMU of the run through its [`KillHandle`] so that any wait on a
//! machine fails at once, kills what its `run_host` calls left running
//! ([`HostProcesses`]), and wakes the host helpers that sleep
//! ([`Cancel::sleep`]). The engine's progress callback checks
//! [`Cancel::is_cancelled`] so that a pure Rhai loop stops too.
//! [`Cancel::abandon`] is for a process about to exit without waiting for
//! the script: it kills the machines and removes the run's temp dir.
//!
//! An interrupt ([`Cancel::interrupt`], Ctrl-C in the REPL) is the mild
//! form: it ends what the script is doing now (its waits, its sleep, its
//! loop) without killing any machine, and lasts until
//! [`Cancel::clear_interrupt`]. A watchdog that keeps the machines
//! ([`Watchdog::start_keeping`], for `--debug-on-fail`) ends a script
//! that way at its timeout: the run is not cancelled, it has only
//! [`Cancel::expired`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::machine::{InterruptHandle, KillHandle};
use crate::sync::{lock, Guard, Look, Waitable};

use super::host::HostProcesses;

/// Why a run was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The run's `--timeout` expired.
    Timeout(Duration),
    /// vmscript received this signal.
    Signal(i32),
    /// [`Cancel::interrupt`]: what runs now ends; the machines live on.
    Interrupt,
}

impl Reason {
    /// The error kind the run ends with.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Timeout(_) => "Timeout",
            Reason::Signal(_) | Reason::Interrupt => "Interrupted",
        }
    }

    /// What happened, for the report.
    pub fn message(&self) -> String {
        match self {
            Reason::Timeout(d) => format!("the test timed out after {}s", d.as_secs_f64()),
            Reason::Signal(s) => format!("the test was interrupted by {}", signal_name(*s)),
            Reason::Interrupt => "interrupted (Ctrl-C)".into(),
        }
    }
}

/// A signal's name for reports: `SIGINT (Ctrl-C)`, `SIGTERM`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

#[derive(Default)]
struct State {
    reason: Option<Reason>,
    /// The run is over: the watchdog stops.
    done: bool,
    /// Set by [`Cancel::interrupt`] until [`Cancel::clear_interrupt`].
    interrupted: bool,
    /// The timeout that ended the script while its machines were kept.
    expired: Option<Reason>,
    /// Set by [`Cancel::script_over`]: no more interrupts are needed.
    script_over: bool,
}

impl State {
    /// Why an interrupt stops the script: the timeout when it is the
    /// watchdog's (until the script is over), else Ctrl-C.
    fn interrupt_reason(&self) -> Reason {
        match (&self.expired, self.done || self.script_over) {
            (Some(r), false) => r.clone(),
            _ => Reason::Interrupt,
        }
    }
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    state: Waitable<State>,
    machines: Mutex<Vec<KillHandle>>,
    temp_dirs: Mutex<Vec<PathBuf>>,
    interrupted: AtomicBool,
    waits: Mutex<Vec<InterruptHandle>>,
    host: HostProcesses,
    /// What the script is doing now ([`Cancel::doing`]), for the runner's
    /// SLOW announcements, oldest first.
    activity: Mutex<Vec<Activity>>,
    next_activity: std::sync::atomic::AtomicU64,
    /// Where the script was stopped ([`Cancel::stopped_at`]).
    stopped_at: Mutex<Option<Site>>,
}

struct Activity {
    id: u64,
    what: String,
    site: Option<Site>,
}

/// A place in a script: the call that is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The script's name as its AST has it (the path the run shows).
    pub source: String,
    pub line: usize,
    /// Rhai's column, before any adjustment for rewritten source.
    pub column: usize,
}

/// Marks an activity of the script until dropped; see [`Cancel::doing`].
pub struct Doing {
    cancel: Cancel,
    id: u64,
}

impl Drop for Doing {
    fn drop(&mut self) {
        lock(&self.cancel.inner.activity).retain(|a| a.id != self.id);
    }
}

/// A run's cancellation token; clones share it.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl Cancel {
    /// A token nobody has cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Whether `other` is this token (a clone of it).
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Cancels the run (the first reason is kept) and kills its machines.
    pub fn cancel(&self, reason: Reason) {
        {
            let mut st = self.lock();
            if st.reason.is_none() {
                st.reason = Some(reason);
            }
            self.inner.cancelled.store(true, Ordering::SeqCst);
        }
        self.inner.state.notify_all();
        self.kill_machines();
        self.inner.host.kill_all(false);
    }

    /// The processes the run's `run_host` calls started.
    pub fn host_processes(&self) -> &HostProcesses {
        &self.inner.host
    }

    /// SIGKILLs every machine of the run that is running.
    pub fn kill_machines(&self) {
        let handles = lock(&self.inner.machines).clone();
        for h in handles {
            h.kill();
        }
    }

    /// Records the run's temp dir, for [`Cancel::abandon`].
    pub fn register_temp_dir(&self, path: PathBuf) {
        lock(&self.inner.temp_dirs).push(path);
    }

    /// For a process that exits without waiting for the script: SIGKILLs
    /// its machines and removes its temp dirs (their sockets with them).
    pub fn abandon(&self) {
        self.kill_machines();
        self.inner.host.kill_all(false);
        let dirs = lock(&self.inner.temp_dirs).clone();
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// Whether the run was cancelled; cheap enough for every Rhai operation.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// Why the run was cancelled.
    pub fn reason(&self) -> Option<Reason> {
        self.lock().reason.clone()
    }

    /// Adds a machine to kill on cancellation; killed at once when the run
    /// is already cancelled.
    pub fn register(&self, handle: KillHandle) {
        lock(&self.inner.machines).push(handle.clone());
        if self.is_cancelled() {
            handle.kill();
        }
    }

    /// Records that the script is doing `what` (`in step boot`, `waiting
    /// for event STOP`) until the returned guard is dropped, so that a
    /// test running long can be announced with what it is doing.
    pub fn doing(&self, what: impl Into<String>) -> Doing {
        self.doing_at(what, None)
    }

    /// [`Cancel::doing`] at `site`, the call that does it: should the
    /// run be stopped meanwhile, [`Cancel::stopped_at`] says where.
    pub fn doing_at(&self, what: impl Into<String>, site: Option<Site>) -> Doing {
        let id = self.inner.next_activity.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.activity).push(Activity {
            id,
            what: what.into(),
            site,
        });
        Doing {
            cancel: self.clone(),
            id,
        }
    }

    /// What the script is doing now, outermost first.
    pub fn activity(&self) -> Vec<String> {
        lock(&self.inner.activity)
            .iter()
            .map(|a| a.what.clone())
            .collect()
    }

    /// Records where a stop (a timeout, a signal) ended the script: the
    /// site of the innermost activity that has one. The first record
    /// stays; a stop with no such activity records nothing.
    pub fn note_stopped_here(&self) {
        let site = lock(&self.inner.activity)
            .iter()
            .rev()
            .find_map(|a| a.site.clone());
        if let Some(site) = site {
            lock(&self.inner.stopped_at).get_or_insert(site);
        }
    }

    /// Where the script was stopped, as [`Cancel::note_stopped_here`]
    /// recorded it: Rhai itself keeps only the outermost call of an
    /// error that ends a script.
    pub fn stopped_at(&self) -> Option<Site> {
        lock(&self.inner.stopped_at).clone()
    }

    /// Adds a machine whose waits [`Cancel::interrupt`] ends.
    pub fn register_interrupt(&self, handle: InterruptHandle) {
        lock(&self.inner.waits).push(handle);
    }

    /// Interrupts the script without cancelling the run: the waits in
    /// progress on its machines fail with `Interrupted`, its sleep ends,
    /// and [`Cancel::is_interrupted`] holds until [`Cancel::clear_interrupt`].
    /// A wait that starts after this call is not interrupted by it, so
    /// call it again while the script still runs.
    pub fn interrupt(&self) {
        {
            let mut st = self.lock();
            st.interrupted = true;
            self.inner.interrupted.store(true, Ordering::SeqCst);
        }
        self.inner.state.notify_all();
        let handles = lock(&self.inner.waits).clone();
        for h in handles {
            h.interrupt();
        }
    }

    /// Ends the interrupt: the script may run again.
    pub fn clear_interrupt(&self) {
        self.lock().interrupted = false;
        self.inner.interrupted.store(false, Ordering::SeqCst);
    }

    /// Whether [`Cancel::interrupt`] was called and not cleared.
    pub fn is_interrupted(&self) -> bool {
        self.inner.interrupted.load(Ordering::Relaxed)
    }

    /// What should stop the script now: the cancellation reason, else,
    /// when interrupted, why ([`State::interrupt_reason`]).
    pub fn stop_reason(&self) -> Option<Reason> {
        let st = self.lock();
        st.reason
            .clone()
            .or_else(|| st.interrupted.then(|| st.interrupt_reason()))
    }

    /// Sleeps for `d`, or less when the run is cancelled or interrupted
    /// meanwhile.
    pub fn sleep(&self, d: Duration) -> Result<(), Reason> {
        let deadline = Instant::now() + d;
        let stopped = self.inner.state.wait_until(Some(deadline), |st, _| {
            match (&st.reason, st.interrupted) {
                (Some(r), _) => Look::Done(r.clone()),
                (None, true) => Look::Done(st.interrupt_reason()),
                (None, false) => Look::NotYet,
            }
        });
        match stopped {
            Ok(reason) => Err(reason),
            // The deadline: an interrupt here is the `interrupted` flag,
            // which lasts, not a wake-up of the waits under way.
            Err(_) => Ok(()),
        }
    }

    /// Records that the script ran out of `timeout` while its machines
    /// are kept, and interrupts it; see [`Watchdog::start_keeping`].
    pub fn expire(&self, timeout: Duration) {
        self.lock().expired.get_or_insert(Reason::Timeout(timeout));
        self.interrupt();
    }

    /// The timeout recorded by [`Cancel::expire`].
    pub fn expired(&self) -> Option<Reason> {
        self.lock().expired.clone()
    }

    /// What ended the run: the timeout that stopped the script, else why
    /// the run was cancelled.
    pub fn ended_by(&self) -> Option<Reason> {
        let st = self.lock();
        // A timeout that stopped the script comes first: a signal or a
        // cancellation during its grace only ended what it had started.
        st.expired.clone().or_else(|| st.reason.clone())
    }

    fn lock(&self) -> Guard<'_, State> {
        self.inner.state.lock()
    }

    /// What stops the script now: the timeout that is stopping it, else
    /// why the run was cancelled. Unlike [`Cancel::ended_by`], a timeout
    /// counts only until the script is over, so that what runs after it
    /// (a debugger's REPL) gets its errors as they are.
    pub fn stopping(&self) -> Option<Reason> {
        let st = self.lock();
        match (&st.expired, st.done || st.script_over) {
            (Some(r), false) => Some(r.clone()),
            _ => st.reason.clone(),
        }
    }

    /// The script has returned; what follows (screenshots of a timed-out
    /// test's machines) is not interrupted, though a watchdog's hard
    /// deadline still holds until [`Cancel::finish`].
    pub fn script_over(&self) {
        self.lock().script_over = true;
        self.clear_interrupt();
    }

    /// The script is over: its watchdog stops watching, so what follows
    /// (a debugger, the cleanup) takes as long as it takes.
    pub fn finish(&self) {
        self.lock().done = true;
        self.inner.state.notify_all();
    }

    /// Waits until `deadline`, the run's end, or a cancellation; true when
    /// the deadline came first.
    fn wait_until(&self, deadline: Instant) -> bool {
        let over = |st: &mut State, _| match st.done || st.reason.is_some() {
            true => Look::Done(()),
            false => Look::NotYet,
        };
        self.inner.state.wait_until(Some(deadline), over).is_err()
    }
}

/// How long a timed-out script has to end by itself (and its machines to
/// be screenshotted) before its machines are killed.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// A thread that cancels a run when its time is up; stops when dropped.
pub struct Watchdog {
    cancel: Cancel,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Stops the script after `timeout`: first as [`Watchdog::start_keeping`]
    /// does, so that the script ends where it waits with its machines
    /// still running (the runner screenshots them, then cancels the run
    /// itself); a script still running [`TIMEOUT_GRACE`] later is
    /// cancelled with [`Reason::Timeout`], its machines killed.
    pub fn start(cancel: &Cancel, timeout: Duration) -> std::io::Result<Watchdog> {
        Watchdog::spawn(cancel, timeout, Some(TIMEOUT_GRACE))
    }

    /// A watchdog that keeps the machines: at the deadline it records the
    /// timeout ([`Cancel::expire`]) and interrupts the script, again every
    /// 50 ms (a wait may start just after an interrupt), until the script
    /// is over ([`Cancel::finish`]); nothing is killed.
    pub fn start_keeping(cancel: &Cancel, timeout: Duration) -> std::io::Result<Watchdog> {
        Watchdog::spawn(cancel, timeout, None)
    }

    /// The watch: at `timeout`, expire and interrupt (until the script is
    /// over); with a `grace`, cancel when it has passed too.
    fn spawn(
        cancel: &Cancel,
        timeout: Duration,
        grace: Option<Duration>,
    ) -> std::io::Result<Watchdog> {
        let c = cancel.clone();
        let deadline = Instant::now() + timeout;
        let thread = std::thread::Builder::new()
            .name("script-watchdog".into())
            .stack_size(64 << 10)
            .spawn(move || {
                if !c.wait_until(deadline) {
                    return;
                }
                c.expire(timeout);
                let hard = grace.map(|g| Instant::now() + g);
                loop {
                    let next = Instant::now() + Duration::from_millis(50);
                    if !c.wait_until(hard.map_or(next, |h| next.min(h))) {
                        return;
                    }
                    if hard.is_some_and(|h| Instant::now() >= h) {
                        c.cancel(Reason::Timeout(timeout));
                        return;
                    }
                    if !c.lock().script_over {
                        c.interrupt();
                    }
                }
            })?;
        Ok(Watchdog {
            cancel: cancel.clone(),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel.finish();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_ends_early_when_cancelled() {
        let c = Cancel::new();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.cancel(Reason::Signal(libc::SIGTERM));
        });
        let start = Instant::now();
        assert_eq!(
            c.sleep(Duration::from_secs(10)),
            Err(Reason::Signal(libc::SIGTERM))
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn a_timeout_stays_what_ended_the_script_whatever_comes_after() {
        let c = Cancel::new();
        let _w = Watchdog::start(&c, Duration::from_millis(50)).unwrap();
        assert!(c.sleep(Duration::from_secs(10)).is_err());
        c.cancel(Reason::Signal(2));
        assert_eq!(
            c.ended_by(),
            Some(Reason::Timeout(Duration::from_millis(50)))
        );
        assert!(c.is_cancelled());
    }

    #[test]
    fn abandon_removes_the_registered_temp_dirs() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("run");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("sock"), "").unwrap();
        let c = Cancel::new();
        c.register_temp_dir(t.clone());
        c.abandon();
        assert!(!t.exists());
    }

    #[test]
    fn a_keeping_watchdog_interrupts_at_the_deadline_and_kills_nothing() {
        let c = Cancel::new();
        let w = Watchdog::start_keeping(&c, Duration::from_millis(50)).unwrap();
        let timeout = Reason::Timeout(Duration::from_millis(50));
        // Its interrupt stops the script for the timeout, not as Ctrl-C.
        assert_eq!(c.sleep(Duration::from_secs(10)), Err(timeout.clone()));
        assert_eq!(c.stop_reason(), Some(timeout.clone()));
        assert!(!c.is_cancelled());
        assert_eq!(c.expired(), Some(timeout.clone()));
        assert_eq!(c.ended_by(), Some(timeout));
        // It keeps interrupting until the script is over.
        c.clear_interrupt();
        std::thread::sleep(Duration::from_millis(200));
        assert!(c.is_interrupted());
        c.finish();
        // After the script (a debugger's REPL), an interrupt is Ctrl-C.
        assert_eq!(c.stop_reason(), Some(Reason::Interrupt));
        drop(w);
        c.clear_interrupt();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!c.is_interrupted());
    }

    #[test]
    fn a_watchdog_stops_mildly_first_and_kills_after_the_grace() {
        let c = Cancel::new();
        let w = Watchdog::start(&c, Duration::from_millis(50)).unwrap();
        let start = Instant::now();
        assert_eq!(
            c.sleep(Duration::from_secs(30)),
            Err(Reason::Timeout(Duration::from_millis(50)))
        );
        assert!(!c.is_cancelled(), "killed at once");
        assert_eq!(
            c.expired(),
            Some(Reason::Timeout(Duration::from_millis(50)))
        );
        // The script returned: no more interrupts, but the deadline holds.
        c.script_over();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!c.is_interrupted());
        let timeout = Reason::Timeout(Duration::from_millis(50));
        assert_eq!(c.sleep(Duration::from_secs(30)), Err(timeout.clone()));
        assert!(c.is_cancelled());
        assert!(start.elapsed() >= TIMEOUT_GRACE);
        assert_eq!(c.reason(), Some(timeout));
        drop(w);
    }

    #[test]
    fn a_stop_is_placed_at_the_innermost_activity_with_a_site_and_the_first_stays() {
        let c = Cancel::new();
        let site = |line| Site {
            source: "t.rhai".into(),
            line,
            column: 5,
        };
        c.note_stopped_here();
        assert_eq!(c.stopped_at(), None);
        let outer = c.doing_at("in a helper", Some(site(3)));
        let step = c.doing("in step boot");
        let wait = c.doing_at("waiting for event X", Some(site(7)));
        drop(step);
        c.note_stopped_here();
        drop(wait);
        drop(outer);
        // A later stop (a teardown's) does not move it.
        let _later = c.doing_at("sleeping 1s", Some(site(9)));
        c.note_stopped_here();
        assert_eq!(c.stopped_at(), Some(site(7)));
        assert!(c.activity() == ["sleeping 1s"]);
    }

    #[test]
    fn a_dropped_watchdog_never_fires() {
        let c = Cancel::new();
        drop(Watchdog::start(&c, Duration::from_millis(20)).unwrap());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!c.is_cancelled());
    }

    #[test]
    fn an_interrupt_ends_sleeps_until_cleared_and_cancels_nothing() {
        let c = Cancel::new();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.interrupt();
        });
        let start = Instant::now();
        assert_eq!(c.sleep(Duration::from_secs(10)), Err(Reason::Interrupt));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        assert!(c.is_interrupted() && !c.is_cancelled());
        assert_eq!(c.stop_reason(), Some(Reason::Interrupt));
        assert_eq!(c.reason(), None);
        c.clear_interrupt();
        assert!(!c.is_interrupted());
        assert_eq!(c.stop_reason(), None);
        assert_eq!(c.sleep(Duration::from_millis(1)), Ok(()));
    }
}
