//! Running the selected tests: up to `jobs` slots at once (a test of
//! weight N holds N of them, at most all), each try on a thread
//! of its own with its own engine, temp dir and artifacts folder
//! ([`script::run_program`] does the rest, on the file compiled once for
//! the whole run), retries of failed tries,
//! `--fail-fast`, signals, and a backstop for a test that does not stop at
//! its timeout. A test handed to a debugger (`--debug-on-fail`) has ended
//! its script: it is neither announced slow nor abandoned after that.
//!
//! One thread, the caller's, owns the schedule: worker threads only run a
//! script and send its [`Outcome`] back over a channel, so results are
//! counted, reported and their artifacts kept or removed in one place, in
//! the order tests end. Start with [`Executor::run`].

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::script::{
    self, Cancel, Debugger, Failure, Outcome, QemuBinary, RunConfig, RunReport, Status,
};

use super::artifacts::Artifacts;
use super::discover::Test;
use super::reporter::{html, ProgressState, Reporter};
use super::results::{Attempt, Counts, TestResult, Verdict};
use super::signal::SignalWatch;
use super::{Options, Programs, StopReason, Summary};

/// How often the progress line and the stuck-test backstop are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long a test may go on after its timeout before it is abandoned.
/// Every wait in the script layer ends when the run is cancelled, so only
/// a bug gets here.
const STUCK_GRACE: Duration = Duration::from_secs(15);

/// What worker threads and the signal thread tell the executor.
pub enum Msg {
    /// A try ended.
    Done { id: u64, outcome: Box<Outcome> },
    /// The first Ctrl-C or SIGTERM; the running tests were cancelled.
    Signal(i32),
}

/// A try that is running.
struct Running {
    test: Test,
    number: u32,
    /// The test's earlier tries.
    earlier: Vec<Attempt>,
    cancel: Cancel,
    started: Instant,
    /// The same moment on the wall clock, for the reports.
    started_at: SystemTime,
    dir: Option<PathBuf>,
    /// It has been announced `SLOW`.
    slow: bool,
    /// A debugger has (or had) it: its script is over.
    debugged: Arc<AtomicBool>,
}

/// The schedule of one `vmscript run`; see the module documentation.
pub struct Executor<'a> {
    options: &'a Options,
    qemu: QemuBinary,
    jobs: usize,
    programs: Programs,
    artifacts: Artifacts,
    signals: SignalWatch,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    running: BTreeMap<u64, Running>,
    /// The slots the running tests hold.
    busy: usize,
    next_id: u64,
    counts: Counts,
    results: Vec<TestResult>,
    stopped: Option<StopReason>,
}

