//! Waiting with a deadline, an interrupt and several waiters, written once;
//! knows nothing of sockets, QEMU or scripts. [`poll_until`] is the one
//! wait on file descriptors that the parkers of the socket readers share.
//!
//! A [`Waitable`] is a value behind a mutex, with a condition variable for
//! the threads that wait for it to change. [`Waitable::wait_until`] looks
//! at the value with a caller's function until it yields, the deadline
//! passes, or an [`Interrupter`] ends the waits in progress. Between looks
//! a waiter parks: by default it sleeps on the condition variable, but a
//! caller may park differently (the QMP client and a console without a
//! drain thread read their socket for everyone instead). Whoever changes
//! the value wakes the sleepers; a change nobody sleeps for costs no
//! system call ([`Guard::has_sleepers`]).
//!
//! Every lock here, and [`lock`] for the plain mutexes elsewhere, is taken
//! also when a thread panicked holding it: each update keeps the value
//! consistent, and cleanup (killing QEMU, closing sockets) must still
//! reach it.
//!
//! Start reading at [`Waitable::wait_until`].

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollTimeout};

/// Locks `m`, also after a panic elsewhere (see the module documentation).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks `m` unless another thread holds it; like [`lock`], also after a
/// panic elsewhere.
pub fn try_lock<T: ?Sized>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Waits until one of `fds` is ready or `until` passes (`None`: no
/// limit); false when none was, also when a signal cut the wait short.
/// The time is rounded up, so a wait never ends just short of `until`.
pub fn poll_until(fds: &mut [PollFd<'_>], until: Option<Instant>) -> nix::Result<bool> {
    let timeout = match until {
        None => PollTimeout::NONE,
        Some(t) => {
            let micros = t.saturating_duration_since(Instant::now()).as_micros();
            PollTimeout::try_from(micros.div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    };
    match nix::poll::poll(fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `poll` found `fd` ready (or hung up, or failed: the next read
/// or write says which).
pub fn is_ready(fd: &PollFd<'_>) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

/// A value that threads wait on; see the module documentation.
pub struct Waitable<S> {
    slot: Mutex<Slot<S>>,
    cond: Condvar,
}

struct Slot<S> {
    value: S,
    /// Threads asleep on the condition variable.
    sleepers: usize,
    /// Bumped by [`Waitable::interrupt`]: a wait that sees it change ends.
    interrupts: u64,
}

/// The locked value of a [`Waitable`].
pub struct Guard<'a, S> {
    waitable: &'a Waitable<S>,
    slot: MutexGuard<'a, Slot<S>>,
}

/// What one look at the value found.
#[derive(Debug, PartialEq, Eq)]
pub enum Look<T> {
    /// The wait is over, with this.
    Done(T),
    /// Look again when the value changes.
    NotYet,
    /// Look again when the value changes or by then, whichever is first.
    LookAgainAt(Instant),
}

/// Why a wait ended without its function yielding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The deadline passed.
    Deadline,
    /// [`Waitable::interrupt`] was called while the wait was under way.
    Interrupted,
}

/// A wait that stopped: why, and the value, still locked, so that the
/// error can describe the state it stopped in.
pub struct Stopped<'a, S> {
    pub why: Stop,
    pub state: Guard<'a, S>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Waitable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without waiting: the caller may hold the lock.
        match self.slot.try_lock() {
            Ok(slot) => f.debug_tuple("Waitable").field(&slot.value).finish(),
            Err(_) => f.write_str("Waitable(<locked>)"),
        }
    }
}

impl<S: Default> Default for Waitable<S> {
    fn default() -> Waitable<S> {
        Waitable::new(S::default())
    }
}

impl<S> Waitable<S> {
    pub fn new(value: S) -> Waitable<S> {
        Waitable {
            slot: Mutex::new(Slot {
                value,
                sleepers: 0,
                interrupts: 0,
            }),
            cond: Condvar::new(),
        }
    }

    /// Locks the value.
    pub fn lock(&self) -> Guard<'_, S> {
        Guard {
            waitable: self,
            slot: lock(&self.slot),
        }
    }

    /// Wakes every sleeping waiter, to look again.
    pub fn notify_all(&self) {
        self.cond.notify_all();
    }

    /// Ends every wait under way with [`Stop::Interrupted`]; waits that
    /// start afterwards are not affected.
    pub fn interrupt(&self) {
        let mut slot = lock(&self.slot);
        slot.interrupts = slot.interrupts.wrapping_add(1);
        drop(slot);
        self.cond.notify_all();
    }

    /// Calls `look` on the value until it is [`Look::Done`], sleeping on
    /// the condition variable in between; see [`Waitable::wait_until_with`].
    pub fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        look: impl FnMut(&mut S, bool) -> Look<T>,
    ) -> Result<T, Stopped<'_, S>> {
        self.wait_until_with(deadline, look, Guard::sleep)
    }

    /// Calls `look` on the value until it is [`Look::Done`], the deadline
    /// (`None`: none) passes, or an interrupt comes. `look` also gets
    /// whether the deadline has passed: then this is its last look, and it
    /// must not put anything off. Between looks, `park` is called with the
    /// lock and the instant to be back by; it returns the lock again.
    ///
    /// The wait parks at least once before it stops at the deadline, so
    /// that a `park` that reads for itself has read once even when the
    /// deadline had passed already: what has arrived is always seen.
    pub fn wait_until_with<'a, T>(
        &'a self,
        deadline: Option<Instant>,
        mut look: impl FnMut(&mut S, bool) -> Look<T>,
        mut park: impl FnMut(Guard<'a, S>, Option<Instant>) -> Guard<'a, S>,
    ) -> Result<T, Stopped<'a, S>> {
        let mut st = self.lock();
        let interrupts = st.slot.interrupts;
        let mut parked = false;
        loop {
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let until = match look(&mut st, expired && parked) {
                Look::Done(v) => return Ok(v),
                Look::NotYet => deadline,
                Look::LookAgainAt(t) => Some(deadline.map_or(t, |d| d.min(t))),
            };
            if st.slot.interrupts != interrupts {
                return Err(Stopped {
                    why: Stop::Interrupted,
                    state: st,
                });
            }
            if expired && parked {
                return Err(Stopped {
                    why: Stop::Deadline,
                    state: st,
                });
            }
            st = park(st, until);
            parked = true;
        }
    }

    /// A handle that interrupts the waits on this value from any thread.
    pub fn interrupter(self: &Arc<Self>) -> Interrupter
    where
        S: Send + 'static,
    {
        Interrupter::new(self)
    }
}

