//! How results are shown: `human` lines (`PASS name (1.2s)`, failures with
//! their error, output tails and artifacts path), `tap`, or `json` lines,
//! plus an optional JUnit XML file. The human summary ends with the line
//! `N passed, N failed, N skipped`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::script::{Outcome, Status};

use super::discover::Test;

/// Lines of each log shown under a failure.
const LOG_TAIL_LINES: usize = 15;
/// Lines of captured output shown under a failure.
const OUTPUT_TAIL_LINES: usize = 30;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// PASS/FAIL/SKIP lines and a summary.
    #[default]
    Human,
    /// Test Anything Protocol, version 13.
    Tap,
    /// One JSON object per test, then one with the summary.
    Json,
}

/// One test's final result.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub test: Test,
    pub outcome: Outcome,
    /// How many times it ran (retries + 1 at most).
    pub tries: u32,
    /// The artifacts folder, when it was kept.
    pub artifacts: Option<PathBuf>,
}

/// The counts of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn add(&mut self, s: &Status) {
        match s {
            Status::Passed => self.passed += 1,
            Status::Failed(_) => self.failed += 1,
            Status::Skipped(_) => self.skipped += 1,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Prints results as they come.
pub struct Reporter {
    format: Format,
    /// Whether output was captured (and so is shown under failures).
    captured: bool,
    index: usize,
}

impl Reporter {
    pub fn new(format: Format, captured: bool) -> Reporter {
        Reporter {
            format,
            captured,
            index: 0,
        }
    }

    /// Before the first test.
    pub fn start(&mut self, total: usize) {
        if self.format == Format::Tap {
            out(&format!("TAP version 13\n1..{total}"));
        }
    }

    /// After each test.
    pub fn result(&mut self, r: &TestResult) {
        self.index += 1;
        let text = match self.format {
            Format::Human => self.human(r),
            Format::Tap => self.tap(r),
            Format::Json => json_line(r).to_string(),
        };
        out(&text);
    }

    /// After the last test.
    pub fn finish(&mut self, counts: Counts, not_run: usize) {
        let text = match self.format {
            Format::Human if not_run > 0 => format!("{not_run} not run\n{counts}"),
            Format::Human => counts.to_string(),
            Format::Tap => format!("# {counts}"),
            Format::Json => serde_json::json!({
                "summary": {
                    "passed": counts.passed,
                    "failed": counts.failed,
                    "skipped": counts.skipped,
                    "not_run": not_run,
                }
            })
            .to_string(),
        };
        out(&text);
    }

    fn human(&self, r: &TestResult) -> String {
        let secs = r.outcome.duration.as_secs_f64();
        let tries = if r.tries > 1 {
            format!(", try {}", r.tries)
        } else {
            String::new()
        };
        match &r.outcome.status {
            Status::Passed => format!("PASS {} ({secs:.1}s{tries})", r.test.name),
            Status::Skipped(reason) => format!("SKIP {}: {reason}", r.test.name),
            Status::Failed(f) => {
                let mut s = format!("FAIL {} ({secs:.1}s{tries})\n", r.test.name);
                s.push_str(&indent(&f.to_string(), "    "));
                s.push('\n');
                s.push_str(&self.details(r));
                s.trim_end().to_string()
            }
        }
    }

    /// The tails of output and logs, and the artifacts path.
    fn details(&self, r: &TestResult) -> String {
        let mut s = String::new();
        let rep = &r.outcome.report;
        if self.captured && !rep.output.is_empty() {
            let from = rep.output.len().saturating_sub(OUTPUT_TAIL_LINES);
            s.push_str(&format!(
                "    --- output (last {} lines) ---\n",
                rep.output.len() - from
            ));
            s.push_str(&indent(&rep.output[from..].join("\n"), "    "));
            s.push('\n');
        }
        for m in &rep.machines {
            if let Some(c) = &m.console_log {
                section(&mut s, &format!("{} console", m.name), c);
            }
            section(&mut s, &format!("{} QEMU output", m.name), &m.qemu_log);
        }
        for p in &rep.problems {
            s.push_str(&format!("    cleanup: {p}\n"));
        }
        if let Some(a) = &r.artifacts {
            s.push_str(&format!("    artifacts: {}\n", a.display()));
        }
        s
    }

    fn tap(&self, r: &TestResult) -> String {
        let n = self.index;
        let name = &r.test.name;
        match &r.outcome.status {
            Status::Passed => format!("ok {n} - {name}"),
            Status::Skipped(reason) => format!("ok {n} - {name} # SKIP {reason}"),
            Status::Failed(f) => {
                let mut s = format!("not ok {n} - {name}\n  ---\n");
                s.push_str(&format!("  kind: {}\n", f.kind));
                s.push_str(&format!("  at: {}\n", f.location()));
                s.push_str(&format!("  message: |\n{}\n", indent(&f.message, "    ")));
                if let Some(a) = &r.artifacts {
                    s.push_str(&format!("  artifacts: {}\n", a.display()));
                }
                s.push_str("  ...");
                s
            }
        }
    }
}

fn section(s: &mut String, title: &str, path: &Path) {
    let lines = tail_lines(path, LOG_TAIL_LINES);
    if lines.trim().is_empty() {
        return;
    }
    s.push_str(&format!("    --- {title} (last lines) ---\n"));
    s.push_str(&indent(&lines, "    "));
    s.push('\n');
}

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of a file (its last 16 KiB at most), with terminal
/// control characters removed.
pub fn tail_lines(path: &Path, n: usize) -> String {
    const MAX: u64 = 16 << 10;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX && f.seek(SeekFrom::Start(len - MAX)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text: String = String::from_utf8_lossy(&buf)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    crate::machine::last_lines(&text, n)
}

/// A result as one JSON object (`--format json`, and JUnit's source).
pub fn json_line(r: &TestResult) -> serde_json::Value {
    let (status, error) = match &r.outcome.status {
        Status::Passed => ("passed", serde_json::Value::Null),
        Status::Skipped(reason) => ("skipped", serde_json::json!({ "reason": reason })),
        Status::Failed(f) => (
            "failed",
            serde_json::json!({
                "kind": f.kind,
                "message": f.message,
                "file": f.file,
                "line": f.line,
                "column": f.column,
                "context": f.context,
            }),
        ),
    };
    serde_json::json!({
        "name": r.test.name,
        "status": status,
        "duration": r.outcome.duration.as_secs_f64(),
        "tries": r.tries,
        "error": error,
        "artifacts": r.artifacts.as_ref().map(|a| a.display().to_string()),
    })
}

/// Writes a JUnit XML report of `results`.
pub fn write_junit(path: &Path, results: &[TestResult]) -> std::io::Result<()> {
    let mut counts = Counts::default();
    let mut total = 0.0;
    for r in results {
        counts.add(&r.outcome.status);
        total += r.outcome.duration.as_secs_f64();
    }
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">\n",
        results.len(),
        counts.failed,
        counts.skipped
    ));
    x.push_str(&format!(
        "  <testsuite name=\"vmscript\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">\n",
        results.len(),
        counts.failed,
        counts.skipped
    ));
    for r in results {
        let name = xml_escape(&r.test.name);
        let secs = r.outcome.duration.as_secs_f64();
        x.push_str(&format!(
            "    <testcase classname=\"vmscript\" name=\"{name}\" time=\"{secs:.3}\""
        ));
        match &r.outcome.status {
            Status::Passed => x.push_str("/>\n"),
            Status::Skipped(reason) => x.push_str(&format!(
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                xml_escape(reason)
            )),
            Status::Failed(f) => {
                x.push_str(&format!(
                    ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n",
                    xml_escape(&f.kind),
                    xml_escape(f.message.lines().next().unwrap_or("")),
                    xml_escape(&f.to_string())
                ));
                if !r.outcome.report.output.is_empty() {
                    x.push_str(&format!(
                        "      <system-out>{}</system-out>\n",
                        xml_escape(&r.outcome.report.output.join("\n"))
                    ));
                }
                x.push_str("    </testcase>\n");
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    std::fs::write(path, x)
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .fold(String::with_capacity(s.len()), |mut o, c| {
            match c {
                '&' => o.push_str("&amp;"),
                '<' => o.push_str("&lt;"),
                '>' => o.push_str("&gt;"),
                '"' => o.push_str("&quot;"),
                '\'' => o.push_str("&apos;"),
                c => o.push(c),
            }
            o
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Failure, RunReport};
    use std::time::Duration;

    fn result(status: Status) -> TestResult {
        TestResult {
            test: Test {
                path: "t.rhai".into(),
                name: "t.rhai".into(),
            },
            outcome: Outcome {
                status,
                duration: Duration::from_millis(1234),
                report: RunReport {
                    output: vec!["hello".into()],
                    ..RunReport::default()
                },
            },
            tries: 1,
            artifacts: Some("/tmp/art".into()),
        }
    }

    #[test]
    fn the_summary_line_is_exact() {
        let c = Counts {
            passed: 3,
            failed: 1,
            skipped: 2,
        };
        assert_eq!(c.to_string(), "3 passed, 1 failed, 2 skipped");
    }

    #[test]
    fn human_lines_show_status_error_output_and_artifacts() {
        let rep = Reporter::new(Format::Human, true);
        assert_eq!(rep.human(&result(Status::Passed)), "PASS t.rhai (1.2s)");
        assert_eq!(
            rep.human(&result(Status::Skipped("no guest".into()))),
            "SKIP t.rhai: no guest"
        );
        let f = Failure::plain("t.rhai", "Timeout", "late");
        let text = rep.human(&result(Status::Failed(f)));
        assert!(
            text.starts_with("FAIL t.rhai (1.2s)\n    t.rhai: Timeout: late"),
            "{text}"
        );
        assert!(text.contains("    hello"), "{text}");
        assert!(text.ends_with("artifacts: /tmp/art"), "{text}");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j.xml");
        let f = Failure::plain("t.rhai", "AssertionFailed", "a < b & c");
        write_junit(&p, &[result(Status::Passed), result(Status::Failed(f))]).unwrap();
        let x = std::fs::read_to_string(p).unwrap();
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("a &lt; b &amp; c"), "{x}");
    }

    #[test]
    fn tails_drop_control_characters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        std::fs::write(&p, "a\nb\x1b[6n\nc\n").unwrap();
        assert_eq!(tail_lines(&p, 2), "b[6n\nc");
    }
}
