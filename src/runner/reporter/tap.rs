//! `--format tap`: the Test Anything Protocol, version 14. The plan comes
//! first; test points are numbered in the order tests end; a failure
//! carries a YAML block (values as double-quoted scalars, lists as flow
//! sequences) with its kind, message, position, what it was waiting for,
//! its steps and its artifacts. A run cut short by `--fail-fast` or a
//! signal ends with `Bail out!`.

use serde_json::json;

use crate::script::Status;

use super::super::results::TestResult;
use super::super::{StopReason, Summary};
use super::waiting_for;

/// The version line and the plan.
pub fn header(total: usize) -> String {
    format!("TAP version 14\n1..{total}")
}

/// A description is one line (a newline in a file's name would start a
/// test point of its own) without an unescaped `#` (it would start a
/// directive) nor terminal control sequences.
fn escape(text: &str) -> String {
    let text = text
        .replace('\\', "\\\\")
        .replace('#', "\\#")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    super::plain(&text)
}

/// One YAML line `key: "value"`; a JSON string is a YAML double-quoted scalar.
fn yaml(key: &str, value: impl Into<serde_json::Value>) -> String {
    format!("  {key}: {}\n", value.into())
}

/// Test point `n` for `r`.
pub fn test_point(n: usize, r: &TestResult) -> String {
    let name = escape(&r.test.name);
    let last = r.last();
    let ms = r.duration().as_millis() as u64;
    match &last.outcome.status {
        Status::Skipped(reason) => {
            let reason = super::plain(&reason.replace(['\n', '\r'], " "));
            return format!("ok {n} - {name} # SKIP {reason}");
        }
        Status::Passed if !r.is_flaky() => return format!("ok {n} - {name}"),
        _ => {}
    }
    let mut s = if last.verdict.is_failure() {
        format!("not ok {n} - {name}\n  ---\n")
    } else {
        format!("ok {n} - {name}\n  ---\n")
    };
    s.push_str(&yaml("status", last.verdict.as_str()));
    if r.is_flaky() {
        s.push_str(&yaml("flaky", true));
    }
    if let Some(f) = last.failure() {
        s.push_str(&yaml("kind", f.kind.as_str()));
        s.push_str(&yaml("message", f.message.as_str()));
        s.push_str(&yaml("at", f.location()));
        if let Some(w) = waiting_for(f) {
            s.push_str(&yaml("waiting_for", w));
        }
    }
    s.push_str(&yaml("duration_ms", ms));
    s.push_str(&yaml("tries", r.attempts().len()));
    let steps = &last.outcome.report.steps;
    if !steps.is_empty() {
        // A JSON array is a YAML flow sequence: one line, as every value here.
        let steps: Vec<serde_json::Value> = steps.iter().map(super::json::step).collect();
        s.push_str(&yaml("steps", steps));
    }
    let kept: Vec<String> = r
        .attempts()
        .iter()
        .filter_map(|a| a.artifacts.as_ref().map(|d| d.display().to_string()))
        .collect();
    if !kept.is_empty() {
        s.push_str(&yaml("artifacts", json!(kept)));
    }
    s.push_str("  ...");
    s
}

/// `Bail out!` for a run cut short, then the counts as comments.
pub fn footer(s: &Summary) -> String {
    let mut out = String::new();
    match s.stopped {
        Some(StopReason::Signal(sig)) => out.push_str(&format!(
            "Bail out! Interrupted by {}\n",
            crate::script::cancel::signal_name(sig)
        )),
        Some(StopReason::FailFast) if s.not_run() > 0 => {
            out.push_str("Bail out! Stopped after a failure (--fail-fast)\n");
        }
        _ => {}
    }
    let c = &s.counts;
    out.push_str(&format!("# {c}"));
    out.push_str(&format!(
        "\n# {} flaky, {} timed out, {} not run",
        c.flaky,
        c.timed_out,
        s.not_run()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::result;
    use super::*;
    use crate::runner::results::Verdict;

    #[test]
    fn test_points_and_yaml_blocks() {
        assert_eq!(
            test_point(1, &result("a#b.rhai", &[Verdict::Passed])),
            "ok 1 - a\\#b.rhai"
        );
        assert_eq!(
            test_point(1, &result("a\nok 2 - b\r.rhai", &[Verdict::Passed])),
            "ok 1 - a\\nok 2 - b\\r.rhai"
        );
        assert_eq!(
            test_point(2, &result("s.rhai", &[Verdict::Skipped])),
            "ok 2 - s.rhai # SKIP no guest"
        );
        let t = test_point(3, &result("t.rhai", &[Verdict::TimedOut]));
        assert!(
            t.starts_with("not ok 3 - t.rhai\n  ---\n  status: \"timeout\"\n  kind: \"Timeout\"\n"),
            "{t}"
        );
        assert!(t.contains("\n  waiting_for: \"event STOP\"\n"), "{t}");
        assert!(t.ends_with("\n  ..."), "{t}");
        let f = test_point(4, &result("f.rhai", &[Verdict::Failed, Verdict::Passed]));
        assert!(
            f.starts_with("ok 4 - f.rhai\n  ---\n  status: \"passed\"\n  flaky: true\n"),
            "{f}"
        );
    }
}