impl<'a> Executor<'a> {
    /// `tx` and `rx` are one channel, whose sender the signal thread also has.
    pub fn new(
        options: &'a Options,
        qemu: QemuBinary,
        jobs: usize,
        programs: Programs,
        artifacts: Artifacts,
        signals: SignalWatch,
        (tx, rx): (Sender<Msg>, Receiver<Msg>),
    ) -> Executor<'a> {
        Executor {
            options,
            qemu,
            jobs: jobs.max(1),
            programs,
            artifacts,
            signals,
            tx,
            rx,
            running: BTreeMap::new(),
            busy: 0,
            next_id: 0,
            counts: Counts::default(),
            results: Vec::new(),
            stopped: None,
        }
    }

    /// Runs `tests` and reports each as it ends; returns the summary and
    /// every result, in the order they ended.
    pub fn run(mut self, tests: Vec<Test>, reporter: &mut Reporter) -> (Summary, Vec<TestResult>) {
        let start = Instant::now();
        let total = tests.len();
        let mut queue: VecDeque<Test> = tests.into();
        reporter.start(total);
        loop {
            if let (None, Some(sig)) = (self.stopped, self.signals.received()) {
                self.stopped = Some(StopReason::Signal(sig));
            }
            // In order: a heavy test waits for its slots rather than be
            // overtaken for ever by light ones.
            while self.stopped.is_none() {
                let Some(weight) = queue.front().map(|t| self.weight(t)) else {
                    break;
                };
                if self.busy + weight > self.jobs {
                    break;
                }
                if let Some(test) = queue.pop_front() {
                    self.start(test, 1, Vec::new());
                }
            }
            if self.running.is_empty() {
                break;
            }
            match self.rx.recv_timeout(TICK) {
                Ok(Msg::Done { id, outcome }) => {
                    if let Some(r) = self.running.remove(&id) {
                        self.finished(id, r, *outcome, reporter);
                    }
                }
                Ok(Msg::Signal(sig)) => {
                    if !matches!(self.stopped, Some(StopReason::Signal(_))) {
                        self.stopped = Some(StopReason::Signal(sig));
                    }
                    // The running tests were cancelled already; counting
                    // them here would race with their ends.
                    reporter.note(&format!(
                        "{} received: stopping the running tests, starting no more; again to kill at once",
                        script::cancel::signal_name(sig),
                    ));
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            self.announce_slow(reporter);
            self.abandon_stuck(reporter);
            reporter.tick(&self.progress(start, total));
        }
        self.artifacts.finish();
        let summary = Summary {
            counts: self.counts,
            never_run: queue.into(),
            stopped: self.stopped,
            elapsed: start.elapsed(),
            jobs: self.jobs,
            partition: self.options.partition,
            none_selected: false,
        };
        // A temp root is gone when no test's logs stayed in it.
        let root = self.artifacts.root();
        if root.exists() {
            if let Err(e) = html::save_results(root, &summary, &self.results) {
                reporter.note(&format!(
                    "could not write {}: {e}",
                    root.join(html::RESULTS_FILE).display()
                ));
            }
        }
        reporter.finish(&summary, &self.results);
        (summary, self.results)
    }

    /// The slots `test` holds while it runs: its weight, at most all.
    fn weight(&self, test: &Test) -> usize {
        test.settings.weight.clamp(1, self.jobs)
    }

    /// Starts try `number` of `test` on a thread of its own.
    fn start(&mut self, test: Test, number: u32, earlier: Vec<Attempt>) {
        self.busy += self.weight(&test);
        let id = self.next_id;
        self.next_id += 1;
        let cancel = Cancel::new();
        let started = Instant::now();
        let shown = test.path.display().to_string();
        let dir = self.artifacts.create(&test, number);
        let debugged = Arc::new(AtomicBool::new(false));
        // Registered either way: a failure to start still ends as a result.
        self.running.insert(
            id,
            Running {
                test: test.clone(),
                number,
                earlier,
                cancel: cancel.clone(),
                started,
                started_at: SystemTime::now(),
                dir: dir.as_ref().ok().cloned(),
                slow: false,
                debugged: debugged.clone(),
            },
        );
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                let _ = self.tx.send(Msg::Done {
                    id,
                    outcome: Box::new(host_failure(&shown, e.0, started)),
                });
                return;
            }
        };
        let discard = if self.artifacts.keeps(Verdict::Interrupted) {
            Vec::new()
        } else {
            vec![dir.clone()]
        };
        self.signals.track(id, cancel.clone(), discard);
        let config = RunConfig {
            script: test.path.clone(),
            artifacts: dir.clone(),
            timeout: test.settings.timeout,
            qemu: self.qemu.clone(),
            params: self.options.params.clone(),
            capture: self.options.capture,
            lib_dirs: self.options.lib_dirs.clone(),
            debugger: self.debugger(debugged),
        };
        let program = self.programs.get(&test.path).cloned();
        let case = test.case.clone();
        let tx = self.tx.clone();
        let c = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("test {}", test.name))
            .stack_size(script::SCRIPT_STACK)
            .spawn(move || {
                let shown = config.script.display().to_string();
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match program {
                        Some(p) => script::run_program(config, &p, case.as_deref(), c),
                        None => script::run_file(config, c),
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        host_failure(
                            &shown,
                            format!("vmscript bug: the test's thread panicked: {what}"),
                            started,
                        )
                    });
                let _ = tx.send(Msg::Done {
                    id,
                    outcome: Box::new(outcome),
                });
            });
        if let Err(e) = spawned {
            let _ = self.tx.send(Msg::Done {
                id,
                outcome: Box::new(host_failure(
                    &shown,
                    format!("starting a thread: {e}"),
                    started,
                )),
            });
        }
    }

    /// The run's debugger, told that it has the test of `debugged` and
    /// holding Ctrl-C for itself meanwhile.
    fn debugger(&self, debugged: Arc<AtomicBool>) -> Option<Debugger> {
        let debugger = self.options.debugger.clone()?;
        let signals = self.signals.clone();
        Some(Debugger::new(move |scene| {
            debugged.store(true, Ordering::SeqCst);
            signals.hold_interrupts(true);
            debugger.debug(scene);
            signals.hold_interrupts(false);
        }))
    }

    /// Try `id` ended: retry it, or report the test.
    fn finished(&mut self, id: u64, r: Running, outcome: Outcome, reporter: &mut Reporter) {
        self.busy = self.busy.saturating_sub(self.weight(&r.test));
        let verdict = Verdict::of(&outcome, r.cancel.ended_by().as_ref());
        let mut attempts = r.earlier;
        attempts.push(Attempt {
            number: r.number,
            started_at: r.started_at,
            verdict,
            outcome,
            artifacts: r.dir,
        });
        let retry = matches!(verdict, Verdict::Failed | Verdict::TimedOut)
            && r.number <= r.test.settings.retries
            && self.stopped.is_none()
            && self.signals.received().is_none();
        if retry {
            self.signals.untrack(id);
            self.start(r.test, r.number + 1, attempts);
            return;
        }
        // The report reads the logs' tails, so folders go after it.
        let mut discard = Vec::new();
        for a in &mut attempts {
            if !self.artifacts.keeps(a.verdict) {
                discard.extend(a.artifacts.take());
            }
        }
        let result = TestResult::new(r.test, attempts);
        reporter.result(&result);
        for d in discard {
            self.artifacts.discard(&d);
        }
        // Only now: a second signal removes what a tracked test would not keep.
        self.signals.untrack(id);
        self.counts.add(&result);
        if self.options.fail_fast && verdict.is_failure() && self.stopped.is_none() {
            self.stopped = Some(StopReason::FailFast);
        }
        self.results.push(result);
    }

    /// Announces, once, each test running past the slow timeout, with
    /// what it is doing (its step, what it waits for).
    fn announce_slow(&mut self, reporter: &mut Reporter) {
        let Some(limit) = self.options.slow_timeout else {
            return;
        };
        for r in self.running.values_mut() {
            let ran = r.started.elapsed();
            if r.slow || ran < limit || r.debugged.load(Ordering::SeqCst) {
                continue;
            }
            r.slow = true;
            let mut text = format!(
                "SLOW {} has run {:.0}s (timeout {:.0}s)",
                r.test.name,
                ran.as_secs_f64(),
                r.test.settings.timeout.as_secs_f64()
            );
            let doing = r.cancel.activity();
            if !doing.is_empty() {
                text.push_str(", ");
                text.push_str(&doing.join(", "));
            }
            reporter.note(&text);
        }
    }

    /// Reports as timed out, and stops waiting for, a test that goes on
    /// well past its timeout; its machines are killed and its temp dir
    /// removed, its thread is left to end with the process.
    fn abandon_stuck(&mut self, reporter: &mut Reporter) {
        let stuck: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, r)| r.started.elapsed() > r.test.settings.timeout + STUCK_GRACE)
            .filter(|(_, r)| !r.debugged.load(Ordering::SeqCst))
            .map(|(id, _)| *id)
            .collect();
        for id in stuck {
            let Some(r) = self.running.remove(&id) else {
                continue;
            };
            self.signals.untrack(id);
            let timeout = r.test.settings.timeout;
            r.cancel.cancel(script::Reason::Timeout(timeout));
            r.cancel.abandon();
            let message = format!(
                "the test timed out after {}s and did not stop within {}s more; it was abandoned",
                timeout.as_secs_f64(),
                STUCK_GRACE.as_secs()
            );
            let shown = r.test.path.display().to_string();
            let outcome = Outcome {
                status: Status::Failed(Failure::plain(&shown, "Timeout", message)),
                duration: r.started.elapsed(),
                report: RunReport::default(),
            };
            self.finished(id, r, outcome, reporter);
        }
    }

    fn progress(&self, start: Instant, total: usize) -> ProgressState {
        ProgressState {
            elapsed: start.elapsed(),
            total,
            counts: self.counts,
            running: self
                .running
                .values()
                .map(|r| (r.test.name.clone(), r.number, r.started.elapsed()))
                .collect(),
        }
    }
}

/// A try that failed before or outside its script.
fn host_failure(script: &str, message: String, started: Instant) -> Outcome {
    Outcome {
        status: Status::Failed(Failure::plain(script, "HostError", message)),
        duration: started.elapsed(),
        report: RunReport::default(),
    }
}