impl<'a, S> Guard<'a, S> {
    /// Whether a waiter sleeps on the condition variable, so that a change
    /// needs a [`Waitable::notify_all`].
    pub fn has_sleepers(&self) -> bool {
        self.slot.sleepers > 0
    }

    /// Sleeps on the condition variable until woken or `until` (`None`: no
    /// limit); returns at once when `until` has passed.
    pub fn sleep(self, until: Option<Instant>) -> Guard<'a, S> {
        let Guard { waitable, mut slot } = self;
        let cond = &waitable.cond;
        slot.sleepers += 1;
        slot = match until {
            None => cond.wait(slot).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    slot
                } else {
                    cond.wait_timeout(slot, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            }
        };
        slot.sleepers -= 1;
        Guard { waitable, slot }
    }

    /// The [`Waitable`] this locks, to lock it again after unlocking.
    pub fn waitable(&self) -> &'a Waitable<S> {
        self.waitable
    }
}

impl<S> Deref for Guard<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.slot.value
    }
}

impl<S> DerefMut for Guard<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.slot.value
    }
}

/// Something whose waits can be interrupted from another thread.
pub trait Interruptible: Send + Sync {
    /// Ends the waits under way.
    fn interrupt(&self);
}

impl<S: Send> Interruptible for Waitable<S> {
    fn interrupt(&self) {
        Waitable::interrupt(self);
    }
}

/// Ends the waits in progress from another thread (a Ctrl-C handler),
/// leaving what they waited on as it was.
///
/// Every wait under way when [`Interrupter::interrupt`] is called ends as
/// interrupted; waits that start afterwards are not affected. Holds its
/// target weakly, so it never keeps it open; once it is gone, nothing
/// happens.
#[derive(Clone)]
pub struct Interrupter {
    target: Weak<dyn Interruptible>,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("alive", &(self.target.strong_count() > 0))
            .finish()
    }
}

