//! Ctrl-C, SIGTERM and SIGHUP while tests run.
//!
//! One thread receives the signals. The first cancels every running test
//! (its machines are killed, its cleanup runs) and tells the executor,
//! which starts no more tests, waits for the running ones to wind down and
//! prints the partial summary. A second signal does not wait: it kills
//! every running test's machines, removes their temp dirs and the
//! artifacts that would not have been kept, and exits with 128+N.
//!
//! The executor [`SignalWatch::track`]s each test while it runs. While a
//! debugger has a failed test (`--debug-on-fail`), Ctrl-C is its business
//! and the run ignores it ([`SignalWatch::hold_interrupts`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::script::{Cancel, Reason};
use crate::sync::lock;

/// A running test, as a signal sees it.
struct Tracked {
    cancel: Cancel,
    /// Folders to remove when exiting at once.
    discard: Vec<PathBuf>,
}

#[derive(Default)]
struct Shared {
    running: Mutex<HashMap<u64, Tracked>>,
    received: AtomicI32,
    /// SIGINT belongs to a debugger for now.
    hold_interrupts: AtomicBool,
    /// Folders to remove when empty on exiting at once.
    remove_if_empty: Mutex<Vec<PathBuf>>,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        lock(&self.running)
    }
}

/// The signal thread's view of the run; see the module documentation.
#[derive(Clone)]
pub struct SignalWatch {
    shared: Arc<Shared>,
}

impl SignalWatch {
    /// Starts receiving SIGINT, SIGTERM and SIGHUP; `on_first` is called
    /// (on the signal thread) with the first one, just before the running
    /// tests are cancelled.
    pub fn install(on_first: impl Fn(i32) + Send + 'static) -> std::io::Result<SignalWatch> {
        let shared = Arc::new(Shared::default());
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(256 << 10)
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGINT && s.hold_interrupts.load(Ordering::SeqCst) {
                        continue;
                    }
                    let first = s
                        .received
                        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok();
                    if first {
                        // Told first, so that its note comes before the
                        // results of the tests it cancels.
                        on_first(sig);
                        for t in s.running().values() {
                            t.cancel.cancel(Reason::Signal(sig));
                        }
                    } else {
                        exit_now(&s, sig);
                    }
                }
            })?;
        Ok(SignalWatch { shared })
    }

    /// Tracks a running test: a signal received already cancels it at once.
    pub fn track(&self, id: u64, cancel: Cancel, discard: Vec<PathBuf>) {
        let mut running = self.shared.running();
        if let Some(sig) = self.received() {
            cancel.cancel(Reason::Signal(sig));
        }
        running.insert(id, Tracked { cancel, discard });
    }

    /// The test has ended.
    pub fn untrack(&self, id: u64) {
        self.shared.running().remove(&id);
    }

    /// A folder to remove, when empty, if a second signal exits at once.
    pub fn remove_if_empty_on_exit(&self, dir: PathBuf) {
        lock(&self.shared.remove_if_empty).push(dir);
    }

    /// While `hold`, Ctrl-C (SIGINT) does not stop the run: a debugger
    /// on the terminal interrupts what it runs with it instead.
    pub fn hold_interrupts(&self, hold: bool) {
        self.shared.hold_interrupts.store(hold, Ordering::SeqCst);
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.shared.received.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

/// The second signal: kill, clean up, exit.
fn exit_now(shared: &Shared, sig: i32) -> ! {
    let running: Vec<(Cancel, Vec<PathBuf>)> = shared
        .running()
        .values()
        .map(|t| (t.cancel.clone(), t.discard.clone()))
        .collect();
    for (cancel, discard) in &running {
        cancel.abandon();
        for d in discard {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    for d in lock(&shared.remove_if_empty).iter() {
        super::artifacts::release_temp_root(d);
    }
    let mut err = std::io::stderr().lock();
    let _ = std::io::Write::write_all(
        &mut err,
        format!(
            "\nvmscript: second signal {sig}: killed {} running test(s); exiting now\n",
            running.len()
        )
        .as_bytes(),
    );
    std::process::exit(128 + sig);
}
