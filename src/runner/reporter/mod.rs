//! How results are shown, as they come and at the end: `human` lines (the
//! default), `tap` (TAP 14) or `json` lines on stdout, an optional JUnit
//! XML file, and on a terminal a live progress line on stderr.
//!
//! Every line is written by one thread (the executor's), one whole report
//! at a time, so the output of tests running at once never interleaves.
//! Start with [`Reporter`]; [`human`], [`tap`], [`json`] and [`junit`]
//! render one format each, [`progress`] draws the live line. Knows nothing
//! of how tests are run.

pub mod human;
pub mod json;
pub mod junit;
pub mod progress;
pub mod tap;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::script::Failure;

use super::results::{Attempt, TestResult, Verdict};
use super::Summary;

pub use progress::ProgressState;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// PASS/FAIL/SKIP/TIMEOUT/FLAKY lines and a summary.
    #[default]
    Human,
    /// Test Anything Protocol, version 14.
    Tap,
    /// One JSON object per test, then one with the summary.
    Json,
}

/// Prints results as they come; see the module documentation.
pub struct Reporter {
    format: Format,
    /// Whether output was captured (and so is shown under failures).
    captured: bool,
    progress: Option<progress::Progress>,
    /// Test points printed so far (TAP numbers them).
    reported: usize,
}

impl Reporter {
    /// A reporter for `format`; `live` draws the progress line on stderr
    /// (for the human format only).
    pub fn new(format: Format, captured: bool, live: bool) -> Reporter {
        Reporter {
            format,
            captured,
            progress: (live && format == Format::Human).then(progress::Progress::new),
            reported: 0,
        }
    }

    /// Before the first test, with the number of tests selected.
    pub fn start(&mut self, total: usize) {
        if self.format == Format::Tap {
            self.emit(&tap::header(total));
        }
    }

    /// A test's final result.
    pub fn result(&mut self, r: &TestResult) {
        self.reported += 1;
        let text = match self.format {
            Format::Human => human::result(r, self.captured),
            Format::Tap => tap::test_point(self.reported, r),
            Format::Json => json::result(r).to_string(),
        };
        self.emit(&text);
    }

    /// A message for the person at the terminal (stderr).
    pub fn note(&mut self, text: &str) {
        if let Some(p) = &mut self.progress {
            p.clear();
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "vmscript: {text}");
        let _ = err.flush();
        drop(err);
        if let Some(p) = &mut self.progress {
            p.redraw();
        }
    }

    /// Redraws the progress line, if there is one.
    pub fn tick(&mut self, state: &ProgressState) {
        if let Some(p) = &mut self.progress {
            p.draw(state);
        }
    }

    /// After the last result.
    pub fn finish(&mut self, summary: &Summary, results: &[TestResult]) {
        if let Some(p) = &mut self.progress {
            p.clear();
        }
        self.progress = None;
        let text = match self.format {
            Format::Human => human::summary(summary, results),
            Format::Tap => tap::footer(summary),
            Format::Json => json::summary(summary).to_string(),
        };
        self.emit(&text);
    }

    /// Writes whole lines to stdout under the progress line.
    fn emit(&mut self, text: &str) {
        if let Some(p) = &mut self.progress {
            p.clear();
        }
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{text}");
        let _ = o.flush();
        drop(o);
        if let Some(p) = &mut self.progress {
            p.redraw();
        }
    }
}

/// Lines of each log shown under a failure.
pub const LOG_TAIL_LINES: usize = 15;
/// Lines of captured output shown under a failure.
pub const OUTPUT_TAIL_LINES: usize = 30;

/// What a timed-out or interrupted script was waiting for, when the error
/// it saw names it (`event STOP`, `console text "login:"`).
pub fn waiting_for(f: &Failure) -> Option<String> {
    let what = f.value.as_ref()?.get("what")?.as_str()?;
    let what = what.strip_prefix("waiting for ").unwrap_or(what).trim();
    (!what.is_empty()).then(|| what.to_string())
}

/// The line of the script where `f` happened: `(number, text)`.
pub fn source_line(f: &Failure) -> Option<(usize, String)> {
    let n = f.line?;
    let text = std::fs::read_to_string(&f.file).ok()?;
    let line = text.lines().nth(n.checked_sub(1)?)?.trim();
    (!line.is_empty()).then(|| (n, line.to_string()))
}

/// The failure of a try as a person reads it: `FILE:LINE:COL: KIND:
/// message`; for a timeout or an interruption, what it was waiting for and
/// the line it was at; then where the error passed through.
pub fn failure_text(a: &Attempt) -> String {
    let Some(f) = a.failure() else {
        return String::new();
    };
    if !matches!(a.verdict, Verdict::TimedOut | Verdict::Interrupted) {
        return f.to_string();
    }
    let mut s = format!("{}: {}: {}", f.location(), f.kind, f.message);
    if let Some(w) = waiting_for(f) {
        s.push_str(&format!(", waiting for {w}"));
    }
    if let Some((n, line)) = source_line(f) {
        s.push_str(&format!("\n  {n} | {line}"));
    }
    for c in &f.context {
        // What the script saw as it was stopped can quote a whole console
        // tail, which the report shows below anyway.
        let c = match c.char_indices().nth(CONTEXT_CHARS) {
            Some((i, _)) => format!("{}…", &c[..i]),
            None => c.clone(),
        };
        s.push_str(&format!("\n  {c}"));
    }
    s
}