impl Interrupter {
    /// An interrupter of `target`'s waits.
    pub fn new<T: Interruptible + 'static>(target: &Arc<T>) -> Interrupter {
        let target: Weak<T> = Arc::downgrade(target);
        Interrupter { target }
    }

    /// Ends every wait in progress.
    pub fn interrupt(&self) {
        if let Some(target) = self.target.upgrade() {
            target.interrupt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(10);

    fn soon(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[test]
    fn a_wait_stops_at_its_deadline_after_a_last_look() {
        let w = Waitable::new(0);
        let mut looks = Vec::new();
        let t0 = Instant::now();
        let err = w
            .wait_until(soon(100), |_, last| {
                looks.push(last);
                Look::<()>::NotYet
            })
            .err()
            .unwrap();
        assert_eq!(err.why, Stop::Deadline);
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(looks.first(), Some(&false));
        assert_eq!(looks.last(), Some(&true));
        assert_eq!(looks.iter().filter(|l| **l).count(), 1);
    }

    #[test]
    fn a_past_deadline_still_parks_once_then_looks_last() {
        let w = Waitable::new(0);
        let mut parks = 0;
        let mut looks = Vec::new();
        let err = w
            .wait_until_with(
                Some(Instant::now()),
                |_, last| {
                    looks.push(last);
                    Look::<()>::NotYet
                },
                |mut g, _| {
                    parks += 1;
                    *g += 1;
                    g
                },
            )
            .err()
            .unwrap();
        assert_eq!(err.why, Stop::Deadline);
        assert_eq!(parks, 1);
        assert_eq!(looks, [false, true]);
        // The stopped wait hands back the value, still locked.
        assert_eq!(*err.state, 1);
    }

    #[test]
    fn a_change_wakes_the_waiter() {
        let w = Arc::new(Waitable::new(None));
        let w2 = w.clone();
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            let mut g = w2.lock();
            *g = Some(7);
            assert!(g.has_sleepers());
            drop(g);
            w2.notify_all();
        });
        let t0 = Instant::now();
        let got = w.wait_until(soon(10_000), |v, _| match *v {
            Some(n) => Look::Done(n),
            None => Look::NotYet,
        });
        assert_eq!(got.ok(), Some(7));
        assert!(t0.elapsed() < Duration::from_secs(5));
        setter.join().unwrap();
        assert!(!w.lock().has_sleepers());
    }

    #[test]
    fn a_wait_looks_again_when_asked_without_a_change() {
        let w = Waitable::new(());
        let t0 = Instant::now();
        let again = t0 + Duration::from_millis(50);
        let got = w.wait_until(None, |_, _| {
            if Instant::now() >= again {
                Look::Done("again")
            } else {
                Look::LookAgainAt(again)
            }
        });
        assert_eq!(got.ok(), Some("again"));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_interrupt_ends_every_wait_under_way_and_no_later_one() {
        let w = Arc::new(Waitable::new(false));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || {
                    w.wait_until(soon(10_000), |_, _| Look::<()>::NotYet)
                        .err()
                        .map(|s| s.why)
                })
            })
            .collect();
        while w.lock().slot.sleepers < 3 {
            thread::sleep(Duration::from_millis(1));
        }
        let t0 = Instant::now();
        w.interrupter().interrupt();
        for t in waiters {
            assert_eq!(t.join().unwrap(), Some(Stop::Interrupted));
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A wait that starts afterwards runs to its deadline.
        let err = w.wait_until(soon(20), |_, _| Look::<()>::NotYet).err();
        assert_eq!(err.map(|s| s.why), Some(Stop::Deadline));
    }

    #[test]
    fn several_waiters_each_get_what_they_wait_for() {
        let w = Arc::new(Waitable::new(Vec::<u32>::new()));
        let waiters: Vec<_> = (0..4u32)
            .map(|n| {
                let w = w.clone();
                thread::spawn(move || {
                    w.wait_until(Some(Instant::now() + LONG), |v, _| {
                        match v.iter().position(|x| *x == n) {
                            Some(i) => Look::Done(v.remove(i)),
                            None => Look::NotYet,
                        }
                    })
                    .ok()
                })
            })
            .collect();
        for n in (0..4).rev() {
            thread::sleep(Duration::from_millis(10));
            w.lock().push(n);
            w.notify_all();
        }
        let got: Vec<_> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3)]);
        assert!(w.lock().is_empty());
    }

    #[test]
    fn an_interrupter_does_not_keep_its_target() {
        let w = Arc::new(Waitable::new(()));
        let i = w.interrupter();
        assert!(format!("{i:?}").contains("alive: true"));
        drop(w);
        i.interrupt();
        assert!(format!("{i:?}").contains("alive: false"));
    }

    #[test]
    fn lock_survives_a_panic_while_held() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poisons the lock");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        let held = lock(&m);
        assert!(try_lock(&m).is_none());
        drop(held);
        assert_eq!(try_lock(&m).as_deref(), Some(&2));
    }
}
