//! The default format: one line per test as it ends (`PASS name (1.2s)`,
//! `FAIL`, `TIMEOUT`, `INTERRUPTED`, `FLAKY`, `SKIP name: reason`), the
//! evidence indented under each failure, and a summary whose last line is
//! exactly `N passed, N failed, N skipped` (CI reads it).
//!
//! The text carries ANSI styles (the verdicts, the error line); the
//! reporter turns them into colours on a terminal and drops them
//! elsewhere. What came from the test (its name, error, output, logs) is
//! passed through [`plain`] first, so the only control sequences in a
//! report are these styles.

use std::time::Duration;

use anstyle::{AnsiColor, Style};

use crate::script::Status;

use super::super::results::{TestResult, Verdict};
use super::super::{StopReason, Summary};
use super::{details, failure_parts, failure_text, indent, plain, snippet};

const GOOD: Style = AnsiColor::Green.on_default();
const BAD: Style = AnsiColor::Red.on_default().bold();
const WARN: Style = AnsiColor::Yellow.on_default();
const ERROR: Style = AnsiColor::Red.on_default();

/// `text` in `style`.
fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// The word of a verdict, coloured.
fn word(w: &str) -> String {
    let style = match w {
        "PASS" => GOOD,
        "FAIL" | "TIMEOUT" => BAD,
        _ => WARN,
    };
    paint(style, w)
}

/// How many of the slowest tests the summary names.
const SLOWEST: usize = 3;

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A test's report.
pub fn result(r: &TestResult, captured: bool) -> String {
    let name = plain(&r.test.name);
    let last = r.last();
    let time = secs(last.outcome.duration);
    let tries = r.attempts().len();
    if let Status::Skipped(reason) = &last.outcome.status {
        return format!("{} {name}: {}", word("SKIP"), plain(reason));
    }
    let mut s = match last.verdict {
        Verdict::Passed if tries > 1 => {
            format!("{} {name} ({time}, passed on try {tries})", word("FLAKY"))
        }
        Verdict::Passed => return format!("{} {name} ({time})", word("PASS")),
        Verdict::Failed if tries > 1 => format!("{} {name} ({time}, {tries} tries)", word("FAIL")),
        Verdict::TimedOut if tries > 1 => {
            format!("{} {name} ({time}, {tries} tries)", word("TIMEOUT"))
        }
        Verdict::Failed => format!("{} {name} ({time})", word("FAIL")),
        Verdict::TimedOut => format!("{} {name} ({time})", word("TIMEOUT")),
        Verdict::Interrupted => format!("{} {name} ({time})", word("INTERRUPTED")),
        Verdict::Skipped => format!("{} {name}", word("SKIP")),
    };
    // Earlier tries: one line each, and where their logs are.
    for a in &r.attempts()[..tries - 1] {
        let first = plain(&failure_text(a));
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
        if let Some((head, context)) = failure_parts(last) {
            let head = indent(&plain(&head), "    ");
            // The error's first line stands out; what follows is context.
            let (first, rest) = head.split_once('\n').unwrap_or((&head, ""));
            s.push_str(&paint(ERROR, first));
            if !rest.is_empty() {
                s.push('\n');
                s.push_str(rest);
            }
            if let Some(snippet) = last.failure().and_then(snippet::render) {
                s.push('\n');
                s.push_str(&indent(&snippet, "    "));
            }
            for c in context {
                s.push('\n');
                s.push_str(&indent(&plain(&c), "      "));
            }
        }
        let d = plain(&details(last, captured));
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
    if results.len() + s.not_run() > 1 {
        let mut line = format!(
            "    Summary: {} tests in {}, {} at a time",
            results.len() + s.not_run(),
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
                .map(|r| format!("{} {}", secs(r.duration()), plain(&r.test.name)))
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
            out.push(format!("    {} {}", self::word(word), plain(&r.test.name)));
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
        Some(StopReason::FailFast) if s.not_run() > 0 => {
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
    if s.not_run() > 0 {
        out.push(format!("{} not run", s.not_run()));
    }
    out.push(c.to_string());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::super::tests::result as make;
    use super::*;
    use crate::runner::discover::Test;
    use crate::runner::results::Counts;

    /// The text as it reads without colours.
    fn result(r: &TestResult, captured: bool) -> String {
        anstream::adapter::strip_str(&super::result(r, captured)).to_string()
    }

    fn summary(s: &Summary, results: &[TestResult]) -> String {
        anstream::adapter::strip_str(&super::summary(s, results)).to_string()
    }

    #[test]
    fn verdicts_and_errors_are_styled_and_test_text_is_not() {
        let text = super::result(&make("t.rhai", &[Verdict::Failed]), true);
        assert!(
            text.starts_with(
                "\x1b[1m\x1b[31mFAIL\x1b[0m t.rhai (1.2s)\n\x1b[31m    t.rhai: AssertionFailed"
            ),
            "{text:?}"
        );
        let pass = super::result(&make("t.rhai", &[Verdict::Passed]), true);
        assert_eq!(pass, "\x1b[32mPASS\x1b[0m t.rhai (1.2s)");
        // A name or an error that carries control sequences loses them.
        let mut r = make("a\x1b[2Jb.rhai", &[Verdict::Failed]);
        if let Status::Failed(f) = &mut r.attempts_mut()[0].outcome.status {
            f.message = "bad\x1b]0;owned\x07 \x1b[1Aup".into();
        }
        let text = result(&r, true);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains("ab.rhai: AssertionFailed: bad up"),
            "{text:?}"
        );
    }

    #[test]
    fn timeout_flaky_and_skip_have_their_colours() {
        let t = super::result(&make("t.rhai", &[Verdict::TimedOut]), true);
        assert!(
            t.starts_with("\x1b[1m\x1b[31mTIMEOUT\x1b[0m t.rhai"),
            "{t:?}"
        );
        let f = super::result(&make("t.rhai", &[Verdict::Failed, Verdict::Passed]), true);
        assert!(f.starts_with("\x1b[33mFLAKY\x1b[0m t.rhai"), "{f:?}");
        let s = super::result(&make("t.rhai", &[Verdict::Skipped]), true);
        assert!(s.starts_with("\x1b[33mSKIP\x1b[0m t.rhai"), "{s:?}");
    }

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
            never_run: vec![Test::default(); 2],
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
