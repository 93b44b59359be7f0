//! Ctrl-C, SIGTERM and SIGHUP while tests run.
//!
//! One thread receives the signals. The first cancels the test running
//! now (its machines are killed, its cleanup runs, its artifacts are kept)
//! and tells the runner to start no more tests; a second one kills the
//! current test's machines and exits at once.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::script::{Cancel, Reason};

#[derive(Default)]
struct Shared {
    current: Mutex<Option<Cancel>>,
    received: AtomicI32,
}

/// The signal thread's view of the runner; see the module documentation.
#[derive(Clone)]
pub struct SignalWatch {
    shared: Arc<Shared>,
}

impl SignalWatch {
    /// Starts receiving SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> std::io::Result<SignalWatch> {
        let shared = Arc::new(Shared::default());
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(64 << 10)
            .spawn(move || {
                for sig in signals.forever() {
                    let current = s.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let first = s
                        .received
                        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok();
                    if first {
                        eprintln!(
                            "vmscript: received signal {sig}; stopping the current test (again to exit at once)"
                        );
                        if let Some(c) = current {
                            c.cancel(Reason::Signal(sig));
                        }
                    } else {
                        if let Some(c) = current {
                            c.kill_machines();
                        }
                        std::process::exit(128 + sig);
                    }
                }
            })?;
        Ok(SignalWatch { shared })
    }

    /// The test that a signal cancels (`None` between tests).
    pub fn set_current(&self, cancel: Option<Cancel>) {
        let received = self.received();
        let mut cur = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (Some(c), Some(sig)) = (&cancel, received) {
            c.cancel(Reason::Signal(sig));
        }
        *cur = cancel;
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.shared.received.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}
