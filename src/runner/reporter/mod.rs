//! How results are shown, as they come and at the end: `human` lines (the
//! default), `tap` (TAP 14) or `json` lines on stdout, an optional JUnit
//! XML file, and on a terminal a live progress line on stderr.
//!
//! Every line is written by one thread (the executor's), one whole report
//! at a time, so the output of tests running at once never interleaves.
//! Start with [`Reporter`]; [`human`], [`tap`], [`json`] and [`junit`]
//! render one format each, [`progress`] draws the live line. Knows nothing
//! of how tests are run.
//!
//! What a test printed, threw or logged can hold terminal control
//! sequences; [`plain`] removes them before any of it reaches a report, so
//! that a test cannot move the cursor, retitle the terminal or hide lines.
//! The human format is coloured where stdout is a terminal (see
//! [`colour_wanted`]); a failure to write stdout is kept and reported at
//! the end ([`Reporter::output_error`]), as the report was then lost.

pub mod html;
pub mod human;
pub mod json;
pub mod junit;
pub mod progress;
pub mod snippet;
pub mod tap;

use std::io::Write;
use std::path::Path;

use crate::machine::tail::last_bytes_of_file;
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
    /// Whether the human format's colours reach stdout.
    colour: bool,
    /// The first failure to write stdout.
    output_error: Option<std::io::Error>,
}

