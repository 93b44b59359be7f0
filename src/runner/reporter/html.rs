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
use super::{json::result, plain, without_guest_run_plumbing};
use crate::machine::tail::last_bytes_of_file;

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
/// Bytes of lanes (transcripts, consoles, screenshots) a report holds in
/// all; past it, tests get no lanes, failed tests' first.
const MAX_LANES_BYTES: usize = 64 << 20;
/// Lines of source shown above and below the error's line.
const SOURCE_CONTEXT: usize = 3;

const TEMPLATE: &str = include_str!("report.html");

/// The file every run whose artifacts stay leaves in their folder: what
/// the report needs that the artifacts do not hold, so that
/// `vmscript report DIR` can make the report after the fact.
pub const RESULTS_FILE: &str = "results.json";

/// The report as HTML.
pub fn render(summary: &Summary, results: &[TestResult]) -> String {
    let mut data = data(summary, results);
    add_lanes(&mut data, None, MAX_LANES_BYTES);
    page(&data)
}

/// Writes the report to `path`.
pub fn write(path: &Path, summary: &Summary, results: &[TestResult]) -> Result<(), String> {
    std::fs::write(path, render(summary, results)).map_err(|e| e.to_string())
}

/// Writes [`RESULTS_FILE`] into the artifacts folder `root`, atomically.
pub fn save_results(root: &Path, summary: &Summary, results: &[TestResult]) -> Result<(), String> {
    let mut file = tempfile::NamedTempFile::new_in(root).map_err(|e| e.to_string())?;
    serde_json::to_writer(&mut file, &data(summary, results)).map_err(|e| e.to_string())?;
    file.persist(root.join(RESULTS_FILE))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The report of the run whose artifacts are in `dir` (its
/// [`RESULTS_FILE`] and the test folders beside it), wherever the folder
/// was moved since.
pub fn render_saved(dir: &Path) -> Result<String, String> {
    let path = dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} has no {RESULTS_FILE}: a run writes it into its artifacts folder when that folder stays (--artifacts DIR, or a failed test)",
                dir.display()
            )
        } else {
            format!("reading {}: {e}", path.display())
        }
    })?;
    let mut data: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a run's results: {e}", path.display()))?;
    if !data["tests"].is_array() || !data["summary"].is_object() {
        return Err(format!(
            "{} is not a run's results: it has no tests and summary",
            path.display()
        ));
    }
    add_lanes(&mut data, Some(dir), MAX_LANES_BYTES);
    Ok(page(&data))
}

/// The run's data without the lanes: the summary and, for each test, its
/// JSON result, the source around its error, its log and its machines.
fn data(summary: &Summary, results: &[TestResult]) -> Value {
    let mut tests: Vec<Value> = results.iter().map(test).collect();
    tests.extend(
        summary
            .never_run
            .iter()
            .map(|t| json!({ "name": t.name, "status": "not run", "duration": 0.0, "tries": 0 })),
    );
    json!({
        "summary": super::json::summary(summary)["summary"],
        "tests": tests,
    })
}

fn page(data: &Value) -> String {
    // Inside <script>, `</` could end the element; JSON allows `<\/`.
    let data = data
        .to_string()
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--");
    TEMPLATE.replacen("/*DATA*/null", &data, 1)
}

/// One test: its JSON result, the source around its error, its log and
/// the names of its machines with their console logs.
fn test(r: &TestResult) -> Value {
    let mut v = result(r);
    let last = r.last();
    if let Some(f) = last.failure() {
        if let Some(src) = source(&f.file, f.line) {
            v["source"] = src;
        }
    }
    v["log"] = json!(last.outcome.report.output);
    if last.artifacts.is_some() {
        let machines: Vec<Value> = last
            .outcome
            .report
            .machines
            .iter()
            .map(|m| {
                let console = m.console_log.as_ref().and_then(|c| c.file_name());
                json!({ "name": m.name, "console_log": console.map(|c| c.to_string_lossy()) })
            })
            .collect();
        v["machines"] = json!(machines);
    }
    v
}

/// Replaces each test's machine names with their lanes, read from its
/// last try's artifacts: in the folder the results name, or with `moved`
/// in `moved` under the same folder name. Failed tests come first; once
/// the lanes take `budget` bytes, the tests left get none, and say so.
fn add_lanes(data: &mut Value, moved: Option<&Path>, budget: usize) {
    let Some(tests) = data["tests"].as_array_mut() else {
        return;
    };
    let mut order: Vec<usize> = (0..tests.len()).collect();
    order.sort_by_key(|&i| {
        !matches!(
            tests[i]["status"].as_str(),
            Some("failed" | "timeout" | "interrupted")
        )
    });
    let mut left = budget;
    for i in order {
        let v = &mut tests[i];
        let lanes = lanes(v, moved);
        let size = lanes.iter().map(|l| l.to_string().len()).sum::<usize>();
        if size > left {
            v["machines"] = json!([]);
            v["lanes_omitted"] = json!(true);
            left = 0;
        } else {
            left -= size;
            v["machines"] = json!(lanes);
        }
    }
}

