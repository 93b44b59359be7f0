//! What running tests produced: each try's [`Attempt`] with its
//! [`Verdict`], a test's [`TestResult`] (all its tries), and the run's
//! [`Counts`]. Plain data, shared by the executor and the reporters.

use std::path::PathBuf;
use std::time::Duration;

use crate::script::{Failure, Outcome, Reason, Status};

use super::discover::Test;

/// How one try of a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// An uncaught error.
    Failed,
    /// Stopped by `--timeout`.
    TimedOut,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
    /// It called `skip(reason)`.
    Skipped,
}

impl Verdict {
    /// The verdict of a script's outcome, given why its run was cancelled.
    pub fn of(outcome: &Outcome, cancelled: Option<&Reason>) -> Verdict {
        match (&outcome.status, cancelled) {
            (Status::Passed, _) => Verdict::Passed,
            (Status::Skipped(_), _) => Verdict::Skipped,
            (Status::Failed(_), Some(Reason::Timeout(_))) => Verdict::TimedOut,
            (Status::Failed(_), Some(Reason::Signal(_) | Reason::Interrupt)) => {
                Verdict::Interrupted
            }
            (Status::Failed(_), None) => Verdict::Failed,
        }
    }

    /// Whether it counts as a failure (timeouts and interruptions do).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Verdict::Failed | Verdict::TimedOut | Verdict::Interrupted
        )
    }

    /// The word for reports: `passed`, `failed`, `timeout`, `interrupted`,
    /// `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::TimedOut => "timeout",
            Verdict::Interrupted => "interrupted",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One try of a test.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// When the try started, on the wall clock.
    pub started_at: std::time::SystemTime,
    pub verdict: Verdict,
    pub outcome: Outcome,
    /// The try's artifacts folder, while it exists.
    pub artifacts: Option<PathBuf>,
}

impl Attempt {
    /// The error that ended the try, if one did.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.outcome.status {
            Status::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// A test's result: every try, the last one deciding.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub test: Test,
    attempts: Vec<Attempt>,
}

impl TestResult {
    /// The result of a test whose tries were `attempts`, in order.
    ///
    /// # Panics
    ///
    /// When `attempts` is empty: a test that ran tried at least once.
    pub fn new(test: Test, attempts: Vec<Attempt>) -> TestResult {
        assert!(!attempts.is_empty(), "a test result needs one try");
        TestResult { test, attempts }
    }

    /// Every try, in order.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Every try, to update their artifacts.
    pub fn attempts_mut(&mut self) -> &mut [Attempt] {
        &mut self.attempts
    }

    /// The deciding try.
    pub fn last(&self) -> &Attempt {
        self.attempts
            .last()
            .expect("a test result has at least one try")
    }

    pub fn verdict(&self) -> Verdict {
        self.last().verdict
    }

    /// Passed after failing at least once.
    pub fn is_flaky(&self) -> bool {
        self.verdict() == Verdict::Passed && self.attempts.len() > 1
    }

    /// The time of every try together.
    pub fn duration(&self) -> Duration {
        self.attempts.iter().map(|a| a.outcome.duration).sum()
    }
}

/// The counts of a run. `failed` includes the timed-out and interrupted
/// tests; `passed` includes the flaky ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub flaky: usize,
    pub timed_out: usize,
    pub interrupted: usize,
}

impl Counts {
    pub fn add(&mut self, r: &TestResult) {
        match r.verdict() {
            Verdict::Passed => self.passed += 1,
            Verdict::Skipped => self.skipped += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::TimedOut => {
                self.failed += 1;
                self.timed_out += 1;
            }
            Verdict::Interrupted => {
                self.failed += 1;
                self.interrupted += 1;
            }
        }
        if r.is_flaky() {
            self.flaky += 1;
        }
    }

    /// Tests that have a result.
    pub fn done(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

/// `N passed, N failed, N skipped`: the line CI reads.
impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::RunReport;

    fn attempt(number: u32, verdict: Verdict) -> Attempt {
        let status = match verdict {
            Verdict::Passed => Status::Passed,
            Verdict::Skipped => Status::Skipped("why".into()),
            _ => Status::Failed(Failure::plain("t.rhai", "AssertionFailed", "no")),
        };
        Attempt {
            number,
            started_at: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            verdict,
            outcome: Outcome {
                status,
                duration: Duration::from_millis(500),
                report: RunReport::default(),
            },
            artifacts: None,
        }
    }

    fn result(verdicts: &[Verdict]) -> TestResult {
        let test = Test {
            path: "t.rhai".into(),
            name: "t.rhai".into(),
            ..Test::default()
        };
        let attempts = verdicts
            .iter()
            .zip(1..)
            .map(|(v, n)| attempt(n, *v))
            .collect();
        TestResult::new(test, attempts)
    }

    #[test]
    fn the_summary_line_is_exact() {
        let c = Counts {
            passed: 3,
            failed: 1,
            skipped: 2,
            flaky: 1,
            timed_out: 1,
            interrupted: 0,
        };
        assert_eq!(c.to_string(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn timeouts_count_as_failed_and_flaky_as_passed() {
        let mut c = Counts::default();
        c.add(&result(&[Verdict::TimedOut]));
        c.add(&result(&[Verdict::Failed, Verdict::Passed]));
        c.add(&result(&[Verdict::Failed, Verdict::Failed]));
        c.add(&result(&[Verdict::Skipped]));
        assert_eq!(
            c,
            Counts {
                passed: 1,
                failed: 2,
                skipped: 1,
                flaky: 1,
                timed_out: 1,
                interrupted: 0,
            }
        );
        assert_eq!(c.done(), 4);
        assert_eq!(
            result(&[Verdict::Failed, Verdict::Passed]).duration(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn verdicts_follow_the_cancel_reason() {
        let failed = attempt(1, Verdict::Failed).outcome;
        assert_eq!(Verdict::of(&failed, None), Verdict::Failed);
        assert_eq!(
            Verdict::of(&failed, Some(&Reason::Timeout(Duration::from_secs(1)))),
            Verdict::TimedOut
        );
        assert_eq!(
            Verdict::of(&failed, Some(&Reason::Signal(2))),
            Verdict::Interrupted
        );
        let passed = attempt(1, Verdict::Passed).outcome;
        assert_eq!(
            Verdict::of(&passed, Some(&Reason::Signal(2))),
            Verdict::Passed
        );
    }
}