/// Whether stdout gets colours: a terminal, or `CLICOLOR_FORCE` set, and
/// neither `NO_COLOR` nor `CLICOLOR=0` (<https://no-color.org>,
/// <https://bixense.com/clicolors/>).
pub fn colour_wanted() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
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
            colour: colour_wanted(),
            output_error: None,
        }
    }

    /// The first error writing the report to stdout, if there was one:
    /// the report is then incomplete.
    pub fn output_error(&self) -> Option<&std::io::Error> {
        self.output_error.as_ref()
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

    /// Writes whole lines to stdout under the progress line; the human
    /// format's styles become colours or go.
    fn emit(&mut self, text: &str) {
        if let Some(p) = &mut self.progress {
            p.clear();
        }
        let o = std::io::stdout().lock();
        let written = if self.format == Format::Human {
            let choice = if self.colour {
                anstream::ColorChoice::AlwaysAnsi
            } else {
                anstream::ColorChoice::Never
            };
            let mut o = anstream::AutoStream::new(o, choice);
            writeln!(o, "{text}").and_then(|()| o.flush())
        } else {
            let mut o = o;
            writeln!(o, "{text}").and_then(|()| o.flush())
        };
        if let (Err(e), None) = (written, &self.output_error) {
            self.output_error = Some(e);
        }
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
    let Some((head, context)) = failure_parts(a) else {
        return String::new();
    };
    let mut s = head;
    let stopped = matches!(a.verdict, Verdict::TimedOut | Verdict::Interrupted);
    if let (true, Some((n, line))) = (stopped, a.failure().and_then(source_line)) {
        s.push_str(&format!("\n  {n} | {line}"));
    }
    for c in context {
        s.push_str(&format!("\n  {c}"));
    }
    s
}

/// A failure in two parts: `FILE:LINE:COL: KIND: message` (with what a
/// stopped script was waiting for), and the lines of where the error
/// passed through.
pub fn failure_parts(a: &Attempt) -> Option<(String, Vec<String>)> {
    let f = a.failure()?;
    let mut head = format!("{}: {}: {}", f.location(), f.kind, f.message);
    if !matches!(a.verdict, Verdict::TimedOut | Verdict::Interrupted) {
        return Some((head, f.context.clone()));
    }
    if let Some(w) = waiting_for(f) {
        head.push_str(&format!(", waiting for {w}"));
    }
    let context = f
        .context
        .iter()
        // What the script saw as it was stopped can quote a whole console
        // tail, which the report shows below anyway.
        .map(|c| match c.char_indices().nth(CONTEXT_CHARS) {
            Some((i, _)) => format!("{}…", &c[..i]),
            None => c.clone(),
        })
        .collect();
    Some((head, context))
}

/// How much of each context line a timeout's report shows.
const CONTEXT_CHARS: usize = 160;

/// A section `--- title ---` with the last lines of a log, if it has any.
fn log_section(s: &mut String, title: &str, lines: String) {
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
            let text = plain(&without_guest_run_plumbing(&last_bytes_of_file(
                c, TAIL_BYTES,
            )));
            let lines = crate::machine::last_lines(&text, LOG_TAIL_LINES);
            log_section(&mut s, &format!("{} console", m.name), lines);
        }
        let lines = tail_lines(&m.qemu_log, LOG_TAIL_LINES);
        log_section(&mut s, &format!("{} QEMU output", m.name), lines);
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

/// `text` without terminal control sequences (CSI `ESC [ … final`, OSC
/// `ESC ] … BEL` or `ESC ] … ESC \`, two-character `ESC x`) and without
/// other control characters but newline and tab. A newline ends any
/// sequence, so that an unfinished one hides one line at most.
pub fn plain(text: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Text,
        Escape,
        Csi,
        /// An OSC, DCS or similar string, up to BEL or ST.
        Str,
        StrEscape,
    }
    let mut out = String::with_capacity(text.len());
    let mut state = State::Text;
    for c in text.chars() {
        if c == '\n' {
            out.push(c);
            state = State::Text;
            continue;
        }
        state = match state {
            State::Text => match c {
                '\x1b' => State::Escape,
                '\u{9b}' => State::Csi,
                '\u{9d}' | '\u{90}' => State::Str,
                '\t' => {
                    out.push(c);
                    State::Text
                }
                c if c.is_control() => State::Text,
                c => {
                    out.push(c);
                    State::Text
                }
            },
            State::Escape => match c {
                '[' => State::Csi,
                ']' | 'P' | 'X' | '^' | '_' => State::Str,
                // An intermediate byte: the sequence goes on (ESC ( B).
                ' '..='/' => State::Escape,
                _ => State::Text,
            },
            State::Csi => match c {
                '\u{40}'..='\u{7e}' => State::Text,
                '\u{20}'..='\u{3f}' => State::Csi,
                // Not a CSI after all: drop what was read.
                _ => State::Text,
            },
            State::Str => match c {
                '\x07' | '\u{9c}' => State::Text,
                '\x1b' => State::StrEscape,
                _ => State::Str,
            },
            State::StrEscape => match c {
                '\\' => State::Text,
                '\x1b' => State::StrEscape,
                _ => State::Str,
            },
        };
    }
    out
}

/// The last `n` lines of a file (its last 16 KiB at most), with terminal
/// control sequences removed.
pub fn tail_lines(path: &Path, n: usize) -> String {
    crate::machine::last_lines(&plain(&last_bytes_of_file(path, TAIL_BYTES)), n)
}

/// Bytes of a log read for the tail under a failure.
const TAIL_BYTES: u64 = 16 << 10;

