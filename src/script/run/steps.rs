//! The record of a run's `step(name, fn)` calls: when each started, how
//! long it took and how it ended ([`StepRecord`]), and which step the
//! latest error happened in. The bindings are in [`crate::script::steps`].

use std::time::{Duration, SystemTime};

use super::{lock, Run};
use crate::script::errors::{self, Failure};

/// How a `step()` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Passed,
    /// Its closure ended with an error (a timeout included).
    Failed,
    /// Its closure called `skip()`.
    Skipped,
}

impl StepStatus {
    /// `passed`, `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One `step(name, fn)`: when it started, how long it took, how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The step's name; a step inside another is `outer > inner`.
    pub name: String,
    /// Since the run started.
    pub offset: Duration,
    /// Wall-clock start.
    pub started_at: SystemTime,
    pub duration: Duration,
    pub status: StepStatus,
    /// `KIND: message` of the error that ended a failed step.
    pub error: Option<String>,
}

/// The steps of a run: those taken, those open now, and which failed last.
#[derive(Debug, Default)]
pub(super) struct Steps {
    pub(super) taken: Vec<StepRecord>,
    /// Indexes into `taken` of the steps still running, outermost first.
    pub(super) open: Vec<usize>,
    /// The innermost step that failed with the latest error: its name and
    /// the error's kind and message.
    pub(super) failed: Option<(String, String, String)>,
}

/// A step that has started; given back to [`Run::step_end`].
#[derive(Debug)]
pub struct StepToken(usize);

impl Run {
    /// Records that step `name` starts now.
    pub fn step_begin(&self, name: &str) -> StepToken {
        let mut steps = lock(&self.steps);
        let full = match steps.open.last() {
            Some(&outer) => format!("{} > {name}", steps.taken[outer].name),
            None => name.to_string(),
        };
        let index = steps.taken.len();
        steps.taken.push(StepRecord {
            name: full,
            offset: self.output.start.elapsed(),
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            status: StepStatus::Passed,
            error: None,
        });
        steps.open.push(index);
        StepToken(index)
    }

    /// Records how the step of `token` ended: `error` is the failure its
    /// closure ended with, if any.
    pub fn step_end(&self, token: StepToken, error: Option<&Failure>) {
        let mut steps = lock(&self.steps);
        steps.open.retain(|&i| i != token.0);
        let start = self.output.start + steps.taken[token.0].offset;
        let mut failed = None;
        let step = &mut steps.taken[token.0];
        step.duration = start.elapsed();
        if let Some(f) = error {
            if f.kind == errors::SKIPPED {
                step.status = StepStatus::Skipped;
            } else {
                step.status = StepStatus::Failed;
                step.error = Some(format!("{}: {}", f.kind, f.message));
                failed = Some((step.name.clone(), f.kind.clone(), f.message.clone()));
            }
        }
        if let Some((name, kind, message)) = failed {
            // An outer step failing with the error an inner one failed
            // with keeps the inner one: that is where it happened.
            let same = steps
                .failed
                .as_ref()
                .is_some_and(|(_, k, m)| *k == kind && *m == message);
            if !same {
                steps.failed = Some((name, kind, message));
            }
        }
    }

    /// The step `f` happened in: the innermost step that failed with the
    /// same error, when one did.
    pub fn failed_step(&self, f: &Failure) -> Option<String> {
        let steps = lock(&self.steps);
        let (name, kind, message) = steps.failed.as_ref()?;
        (*kind == f.kind && *message == f.message).then(|| name.clone())
    }
}
