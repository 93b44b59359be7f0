//! `--report FILE.html`: one self-contained HTML file for people, which a
//! CI job can keep as an artifact and open with no network: its CSS, its
//! script and its data are inline.
//!
//! The data is the JSON of `--format json` for each test, plus what the
//! kept artifacts hold: each machine's QMP transcript (the timeline's
//! lanes), the tail of its console, the script's log, and the source
//! lines around the error. The page renders a test's timeline only when
//! it is opened, so a run of hundreds of tests stays quick; each test's
//! transcripts are bounded ([`MAX_MESSAGES`] per machine, the first and
//! the last halves kept), and what was cut is said on the page.

use std::path::Path;

use serde_json::{json, Value};

use super::super::results::TestResult;
use super::super::Summary;
use super::{json::result, plain, tail_raw, without_guest_run_plumbing};

/// QMP messages kept per machine and test.
pub const MAX_MESSAGES: usize = 5000;
/// Characters of each QMP message kept.
const MAX_MESSAGE_CHARS: usize = 4000;
/// Lines of each console tail kept, from at most its last bytes.
const CONSOLE_LINES: usize = 200;
const CONSOLE_BYTES: u64 = 64 << 10;
/// Bytes of screenshots put inline per test; past it, later ones are
/// named but not shown.
const MAX_SCREENSHOT_BYTES: u64 = 4 << 20;
/// Lines of source shown above and below the error's line.
const SOURCE_CONTEXT: usize = 3;

const TEMPLATE: &str = include_str!("report.html");

/// The report as HTML.
pub fn render(summary: &Summary, results: &[TestResult]) -> String {
    let mut tests: Vec<Value> = results.iter().map(test).collect();
    tests.extend(
        summary
            .never_run
            .iter()
            .map(|t| json!({ "name": t.name, "status": "not run", "duration": 0.0, "tries": 0 })),
    );
    let data = json!({
        "summary": super::json::summary(summary)["summary"],
        "tests": tests,
    });
    // Inside <script>, `</` could end the element; JSON allows `<\/`.
    let data = data
        .to_string()
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--");
    TEMPLATE.replacen("/*DATA*/null", &data, 1)
}

/// Writes the report to `path`.
pub fn write(path: &Path, summary: &Summary, results: &[TestResult]) -> Result<(), String> {
    std::fs::write(path, render(summary, results)).map_err(|e| e.to_string())
}

/// One test: its JSON result, the source around its error, and what its
/// last try's artifacts hold.
fn test(r: &TestResult) -> Value {
    let mut v = result(r);
    let last = r.last();
    if let Some(f) = last.failure() {
        if let Some(src) = source(&f.file, f.line) {
            v["source"] = src;
        }
    }
    v["log"] = json!(last.outcome.report.output);
    let mut machines = Vec::new();
    let mut budget = MAX_SCREENSHOT_BYTES;
    if let Some(dir) = &last.artifacts {
        for m in &last.outcome.report.machines {
            let mut lane = machine(dir, &m.name, m.console_log.as_deref());
            lane["screenshots"] = screenshots(dir, &m.name, &mut budget);
            machines.push(lane);
        }
    }
    v["machines"] = json!(machines);
    v
}

/// The lines of `file` around `line`: `{first, lines, line}`.
fn source(file: &str, line: Option<usize>) -> Option<Value> {
    let line = line?;
    let text = std::fs::read_to_string(file).ok()?;
    let first = line.saturating_sub(SOURCE_CONTEXT).max(1);
    let lines: Vec<&str> = text
        .lines()
        .skip(first - 1)
        .take(line + SOURCE_CONTEXT + 1 - first)
        .collect();
    (!lines.is_empty()).then(|| json!({ "first": first, "line": line, "lines": lines }))
}

/// The screenshots of machine `name` in `dir` (`NAME-*.png`, by name), as
/// `{name, src}` with the PNG inline as a data URL while `budget` lasts,
/// else `{name, src: null}`.
fn screenshots(dir: &Path, name: &str, budget: &mut u64) -> Value {
    use base64::Engine;
    let prefix = format!("{name}-");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "png")
                && p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    files.sort();
    let shots: Vec<Value> = files
        .iter()
        .map(|p| {
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            let size = p.metadata().map_or(u64::MAX, |m| m.len());
            let src = (size <= *budget)
                .then(|| std::fs::read(p).ok())
                .flatten()
                .map(|png| {
                    *budget -= size;
                    format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    )
                });
            json!({ "name": file, "src": src })
        })
        .collect();
    json!(shots)
}

/// A machine's lane: its QMP transcript (bounded) and its console tail.
fn machine(dir: &Path, name: &str, console: Option<&Path>) -> Value {
    let (qmp, cut) = transcript(&dir.join(format!("{name}.qmp.jsonl")));
    let console = console
        .map(|c| {
            // The end of the log only: it can be as long as the test.
            let text = plain(&without_guest_run_plumbing(&tail_raw(c, CONSOLE_BYTES)));
            crate::machine::last_lines(&text, CONSOLE_LINES)
        })
        .unwrap_or_default();
    let (lines, lines_cut) = console_lines(&dir.join(format!("{name}.console.jsonl")));
    json!({
        "name": name,
        "qmp": qmp,
        "cut": cut,
        "console": console,
        "lines": lines,
        "lines_cut": lines_cut,
    })
}

/// The console's timed lines as `[t, text]`, without control sequences
/// and with `guest::run`'s tagged lines as their text (its marker-only
/// lines go), bounded as [`transcript`] bounds QMP messages.
fn console_lines(path: &Path) -> (Vec<Value>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| {
            let line = without_guest_run_plumbing(&format!("{}\n", m["line"].as_str()?));
            let line = line.strip_suffix('\n')?;
            Some(json!([m["t"], plain(line)]))
        })
        .collect();
    bounded(all)
}

/// The messages of a QMP transcript as `[t, dir, text]`, at most
/// [`MAX_MESSAGES`] (the first and last halves), and how many were cut.
fn transcript(path: &Path) -> (Vec<Value>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|m| {
            let mut msg = m["msg"].to_string();
            if let Some((i, _)) = msg.char_indices().nth(MAX_MESSAGE_CHARS) {
                msg.truncate(i);
                msg.push('…');
            }
            json!([m["t"], m["dir"], msg])
        })
        .collect();
    bounded(all)
}

/// At most [`MAX_MESSAGES`] of `all`: the first and last halves, and how
/// many were cut.
fn bounded(all: Vec<Value>) -> (Vec<Value>, usize) {
    if all.len() <= MAX_MESSAGES {
        return (all, 0);
    }
    let cut = all.len() - MAX_MESSAGES;
    let half = MAX_MESSAGES / 2;
    let mut kept = all[..half].to_vec();
    kept.extend_from_slice(&all[all.len() - half..]);
    (kept, cut)
}