/// How much of each context line a timeout's report shows.
const CONTEXT_CHARS: usize = 160;

/// A section `--- title ---` with the last lines of a log, if it has any.
fn log_section(s: &mut String, title: &str, path: &Path) {
    let lines = tail_lines(path, LOG_TAIL_LINES);
    if lines.trim().is_empty() {
        return;
    }
    s.push_str(&format!("--- {title} (last lines) ---\n"));
    s.push_str(&lines);
    s.push('\n');
}

/// The evidence under a failed try: captured output, the tails of each
/// machine's console and QEMU output, cleanup problems, and where the
/// artifacts are (with their file names).
pub fn details(a: &Attempt, captured: bool) -> String {
    let mut s = String::new();
    let rep = &a.outcome.report;
    if !rep.steps.is_empty() {
        s.push_str("--- steps ---\n");
        for st in &rep.steps {
            s.push_str(&step_line(st));
            s.push('\n');
        }
    }
    if captured && !rep.output.is_empty() {
        let from = rep.output.len().saturating_sub(OUTPUT_TAIL_LINES);
        s.push_str(&format!(
            "--- output (last {} lines) ---\n",
            rep.output.len() - from
        ));
        s.push_str(&rep.output[from..].join("\n"));
        s.push('\n');
    }
    for m in &rep.machines {
        if let Some(c) = &m.console_log {
            log_section(&mut s, &format!("{} console", m.name), c);
        }
        log_section(&mut s, &format!("{} QEMU output", m.name), &m.qemu_log);
    }
    for p in &rep.problems {
        s.push_str(&format!("cleanup: {p}\n"));
    }
    if let Some(dir) = &a.artifacts {
        s.push_str(&format!("artifacts: {}\n", dir.display()));
        let files = list_files(dir);
        if !files.is_empty() {
            s.push_str(&format!("  {}\n", files.join(" ")));
        }
    }
    s
}

/// A step as one line: `failed  +1.200s  0.300s  boot > login: KIND: message`.
pub fn step_line(st: &crate::script::StepRecord) -> String {
    let mut line = format!(
        "{:<7} +{:.3}s {:.3}s  {}",
        st.status.as_str(),
        st.offset.as_secs_f64(),
        st.duration.as_secs_f64(),
        st.name
    );
    if let Some(e) = &st.error {
        line.push_str(": ");
        line.push_str(e.lines().next().unwrap_or(""));
    }
    line
}

/// The names of the files in `dir`, sorted.
fn list_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Prefixes every line of `text`.
pub fn indent(text: &str, prefix: &str) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runner::discover::Test;
    use crate::script::{Outcome, RunReport, Status};
    use std::time::Duration;

    /// A result whose tries ended with `verdicts`.
    pub fn result(name: &str, verdicts: &[Verdict]) -> TestResult {
        let attempts = verdicts
            .iter()
            .zip(1..)
            .map(|(v, number)| {
                let status = match v {
                    Verdict::Passed => Status::Passed,
                    Verdict::Skipped => Status::Skipped("no guest".into()),
                    Verdict::TimedOut => {
                        let mut f = Failure::plain(name, "Timeout", "the test timed out after 2s");
                        f.value = Some(serde_json::json!({"what": "event STOP"}));
                        Status::Failed(f)
                    }
                    _ => Status::Failed(Failure::plain(name, "AssertionFailed", "a < b & c")),
                };
                Attempt {
                    number,
                    verdict: *v,
                    outcome: Outcome {
                        status,
                        duration: Duration::from_millis(1234),
                        report: RunReport {
                            output: vec!["hello".into()],
                            ..RunReport::default()
                        },
                    },
                    artifacts: Some("/tmp/art".into()),
                }
            })
            .collect();
        TestResult::new(
            Test {
                path: name.into(),
                name: name.into(),
                ..Test::default()
            },
            attempts,
        )
    }

    #[test]
    fn tails_drop_control_characters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        std::fs::write(&p, "a\nb\x1b[6n\nc\n").unwrap();
        assert_eq!(tail_lines(&p, 2), "b[6n\nc");
    }

    #[test]
    fn timeouts_say_what_was_awaited_and_where() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, "let vm = machine();\n  vm.event_wait(\"STOP\");\n").unwrap();
        let mut r = result(&script.display().to_string(), &[Verdict::TimedOut]);
        let a = &mut r.attempts_mut()[0];
        if let Status::Failed(f) = &mut a.outcome.status {
            f.line = Some(2);
            f.column = Some(6);
        }
        let text = failure_text(r.last());
        assert!(
            text.ends_with(
                "t.rhai:2:6: Timeout: the test timed out after 2s, waiting for event STOP\n  2 | vm.event_wait(\"STOP\");"
            ),
            "{text}"
        );
    }
}
