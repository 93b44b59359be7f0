//! What the threads using one connection share: the replies and events
//! filed so far, and the wait in which whoever waits reads the socket for
//! everyone (see the [module documentation](super)). [`Shared::wait_for`]
//! is where to start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use serde_json::Value;

use super::{reader, Error};
use crate::sync::{lock, Guard, Interruptible, Look, Stop, Waitable};

/// How many stray replies are kept to describe a desync.
const STRAYS_KEPT: usize = 1;

#[derive(Default)]
pub(super) struct State {
    /// Replies to the commands in `expected`, by `id`.
    pub(super) replies: std::collections::HashMap<u64, Value>,
    /// The ids of the commands sent whose replies are awaited.
    pub(super) expected: std::collections::HashSet<u64>,
    /// The ids of the commands whose callers gave up waiting: their
    /// replies are dropped when they come.
    pub(super) orphans: std::collections::HashSet<u64>,
    /// Replies with no known id not yet reported ([`Error::Desync`]): how
    /// many, and the first ones.
    pub(super) stray_count: usize,
    pub(super) strays: Vec<Value>,
    /// The last id used.
    pub(super) last_id: u64,
    pub(super) events: std::collections::VecDeque<Value>,
    /// What the queued events take, as [`reader::footprint`] estimates.
    pub(super) event_bytes: usize,
    pub(super) greeting: Option<Value>,
    /// Why the connection ended, once it has.
    pub(super) ended: Option<Error>,
    /// A thread holds the read side and is reading for everyone.
    pub(super) reading: bool,
}

pub(super) struct Shared {
    pub(super) state: Waitable<State>,
    /// Locked only by the thread whose `reading` flag is set.
    pub(super) read: Mutex<reader::ReadSide>,
    /// Wakes the thread waiting in `poll` (interrupts).
    pub(super) wake: EventFd,
}

impl State {
    /// Files a reply that answers no command we wait for.
    pub(super) fn stray(&mut self, reply: Value) {
        self.stray_count += 1;
        if self.strays.len() < STRAYS_KEPT {
            self.strays.push(reply);
        }
    }

    /// Removes the `i`th queued event.
    pub(super) fn remove_event(&mut self, i: usize) -> Option<Value> {
        let ev = self.events.remove(i)?;
        self.event_bytes = self.event_bytes.saturating_sub(reader::footprint(&ev));
        Some(ev)
    }

    /// Removes every queued event.
    pub(super) fn take_events(&mut self) -> Vec<Value> {
        self.event_bytes = 0;
        self.events.drain(..).collect()
    }

    /// A fresh id, awaited from now on.
    pub(super) fn new_id(&mut self) -> u64 {
        self.last_id += 1;
        self.expected.insert(self.last_id);
        self.last_id
    }

    /// Stops waiting for `id`: a reply that comes later is dropped.
    pub(super) fn give_up(&mut self, id: u64) {
        if self.expected.remove(&id) && self.replies.remove(&id).is_none() {
            self.orphans.insert(id);
        }
    }
}

/// What a command's wait for its reply found first.
pub(super) enum Heard {
    Reply(Value),
    Strays,
}

impl Shared {
    pub(super) fn lock(&self) -> Guard<'_, State> {
        self.state.lock()
    }

    /// Waits until `ready` yields a value, the connection ends, the
    /// deadline passes, or an interrupt comes ([`Error::Interrupted`]).
    /// Reads the socket while no other thread does; at least one read
    /// (without waiting, when the deadline has passed) is tried before
    /// giving up, so what has already arrived is always seen.
    pub(super) fn wait_for<T>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> std::result::Result<Option<T>, Error> {
        let looked = self.state.wait_until_with(
            Some(deadline),
            |st, _| match ready(st) {
                Some(v) => Look::Done(Ok(Some(v))),
                None => match &st.ended {
                    Some(err) => Look::Done(Err(err.clone())),
                    None => Look::NotYet,
                },
            },
            |st, until| {
                if st.reading {
                    // Another thread reads for us and wakes us when it
                    // files something or stops reading.
                    return st.sleep(until);
                }
                let left = until.map_or(Duration::MAX, |t| {
                    t.saturating_duration_since(Instant::now())
                });
                self.read_once(st, left).0
            },
        );
        match looked {
            Ok(out) => out,
            Err(stopped) => match stopped.why {
                Stop::Deadline => Ok(None),
                Stop::Interrupted => Err(Error::Interrupted {
                    what: "waiting".into(),
                }),
            },
        }
    }

    /// Takes the read side for one read of up to `timeout`; gives it back,
    /// recording the end of the connection, and wakes the waiters. True
    /// when bytes were read.
    pub(super) fn read_once<'a>(
        &'a self,
        mut st: Guard<'a, State>,
        timeout: Duration,
    ) -> (Guard<'a, State>, bool) {
        st.reading = true;
        drop(st);
        let r = lock(&self.read).read_once(self, &self.wake, timeout);
        let mut st = self.lock();
        st.reading = false;
        let progress = match r {
            Ok(p) => p,
            Err(e) => {
                st.ended.get_or_insert(e);
                true
            }
        };
        // They wait for what was filed, or to read in turn.
        if st.has_sleepers() {
            self.state.notify_all();
        }
        (st, progress)
    }

    /// Reads whatever has arrived, without waiting, unless another thread
    /// is reading already (then it files it).
    pub(super) fn read_arrived(&self) {
        let mut st = self.lock();
        // Bounded, so that a peer sending without pause cannot keep us.
        for _ in 0..64 {
            if st.reading || st.ended.is_some() {
                return;
            }
            let (next, progress) = self.read_once(st, Duration::ZERO);
            st = next;
            if !progress {
                return;
            }
        }
    }

    /// Wakes the thread waiting in `poll`, if any.
    pub(super) fn poke(&self) {
        // A full counter (EAGAIN) already means "wake up".
        let _ = self.wake.write(1);
    }
}

impl Interruptible for Shared {
    /// Wakes every wait in progress with [`Error::Interrupted`], the one
    /// in `poll` too.
    fn interrupt(&self) {
        self.state.interrupt();
        self.poke();
    }
}