/// Console text as the guest's user would have seen it: the stdlib's
/// `guest::run` (stdlib/guest.rhai) types a long command that wraps the
/// user's between markers and reads the output back tagged with them;
/// here the echo of that command becomes the user's command, the tagged
/// lines their text, and the marker-only lines go. Anything else is left
/// as it is. `text` is the console's raw text (before [`plain`]), where a
/// line the terminal wrapped ends with `\r\r\n` and any other with `\r\n`.
pub fn without_guest_run_plumbing(text: &str) -> String {
    use regex::{Captures, Regex};
    use std::sync::LazyLock;
    static COMMAND: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)^M=vms\d+; mkdir -p .*? sh -c '(.*)' </dev/null >")
            .expect("a valid pattern")
    });
    static LINE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^(?:\r?\n)?vms\d+(?:\|(.*?)|-rc \d+|-len \d+ \d+)\r*\n")
            .expect("a valid pattern")
    });
    // The echo of the command ends with `wc -l)"`; the terminal may have
    // broken it into lines anywhere, so it is looked for over a bounded
    // span, past which the text is left as it is.
    const ECHO_END: &str = "wc -l)\"";
    const MAX_ECHO: usize = 4096;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("M=vms") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let window = &from[..floor_char_boundary(from, MAX_ECHO)];
        let Some(end) = window.find(ECHO_END) else {
            out.push_str("M=vms");
            rest = &from[5..];
            continue;
        };
        let mut after = &from[end + ECHO_END.len()..];
        after = after.trim_start_matches('\r');
        after = after.strip_prefix('\n').unwrap_or(after);
        let echo: String = from[..end]
            .chars()
            .filter(|&c| c != '\r' && c != '\n')
            .collect();
        if let Some(cmd) = COMMAND.captures(&echo) {
            out.push_str(&cmd[1].replace(r"'\''", "'"));
            out.push_str("\r\n");
        }
        // Else the output read again after noise: nothing the user typed.
        rest = after;
    }
    out.push_str(rest);
    LINE.replace_all(&out, |c: &Captures| match c.get(1) {
        Some(line) => format!("{}\r\n", line.as_str()),
        None => String::new(),
    })
    .into_owned()
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
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
                    started_at: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
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
        assert_eq!(tail_lines(&p, 2), "b\nc");
    }

    #[test]
    fn console_tails_show_guest_run_as_the_user_typed_it() {
        // A real console of the test guest: guest::run of a command that
        // prints a coloured word, then of `exit 3`, both echoed wrapped.
        let raw = include_str!("../../../tests/fixtures/guest-run-console.log");
        assert!(raw.contains("\r\r\n"), "the fixture has wrapped lines");
        let text = plain(&without_guest_run_plumbing(raw));
        assert!(!text.contains("vms"), "{text}");
        assert!(
            text.ends_with(
                "/ # echo hello; printf '\\033[31mred\\033[0m\\n'\nhello\nred\n/ # exit 3\n/ # "
            ),
            "{text}"
        );
        // The boot banner and anything that is not plumbing stay.
        assert!(text.starts_with("BusyBox v1.35.0"), "{text}");
        let other = "vmsX|not a marker\r\nM=vms1 is not a command\r\n";
        assert_eq!(without_guest_run_plumbing(other), other);
        // Typed ahead before the shell runs, the echo is the terminal's,
        // broken into lines elsewhere.
        let early = "READYM=vms95; mkdir -p ${TMPDIR:-/tmp}/.vmscript; rm -f ${TMPDIR:-/tmp}/.vmscript/vms*; \
                     sh -c 'echo hi' </dev/null >${TMPDIR:-/tmp}/.vmscript/vms95 2>&1; echo \"$M-rc $?\";\r\n \
                     sed \"s/^/$M|/\" x; echo; echo \"$M-len $(wc -c <x) $(tail -c 1 x | wc -l)\"\r\n\
                     vms95-rc 0\r\nvms95|hi\r\n\r\nvms95-len 3 1\r\n/ # ";
        assert_eq!(
            without_guest_run_plumbing(early),
            "READYecho hi\r\nhi\r\n/ # "
        );
    }

    #[test]
    fn plain_text_keeps_no_control_sequence() {
        assert_eq!(plain("a\x1b[31mred\x1b[0m\tb\n"), "ared\tb\n");
        assert_eq!(plain("x\x1b]0;title\x07y\x1b]8;;u\x1b\\z"), "xyz");
        assert_eq!(plain("cr\rbell\x07 \x1b(Bdone\x1b"), "crbell done");
        assert_eq!(plain("\u{9b}2Jclear é"), "clear é");
        // An unfinished sequence hides the rest of its line, no more.
        assert_eq!(plain("a\x1b]0;never ends\nnext\n"), "a\nnext\n");
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