/// The lanes of test `v`'s machines.
fn lanes(v: &Value, moved: Option<&Path>) -> Vec<Value> {
    let Some(dir) = v["artifacts"].as_str().map(std::path::PathBuf::from) else {
        return Vec::new();
    };
    let dir = match (moved, dir.file_name()) {
        (Some(root), Some(name)) => root.join(name),
        _ => dir,
    };
    let mut budget = MAX_SCREENSHOT_BYTES;
    v["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m["name"].as_str()?;
            let console = m["console_log"].as_str().map(|c| dir.join(c));
            let mut lane = machine(&dir, name, console.as_deref());
            lane["screenshots"] = screenshots(&dir, name, &mut budget);
            Some(lane)
        })
        .collect()
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
            let text = plain(&without_guest_run_plumbing(&last_bytes_of_file(
                c,
                CONSOLE_BYTES,
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_machine_with_a_hundred_thousand_messages_keeps_its_first_and_last_and_says_what_was_cut() {
        let d = tempfile::tempdir().unwrap();
        let mut qmp =
            std::io::BufWriter::new(std::fs::File::create(d.path().join("vm0.qmp.jsonl")).unwrap());
        let mut con = std::io::BufWriter::new(
            std::fs::File::create(d.path().join("vm0.console.jsonl")).unwrap(),
        );
        for i in 0..100_000 {
            let t = f64::from(i) / 1000.0;
            writeln!(
                qmp,
                r#"{{"t":{t},"dir":"sent","msg":{{"execute":"query-status","id":{i}}}}}"#
            )
            .unwrap();
            writeln!(con, r#"{{"t":{t},"line":"line {i}"}}"#).unwrap();
        }
        drop((qmp, con));
        let lane = machine(d.path(), "vm0", None);
        let qmp = lane["qmp"].as_array().unwrap();
        assert_eq!(qmp.len(), MAX_MESSAGES);
        assert_eq!(lane["cut"], 100_000 - MAX_MESSAGES);
        assert_eq!(qmp[0][2], r#"{"execute":"query-status","id":0}"#);
        assert_eq!(
            qmp[MAX_MESSAGES - 1][2],
            r#"{"execute":"query-status","id":99999}"#
        );
        let lines = lane["lines"].as_array().unwrap();
        assert_eq!(lines.len(), MAX_MESSAGES);
        assert_eq!(lane["lines_cut"], 100_000 - MAX_MESSAGES);
        assert_eq!(lines[MAX_MESSAGES - 1][1], "line 99999");
        // What a page holds of it stays in the low megabytes.
        let size = page(&json!({ "summary": {}, "tests": [{ "machines": [lane] }] })).len();
        assert!(size < 2 << 20, "{size} bytes");
    }

    #[test]
    fn past_the_reports_budget_tests_lose_their_lanes_passing_ones_first() {
        let d = tempfile::tempdir().unwrap();
        let mut tests = Vec::new();
        for (name, status) in [("a", "passed"), ("b", "failed"), ("c", "passed")] {
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let line = format!(
                "{{\"t\":0.1,\"dir\":\"sent\",\"msg\":\"{}\"}}\n",
                "x".repeat(1000)
            );
            std::fs::write(dir.join("vm0.qmp.jsonl"), line.repeat(10)).unwrap();
            tests.push(json!({
                "name": name,
                "status": status,
                "artifacts": dir.display().to_string(),
                "machines": [{ "name": "vm0", "console_log": null }],
            }));
        }
        let mut data = json!({ "summary": {}, "tests": tests });
        let one = lanes(&data["tests"][0], None)[0].to_string().len();
        add_lanes(&mut data, None, 2 * one + one / 2);
        let kept = |i: usize| data["tests"][i]["machines"].as_array().unwrap().len();
        assert_eq!((kept(0), kept(1), kept(2)), (1, 1, 0));
        assert_eq!(data["tests"][2]["lanes_omitted"], true);
        assert_eq!(data["tests"][1]["lanes_omitted"], Value::Null);
        add_lanes(&mut data, None, one / 2);
        assert_eq!(
            data["tests"][1]["lanes_omitted"], true,
            "the failed test goes last"
        );
    }

    #[test]
    fn overlong_messages_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let long = "x".repeat(10_000);
        std::fs::write(
            d.path().join("vm0.qmp.jsonl"),
            format!("{{\"t\":0.5,\"dir\":\"received\",\"msg\":{{\"return\":\"{long}\"}}}}\n"),
        )
        .unwrap();
        let lane = machine(d.path(), "vm0", None);
        let msg = lane["qmp"][0][2].as_str().unwrap();
        assert_eq!(msg.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(msg.ends_with('…'));
    }
}
