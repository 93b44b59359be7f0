//! The default format: one line per test as it ends (`PASS name (1.2s)`,
//! `FAIL`, `TIMEOUT`, `INTERRUPTED`, `FLAKY`, `SKIP name: reason`), the
//! evidence indented under each failure, and a summary whose last line is
//! exactly `N passed, N failed, N skipped` (CI reads it).

use std::time::Duration;

use crate::script::Status;

use super::super::results::{TestResult, Verdict};
use super::super::{StopReason, Summary};
use super::{details, failure_text, indent};

/// How many of the slowest tests the summary names.
const SLOWEST: usize = 3;

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A test's report.
pub fn result(r: &TestResult, captured: bool) -> String {
    let name = &r.test.name;
    let last = r.last();
    let time = secs(last.outcome.duration);
    let tries = r.attempts().len();
    if let Status::Skipped(reason) = &last.outcome.status {
        return format!("SKIP {name}: {reason}");
    }
    let mut s = match last.verdict {
        Verdict::Passed if tries > 1 => {
            format!("FLAKY {name} ({time}, passed on try {tries})")
        }
        Verdict::Passed => return format!("PASS {name} ({time})"),
        Verdict::Failed if tries > 1 => format!("FAIL {name} ({time}, {tries} tries)"),
        Verdict::TimedOut if tries > 1 => format!("TIMEOUT {name} ({time}, {tries} tries)"),
        Verdict::Failed => format!("FAIL {name} ({time})"),
        Verdict::TimedOut => format!("TIMEOUT {name} ({time})"),
        Verdict::Interrupted => format!("INTERRUPTED {name} ({time})"),
        Verdict::Skipped => format!("SKIP {name}"),
    };
    // Earlier tries: one line each, and where their logs are.
    for a in &r.attempts()[..tries - 1] {
        let first = failure_text(a);
        let first = first.lines().next().unwrap_or("");
        s.push_str(&format!(
            "\n    try {} {} ({}): {first}",
            a.number,
            a.verdict.as_str(),
            secs(a.outcome.duration)
        ));
        if let Some(dir) = &a.artifacts {
            s.push_str(&format!("\n      artifacts: {}", dir.display()));
        }
    }
    if last.verdict.is_failure() {
        if tries > 1 {
            s.push_str(&format!("\n    try {}:", last.number));
        }
        s.push('\n');
        s.push_str(&indent(&failure_text(last), "    "));
        let d = details(last, captured);
        if !d.is_empty() {
            s.push('\n');
            s.push_str(&indent(&d, "    "));
        }
    }
    s
}

/// The end of the run. The block above the last lines is indented, so
/// that every unindented line is a test's or a count.
pub fn summary(s: &Summary, results: &[TestResult]) -> String {
    let mut out = Vec::new();
    if results.len() + s.not_run > 1 {
        let mut line = format!(
            "    Summary: {} tests in {}, {} at a time",
            results.len() + s.not_run,
            secs(s.elapsed),
            s.jobs
        );
        if let Some(p) = &s.partition {
            line.push_str(&format!(", partition {p}"));
        }
        out.push(line);
        let mut by_time: Vec<&TestResult> = results
            .iter()
            .filter(|r| r.verdict() != Verdict::Skipped)
            .collect();
        by_time.sort_by_key(|r| std::cmp::Reverse(r.duration()));
        if by_time.len() > 1 {
            let slowest: Vec<String> = by_time
                .iter()
                .take(SLOWEST)
                .map(|r| format!("{} {}", secs(r.duration()), r.test.name))
                .collect();
            out.push(format!("    Slowest: {}", slowest.join(", ")));
        }
        for r in results {
            let word = match r.verdict() {
                Verdict::Failed => "FAIL",
                Verdict::TimedOut => "TIMEOUT",
                Verdict::Interrupted => "INTERRUPTED",
                Verdict::Passed if r.is_flaky() => "FLAKY",
                _ => continue,
            };
            out.push(format!("    {word} {}", r.test.name));
        }
    }
    let c = &s.counts;
    let extra: Vec<String> = [
        (c.flaky, "flaky"),
        (c.timed_out, "timed out"),
        (c.interrupted, "interrupted"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    if !extra.is_empty() {
        out.push(format!("    {}", extra.join(", ")));
    }
    match s.stopped {
        Some(StopReason::FailFast) if s.not_run > 0 => {
            out.push("    Stopped after a failure (--fail-fast)".into());
        }
        Some(StopReason::Signal(sig)) => {
            out.push(format!(
                "    Stopped by {}",
                crate::script::cancel::signal_name(sig)
            ));
        }
        _ => {}
    }
    if s.not_run > 0 {
        out.push(format!("{} not run", s.not_run));
    }
    out.push(c.to_string());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::super::tests::result as make;
    use super::*;
    use crate::runner::results::Counts;

    #[test]
    fn lines_show_status_error_output_and_artifacts() {
        assert_eq!(
            result(&make("t.rhai", &[Verdict::Passed]), true),
            "PASS t.rhai (1.2s)"
        );
        assert_eq!(
            result(&make("t.rhai", &[Verdict::Skipped]), true),
            "SKIP t.rhai: no guest"
        );
        let text = result(&make("t.rhai", &[Verdict::Failed]), true);
        assert!(
            text.starts_with("FAIL t.rhai (1.2s)\n    t.rhai: AssertionFailed: a < b & c\n"),
            "{text}"
        );
        assert!(text.contains("\n    hello\n"), "{text}");
        assert!(text.ends_with("\n    artifacts: /tmp/art"), "{text}");
    }

    #[test]
    fn flaky_and_timed_out_tests_say_so() {
        let text = result(&make("t.rhai", &[Verdict::Failed, Verdict::Passed]), true);
        assert_eq!(
            text,
            "FLAKY t.rhai (1.2s, passed on try 2)\n    try 1 failed (1.2s): t.rhai: AssertionFailed: a < b & c\n      artifacts: /tmp/art"
        );
        let text = result(&make("t.rhai", &[Verdict::TimedOut]), true);
        assert!(
            text.starts_with("TIMEOUT t.rhai (1.2s)\n    t.rhai: Timeout: the test timed out after 2s, waiting for event STOP"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_ends_with_the_counts_line() {
        let results = vec![
            make("a.rhai", &[Verdict::Passed]),
            make("b.rhai", &[Verdict::TimedOut]),
            make("c.rhai", &[Verdict::Failed, Verdict::Passed]),
        ];
        let mut counts = Counts::default();
        results.iter().for_each(|r| counts.add(r));
        let s = Summary {
            counts,
            not_run: 2,
            stopped: Some(StopReason::FailFast),
            elapsed: Duration::from_millis(4100),
            jobs: 4,
            ..Summary::default()
        };
        let text = summary(&s, &results);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "    Summary: 5 tests in 4.1s, 4 at a time");
        assert!(
            lines[1].starts_with("    Slowest: 2.5s c.rhai, 1.2s "),
            "{text}"
        );
        assert!(
            text.contains("\n    TIMEOUT b.rhai\n    FLAKY c.rhai\n"),
            "{text}"
        );
        assert!(text.contains("\n    1 flaky, 1 timed out\n"), "{text}");
        assert!(
            text.ends_with("\n2 not run\n2 passed, 1 failed, 0 skipped"),
            "{text}"
        );
        // One test: only the counts.
        let one = Summary {
            counts,
            ..Summary::default()
        };
        assert!(summary(&one, &results[..1]).ends_with("2 passed, 1 failed, 0 skipped"));
    }
}
