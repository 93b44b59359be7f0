//! `--format json`: one JSON object per line for each test as it ends,
//! then one `{"summary": …}` object.

use serde_json::{json, Value};

use crate::script::{Status, StepRecord};

use super::super::results::{Attempt, TestResult};
use super::super::Summary;
use super::waiting_for;

fn attempt(a: &Attempt) -> Value {
    let error = match &a.outcome.status {
        Status::Passed => Value::Null,
        Status::Skipped(reason) => json!({ "reason": reason }),
        Status::Failed(f) => json!({
            "kind": f.kind,
            "message": f.message,
            "file": f.file,
            "line": f.line,
            "column": f.column,
            "context": f.context,
            "waiting_for": waiting_for(f),
        }),
    };
    json!({
        "try": a.number,
        "start": unix_seconds(a.started_at),
        "status": a.verdict.as_str(),
        "duration": a.outcome.duration.as_secs_f64(),
        "error": error,
        "steps": a.outcome.report.steps.iter().map(step).collect::<Vec<_>>(),
        "artifacts": a.artifacts.as_ref().map(|d| d.display().to_string()),
    })
}

/// A `step()`: its start (seconds since the Unix epoch, and since the
/// test started), duration, status and error.
/// One step as JSON (in `--format json` and in TAP's YAML blocks).
pub(super) fn step(st: &StepRecord) -> Value {
    json!({
        "name": st.name,
        "start": unix_seconds(st.started_at),
        "offset": st.offset.as_secs_f64(),
        "duration": st.duration.as_secs_f64(),
        "status": st.status.as_str(),
        "error": st.error,
    })
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A test's result: its final status (`passed`, `failed`, `timeout`,
/// `interrupted`, `skipped`), `flaky`, and every try.
pub fn result(r: &TestResult) -> Value {
    let last = attempt(r.last());
    json!({
        "name": r.test.name,
        "path": r.test.path.display().to_string(),
        "file": r.test.file_name(),
        "case": r.test.case,
        "start": unix_seconds(r.attempts()[0].started_at),
        "status": r.verdict().as_str(),
        "flaky": r.is_flaky(),
        "duration": r.duration().as_secs_f64(),
        "tries": r.attempts().len(),
        "error": last["error"],
        "steps": last["steps"],
        "artifacts": last["artifacts"],
        "attempts": r.attempts().iter().map(attempt).collect::<Vec<_>>(),
    })
}

/// The run's counts.
pub fn summary(s: &Summary) -> Value {
    let c = &s.counts;
    json!({
        "summary": {
            "passed": c.passed,
            "failed": c.failed,
            "skipped": c.skipped,
            "flaky": c.flaky,
            "timed_out": c.timed_out,
            "interrupted": c.interrupted,
            "not_run": s.not_run(),
            "duration": s.elapsed.as_secs_f64(),
            "jobs": s.jobs,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::result as make;
    use super::*;
    use crate::runner::results::Verdict;

    #[test]
    fn one_object_per_test_with_every_try() {
        let v = result(&make("t.rhai", &[Verdict::Failed, Verdict::TimedOut]));
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["flaky"], false);
        assert_eq!(v["tries"], 2);
        assert_eq!(v["error"]["waiting_for"], "event STOP");
        assert_eq!(v["attempts"][0]["status"], "failed");
        assert_eq!(v["attempts"][1]["artifacts"], "/tmp/art");
        assert!(!v.to_string().contains('\n'));
    }
}
