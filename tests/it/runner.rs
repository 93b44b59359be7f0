//! `vmscript run` at scale, through the binary: parallel jobs, timeouts,
//! retries and flaky tests, fail-fast, skips, partitions, exit codes, the
//! TAP, JSON and JUnit reports (each read back by a parser), artifacts,
//! the progress line on a terminal, and Ctrl-C/SIGTERM with machines
//! running.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::{is_qemu_process, sockets_below, stderr, stdout, World, VMSCRIPT};

/// The JSON lines of `--format json`: the tests, then the summary.
fn json_lines(o: &Output) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut v: Vec<serde_json::Value> = stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let summary = v.pop().unwrap();
    (v, summary["summary"].clone())
}

/// The most tests that ran at once, from the start and duration of each
/// in the JSON results (a test's own clock, not the load of the machine).
fn most_at_once(tests: &[serde_json::Value]) -> usize {
    let spans: Vec<(f64, f64)> = tests
        .iter()
        .map(|t| {
            let start = t["start"].as_f64().unwrap();
            (start, start + t["duration"].as_f64().unwrap())
        })
        .collect();
    // At the start of each test, those begun and not yet ended (a 50 ms
    // margin for the rounding of the two clocks).
    spans
        .iter()
        .map(|&(at, _)| {
            spans
                .iter()
                .filter(|&&(s, e)| s <= at + 0.05 && at < e - 0.05)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn four_jobs_run_eight_sleeping_tests_four_at_a_time() {
    let w = World::new();
    for i in 0..8 {
        w.script(&format!("s/t{i}.rhai"), "sleep(2);\n");
    }
    let time = |jobs: &str| {
        let start = Instant::now();
        let o = w.run(&["run", "-j", jobs, "--format", "json", "s"]);
        let took = start.elapsed();
        assert!(o.status.success(), "{}", stdout(&o));
        let (tests, summary) = json_lines(&o);
        assert_eq!(summary["passed"], 8, "{summary}");
        (took, most_at_once(&tests))
    };
    let (one, one_at_once) = time("1");
    let (four, four_at_once) = time("4");
    eprintln!("-j 1: {one:?}, -j 4: {four:?}");
    assert!(one >= Duration::from_secs(16), "{one:?}");
    assert_eq!(one_at_once, 1, "-j 1 ran tests side by side");
    assert_eq!(four_at_once, 4, "-j 4 ran {four_at_once} tests at once");
    // Four at a time take two rounds of 2 s; one at a time, 16 s.
    assert!(four < Duration::from_secs(14), "{four:?}");
}

const TWO_MACHINES: &str = r#"
let a = machine();
a.add_args("-M", "none");
a.launch();
let b = machine();
b.add_args("-M", "none");
b.launch();
log(`status ${a.command("query-status").status}`);
assert_eq(b.command("query-status").status, "running");
sleep(1);
"#;

#[test]
fn tests_with_several_machines_run_at_once_and_keep_their_artifacts_apart() {
    let w = World::new();
    for i in 0..4 {
        w.script(&format!("m/vm{i}.rhai"), TWO_MACHINES);
    }
    let o = w.run(&[
        "run",
        "-j",
        "4",
        "--keep-artifacts",
        "--format",
        "json",
        "m",
    ]);
    let (tests, summary) = json_lines(&o);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(summary["passed"], 4);
    let mut dirs = BTreeSet::new();
    for t in &tests {
        let dir = PathBuf::from(t["artifacts"].as_str().unwrap());
        assert!(dirs.insert(dir.clone()), "shared artifacts folder {dir:?}");
        for f in ["vm0.log", "vm1.log", "vm0.qmp.jsonl", "vm1.qmp.jsonl"] {
            assert!(dir.join(f).is_file(), "{f} missing in {dir:?}");
        }
        let log = std::fs::read_to_string(dir.join("script.log")).unwrap();
        assert!(log.contains("s] status running"), "{log}");
        // The QMP transcript: every command, reply and event, timestamped.
        let qmp = std::fs::read_to_string(dir.join("vm0.qmp.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = qmp
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.iter().all(|l| l["t"].is_f64()));
        assert!(lines
            .iter()
            .any(|l| l["dir"] == "sent" && l["msg"]["execute"] == "query-status"));
        assert!(lines
            .iter()
            .any(|l| l["dir"] == "received" && l["msg"]["return"]["status"] == "running"));
    }
    // Kept artifacts are all that is left.
    let left = w.tmp_entries();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("vmscript-artifacts-"), "{left:?}");
}

#[test]
fn a_timeout_kills_the_machines_and_says_what_the_test_was_waiting_for() {
    let w = World::new();
    w.script(
        "u.rhai",
        &format!(
            "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nwrite_file(\"{}/pid\", `${{vm.get_pid()}}`);\nvm.event_wait(\"NEVER\", 600);\n",
            w.path().display()
        ),
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "2", "-j", "2", "u.rhai"]);
    assert!(start.elapsed() < Duration::from_secs(15));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.starts_with("TIMEOUT u.rhai (2."), "{out}");
    assert!(
        out.contains("u.rhai:5:4: Timeout: the test timed out after 2s, waiting for event NEVER\n"),
        "{out}"
    );
    assert!(
        out.contains("\n    5 | vm.event_wait(\"NEVER\", 600);\n      |    ^^^^^^^^^^ Timeout\n"),
        "{out}"
    );
    assert!(
        out.contains("    1 timed out\n0 passed, 1 failed, 0 skipped\n"),
        "{out}"
    );
    let pid: i32 = std::fs::read_to_string(w.path().join("pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!is_qemu_process(pid), "QEMU {pid} outlived its test");
    // A timed-out test keeps its artifacts, and nothing else is left.
    let left = w.tmp_entries();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("vmscript-artifacts-"));
    assert!(sockets_below(&w.tmp()).is_empty());

    let o = w.run(&["run", "--timeout", "2", "--format", "json", "u.rhai"]);
    let (tests, summary) = json_lines(&o);
    assert_eq!(tests[0]["status"], "timeout");
    assert_eq!(tests[0]["error"]["waiting_for"], "event NEVER");
    assert_eq!(summary["timed_out"], 1);
    assert_eq!(summary["failed"], 1);
}

/// Fails on its first try, passes on the next: it leaves a mark in `dir`.
const FLAKY: &str = r#"
let mark = `${param("dir")}/flaky-mark`;
if !file_exists(mark) {
    write_file(mark, "tried");
    fail("first try fails");
}
"#;

#[test]
fn retries_make_a_flaky_test_pass_and_say_so() {
    let w = World::new();
    w.script("f/flaky.rhai", FLAKY);
    w.script("f/ok.rhai", "let x = 1;\n");
    let dir = format!("dir={}", w.path().display());
    let o = w.run(&["run", "--retries", "2", "f", "--", &dir]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("FLAKY f/flaky.rhai (") && out.contains(", passed on try 2)\n"),
        "{out}"
    );
    assert!(
        out.contains("    try 1 failed (") && out.contains("AssertionFailed: first try fails"),
        "{out}"
    );
    assert!(
        out.ends_with("    1 flaky\n2 passed, 0 failed, 0 skipped\n"),
        "{out}"
    );
    // Without retries it fails (the mark is gone again).
    std::fs::remove_file(w.path().join("flaky-mark")).unwrap();
    let o = w.run(&["run", "f/flaky.rhai", "--", &dir]);
    assert_eq!(o.status.code(), Some(1));
    // A test that always fails is tried 1 + retries times.
    w.script("g/bad.rhai", "fail(\"always\");\n");
    let o = w.run(&["run", "--retries", "2", "--format", "json", "g"]);
    assert_eq!(o.status.code(), Some(1));
    let (tests, _) = json_lines(&o);
    assert_eq!(tests[0]["tries"], 3);
    assert_eq!(tests[0]["status"], "failed");
    assert_eq!(tests[0]["flaky"], false);
}

#[test]
fn fail_fast_starts_nothing_after_a_failure_and_lets_running_tests_finish() {
    let w = World::new();
    w.script("t/a.rhai", "fail(\"a fails\");\n");
    w.script("t/b.rhai", "sleep(1);\n");
    for c in ["c", "d", "e"] {
        w.script(&format!("t/{c}.rhai"), "let x = 1;\n");
    }
    let o = w.run(&["run", "-j", "2", "--fail-fast", "t"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL t/a.rhai"), "{out}");
    assert!(out.contains("PASS t/b.rhai"), "{out}");
    assert!(
        out.ends_with(
            "    Stopped after a failure (--fail-fast)\n3 not run\n1 passed, 1 failed, 0 skipped\n"
        ),
        "{out}"
    );
}

#[test]
fn exit_codes_are_0_when_nothing_failed_1_on_a_failure_2_on_a_usage_error() {
    let w = World::new();
    w.script("ok/pass.rhai", "let x = 1;\n");
    w.script("ok/skip.rhai", "skip(\"not today\");\n");
    w.script("bad/fail.rhai", "assert_eq(1, 2);\n");
    let o = w.run(&["run", "ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("SKIP ok/skip.rhai: not today\n"));
    assert!(stdout(&o).ends_with("\n1 passed, 0 failed, 1 skipped\n"));
    assert_eq!(w.run(&["run", "."]).status.code(), Some(1));
    for bad in [
        &["run", "--partition", "count:4/3", "."][..],
        &["run", "--partition", "slice:1/2", "."],
        &["run", "-j", "0", "."],
        &["run", "nonexistent"],
        &["run", "--retries", "x", "."],
    ] {
        let o = w.run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

/// The names a run of `--partition spec` ran.
fn partition(w: &World, spec: &str) -> BTreeSet<String> {
    let o = w.run(&["run", "--format", "json", "--partition", spec, "p"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (tests, _) = json_lines(&o);
    tests
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn partitions_are_disjoint_and_together_the_whole_suite() {
    let w = World::new();
    let mut all = BTreeSet::new();
    for i in 0..11 {
        w.script(&format!("p/t{i:02}.rhai"), "let x = 1;\n");
        all.insert(format!("p/t{i:02}.rhai"));
    }
    w.script("p/lib/helper.rhai", "fail(\"not a test\");\n");
    for kind in ["count", "hash"] {
        let parts: Vec<BTreeSet<String>> = (1..=3)
            .map(|k| partition(&w, &format!("{kind}:{k}/3")))
            .collect();
        for (i, a) in parts.iter().enumerate() {
            for b in &parts[i + 1..] {
                assert!(a.is_disjoint(b), "{kind}: {a:?} and {b:?} overlap");
            }
        }
        let union: BTreeSet<String> = parts.into_iter().flatten().collect();
        assert_eq!(union, all, "{kind}");
    }
    // count deals tests out in order.
    assert_eq!(
        partition(&w, "count:2/3"),
        ["p/t01.rhai", "p/t04.rhai", "p/t07.rhai", "p/t10.rhai"]
            .map(String::from)
            .into()
    );
}

/// A suite with one test of each kind of result.
fn mixed_suite(w: &World) {
    w.script("x/pass.rhai", "let x = 1;\n");
    w.script(
        "x/fail.rhai",
        "print(\"before <the> failure & after\");\nassert_eq(1, 2, \"one is two\");\n",
    );
    w.script("x/slow.rhai", "sleep(60);\n");
    w.script("x/skip.rhai", "skip(\"no guest\");\n");
    w.script("x/flaky.rhai", FLAKY);
}

#[test]
fn junit_reads_back_with_failures_messages_and_output() {
    let w = World::new();
    mixed_suite(&w);
    let dir = format!("dir={}", w.path().display());
    let o = w.run(&[
        "run",
        "-j",
        "4",
        "--retries",
        "1",
        "--timeout",
        "2",
        "--junit",
        "junit.xml",
        "x",
        "--",
        &dir,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let xml = std::fs::read_to_string(w.path().join("junit.xml")).unwrap();

    // Well-formed XML, by a generic parser.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut elements = Vec::new();
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                elements.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Ok(_) => {}
            Err(e) => panic!("malformed XML at {}: {e}\n{xml}", reader.buffer_position()),
        }
    }
    assert_eq!(elements.iter().filter(|e| *e == "testcase").count(), 5);

    // And as JUnit, by quick-junit's reader.
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.tests, 5);
    assert_eq!(report.failures, 2);
    let suite = &report.test_suites[0];
    assert_eq!(suite.skipped, 1);
    let case = |name: &str| {
        suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    use quick_junit::TestCaseStatus as S;
    match &case("x/fail.rhai").status {
        S::NonSuccess {
            message,
            ty,
            description,
            reruns,
            ..
        } => {
            assert_eq!(message.as_ref().unwrap().as_str(), "one is two");
            assert_eq!(ty.as_ref().unwrap().as_str(), "AssertionFailed");
            let d = description.as_ref().unwrap().as_str();
            assert!(
                d.contains("x/fail.rhai:2:1: AssertionFailed: one is two"),
                "{d}"
            );
            assert!(d.contains("artifacts: "), "{d}");
            assert_eq!(reruns.runs.len(), 1);
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(
        case("x/fail.rhai").system_out.as_ref().unwrap().as_str(),
        "before <the> failure & after"
    );
    match &case("x/slow.rhai").status {
        S::NonSuccess { message, ty, .. } => {
            assert_eq!(ty.as_ref().unwrap().as_str(), "Timeout");
            assert!(message
                .as_ref()
                .unwrap()
                .as_str()
                .starts_with("the test timed out after 2s"));
        }
        s => panic!("{s:?}"),
    }
    match &case("x/flaky.rhai").status {
        S::Success { flaky_runs } => assert_eq!(flaky_runs.len(), 1),
        s => panic!("{s:?}"),
    }
    assert!(matches!(case("x/skip.rhai").status, S::Skipped { .. }));
    assert!(matches!(case("x/pass.rhai").status, S::Success { .. }));
    assert_eq!(
        case("x/pass.rhai").classname.as_ref().unwrap().as_str(),
        "x"
    );
}

/// A test point of a TAP stream.
#[derive(Debug)]
struct Point {
    ok: bool,
    number: usize,
    description: String,
    directive: Option<String>,
    yaml: serde_json::Map<String, serde_json::Value>,
}

/// A strict reader of the TAP 14 that vmscript writes: the version line,
/// one plan, test points numbered 1, 2, … with optional YAML blocks (whose
/// values are double-quoted scalars or plain numbers and booleans), comments,
/// and an optional `Bail out!`.
fn parse_tap(text: &str) -> (usize, Vec<Point>, Option<String>) {
    let point_re =
        regex::Regex::new(r"^(not )?ok (\d+)(?: - ((?:[^#\\]|\\.)*?))?(?: # (.*))?$").unwrap();
    let mut lines = text.lines().peekable();
    assert_eq!(lines.next(), Some("TAP version 14"), "{text}");
    let mut plan = None;
    let mut points: Vec<Point> = Vec::new();
    let mut bail = None;
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("1..") {
            assert!(plan.is_none(), "two plans: {text}");
            plan = Some(n.parse::<usize>().unwrap());
        } else if let Some(c) = point_re.captures(line) {
            let number: usize = c[2].parse().unwrap();
            assert_eq!(number, points.len() + 1, "out of order: {line}");
            let mut yaml = serde_json::Map::new();
            if lines.peek() == Some(&"  ---") {
                lines.next();
                loop {
                    let l = lines.next().expect("unterminated YAML block");
                    if l == "  ..." {
                        break;
                    }
                    let (k, v) = l
                        .strip_prefix("  ")
                        .and_then(|l| l.split_once(": "))
                        .unwrap_or_else(|| panic!("bad YAML line {l:?}"));
                    let v: serde_json::Value = serde_json::from_str(v)
                        .unwrap_or_else(|e| panic!("bad YAML value {v:?}: {e}"));
                    yaml.insert(k.to_string(), v);
                }
            }
            points.push(Point {
                ok: c.get(1).is_none(),
                number,
                description: c.get(3).map_or("", |m| m.as_str()).replace("\\#", "#"),
                directive: c.get(4).map(|m| m.as_str().to_string()),
                yaml,
            });
        } else if let Some(reason) = line.strip_prefix("Bail out!") {
            bail = Some(reason.trim().to_string());
            break;
        } else {
            assert!(
                line.starts_with('#') || line.is_empty(),
                "not TAP: {line:?}\n{text}"
            );
        }
    }
    for rest in lines {
        assert!(rest.starts_with('#'), "after Bail out!: {rest:?}");
    }
    (plan.expect("no plan"), points, bail)
}

#[test]
fn tap_output_is_tap_14_with_diagnostics() {
    let w = World::new();
    mixed_suite(&w);
    w.script("x/odd # name.rhai", "let x = 1;\n");
    let dir = format!("dir={}", w.path().display());
    let o = w.run(&[
        "run",
        "-j",
        "3",
        "--retries",
        "1",
        "--timeout",
        "2",
        "--format",
        "tap",
        "x",
        "--",
        &dir,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let (plan, points, bail) = parse_tap(&out);
    assert_eq!(plan, 6);
    assert_eq!(points.len(), 6);
    assert!(bail.is_none());
    let point = |name: &str| {
        points
            .iter()
            .find(|p| p.description == name)
            .unwrap_or_else(|| panic!("{name} missing in {out}"))
    };
    assert!(point("x/pass.rhai").ok);
    assert!(point("x/odd # name.rhai").ok);
    let skip = point("x/skip.rhai");
    assert!(skip.ok && skip.directive.as_deref() == Some("SKIP no guest"));
    let fail = point("x/fail.rhai");
    assert!(!fail.ok);
    assert_eq!(fail.yaml["kind"], "AssertionFailed");
    assert_eq!(fail.yaml["at"], "x/fail.rhai:2:1");
    assert_eq!(fail.yaml["tries"], 2);
    let slow = point("x/slow.rhai");
    assert!(!slow.ok);
    assert_eq!(slow.yaml["status"], "timeout");
    let flaky = point("x/flaky.rhai");
    assert!(flaky.ok && flaky.yaml["flaky"] == true);
    assert!(points.iter().all(|p| p.number >= 1));
    assert!(out.contains("\n# 3 passed, 2 failed, 1 skipped\n"), "{out}");

    // Cut short: Bail out!
    let o = w.run(&["run", "-j", "1", "--fail-fast", "--format", "tap", "x"]);
    let (plan, points, bail) = parse_tap(&stdout(&o));
    assert_eq!(plan, 6);
    assert_eq!(points.len(), 1);
    assert!(bail.unwrap().contains("--fail-fast"));
}

/// Scripts `sig/tN.rhai` that launch a machine, write its pid to
/// `pids/tN` and sleep.
fn sleeping_machines(w: &World, n: usize) {
    std::fs::create_dir_all(w.path().join("pids")).unwrap();
    for i in 0..n {
        w.script(
            &format!("sig/t{i}.rhai"),
            &format!(
                "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.set_console();\nvm.launch();\nwrite_file(\"{}/pids/t{i}\", `${{vm.get_pid()}}`);\nsleep(120);\n",
                w.path().display()
            ),
        );
    }
}

/// The pids written to `pids/`, once there are `n`.
fn wait_for_pids(w: &World, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pids: Vec<i32> = std::fs::read_dir(w.path().join("pids"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if pids.len() >= n {
            return pids;
        }
        assert!(Instant::now() < deadline, "the tests did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal_stops_the_run_cleanly(sig: i32, name: &str) {
    let w = World::new();
    sleeping_machines(&w, 4);
    let junit = w.path().join("junit.xml");
    let child = w
        .command(&["run", "-j", "2", "--junit", junit.to_str().unwrap(), "sig"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = wait_for_pids(&w, 2);
    assert!(pids.iter().all(|&p| is_qemu_process(p)));
    let start = Instant::now();
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    let o = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(128 + sig), "{out}");
    assert!(
        stderr(&o).contains(&format!(
            "{name} received: stopping the running tests, starting no more"
        )),
        "{}",
        stderr(&o)
    );
    let lines = out.lines().filter(|l| l.starts_with("INTERRUPTED sig/t"));
    assert_eq!(lines.count(), 2, "{out}");
    assert!(
        out.contains(&format!("Interrupted: the test was interrupted by {name}")),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(
            "    2 interrupted\n    Stopped by {name}\n2 not run\n0 passed, 2 failed, 0 skipped\n"
        )),
        "{out}"
    );
    for p in pids {
        assert!(!is_qemu_process(p), "QEMU {p} outlived vmscript");
    }
    // The interrupted tests keep their logs, and the report says where.
    let kept: Vec<PathBuf> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("artifacts: "))
        .map(PathBuf::from)
        .collect();
    assert_eq!(kept.len(), 2, "{out}");
    for dir in &kept {
        let qmp = std::fs::read_to_string(dir.join("vm0.qmp.jsonl")).unwrap_or_default();
        assert!(qmp.contains("qmp_capabilities"), "{}: {qmp}", dir.display());
        assert!(dir.join("vm0.console.log").is_file(), "{}", dir.display());
    }
    let root = kept[0].parent().unwrap().file_name().unwrap();
    assert_eq!(w.tmp_entries(), [root.to_string_lossy()]);
    // JUnit lists the tests that never ran, as skipped with the reason.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.tests, 4, "{xml}");
    let never: Vec<_> = report.test_suites[0]
        .test_cases
        .iter()
        .filter_map(|c| match &c.status {
            quick_junit::TestCaseStatus::Skipped { message, .. } => {
                Some(message.as_ref().unwrap().to_string())
            }
            _ => None,
        })
        .collect();
    let why = format!("not run: the run was stopped by {name}");
    assert_eq!(never, [why.clone(), why], "{xml}");
}

#[test]
fn sigint_stops_every_running_test_and_prints_the_partial_summary() {
    signal_stops_the_run_cleanly(libc::SIGINT, "SIGINT (Ctrl-C)");
}

#[test]
fn sigterm_stops_every_running_test_and_prints_the_partial_summary() {
    signal_stops_the_run_cleanly(libc::SIGTERM, "SIGTERM");
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_nothing() {
    let w = World::new();
    sleeping_machines(&w, 3);
    let child = w
        .command(&["run", "-j", "3", "sig"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = wait_for_pids(&w, 3);
    // Two different signals, so that the second is not merged into the
    // first while it is pending.
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    // Cancelled tests end within milliseconds, so the run may finish from
    // the first signal before the second is handled; either way it ends
    // by a signal's status and leaves nothing.
    match o.status.code() {
        Some(143) => assert!(
            stderr(&o).contains("second signal 15: killed "),
            "{}",
            stderr(&o)
        ),
        Some(130) => assert!(stdout(&o).ends_with("0 passed, 3 failed, 0 skipped\n")),
        c => panic!("exit status {c:?}: {}", stdout(&o)),
    }
    for p in pids {
        assert!(!is_qemu_process(p), "QEMU {p} outlived vmscript");
    }
    // Only the interrupted tests' logs stay.
    let left = w.tmp_entries();
    assert!(
        left.len() <= 1 && left.iter().all(|n| n.starts_with("vmscript-artifacts-")),
        "{left:?}"
    );
    assert!(sockets_below(&w.tmp()).is_empty());
}

#[test]
fn a_terminal_gets_a_live_progress_line_and_a_pipe_plain_lines() {
    let w = World::new();
    w.script("p/a.rhai", "sleep(1);\n");
    w.script("p/b.rhai", "sleep(2);\n");
    // A pipe: no control characters at all.
    let o = w.run(&["run", "-j", "2", "p"]);
    assert!(!stdout(&o).contains('\x1b') && !stderr(&o).contains('\x1b'));
    // A terminal, through script(1) from util-linux.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no script(1): skipping the terminal half");
        return;
    }
    let cmd = format!("{VMSCRIPT} run -j 2 p");
    let o = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(w.path())
        .env("TMPDIR", w.tmp())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = stdout(&o);
    assert!(
        screen.contains(
            "\r\x1b[K[    0s] 0/2 done: 0 passed, 0 failed | 2 running: p/a.rhai 0s, p/b.rhai 0s"
        ),
        "{screen:?}"
    );
    assert!(
        screen.contains("\x1b[32mPASS\x1b[0m p/a.rhai"),
        "{screen:?}"
    );
    assert!(
        screen.ends_with("2 passed, 0 failed, 0 skipped\r\n"),
        "{screen:?}"
    );
}

/// A file of cases with setup and teardown; teardown leaves a mark per
/// case in `param("dir")`, so that a test can see it ran.
const CASES: &str = r#"
let marks = param("dir");
fn setup() { #{ n: 5, dir: param("dir") } }
fn teardown(ctx) {
    let name = test_name();
    write_file(`${ctx.dir}/${name.split("::")[1]}`, "torn down");
}
fn test_pass(ctx) { assert_eq(ctx.n, 5); assert_eq(test_name(), "c/cases.rhai::test_pass"); }
fn test_fail() { assert_eq(1, 2, "one is two"); }
fn test_skip() { skip("not this one"); }
fn helper() { fail("not a case"); }
"#;

#[test]
fn cases_are_tests_of_their_own_in_every_report() {
    let w = World::new();
    w.script("c/cases.rhai", CASES);
    w.script(
        "c/plain.rhai",
        "assert_eq(test_name(), \"c/plain.rhai\");\n",
    );
    let dir = format!("dir={}", w.path().display());
    let o = w.run(&[
        "run", "--format", "json", "--junit", "j.xml", "c", "--", &dir,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let (tests, summary) = json_lines(&o);
    let status = |name: &str| {
        tests
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {tests:?}"))
            .clone()
    };
    assert_eq!(status("c/cases.rhai::test_pass")["status"], "passed");
    assert_eq!(status("c/cases.rhai::test_skip")["status"], "skipped");
    let fail = status("c/cases.rhai::test_fail");
    assert_eq!(fail["status"], "failed");
    assert_eq!(fail["case"], "test_fail");
    assert_eq!(fail["file"], "c/cases.rhai");
    assert_eq!(fail["error"]["line"], 9);
    assert_eq!(fail["error"]["context"][0], "in test_fail");
    assert_eq!(status("c/plain.rhai")["status"], "passed");
    assert_eq!(tests.len(), 4);
    assert_eq!(summary["passed"], 2);
    assert_eq!(summary["skipped"], 1);
    // teardown ran after each case, whether it passed, failed or skipped.
    for case in ["test_pass", "test_fail", "test_skip"] {
        let mark = w.path().join(case);
        assert!(mark.is_file(), "teardown did not run after {case}");
    }

    // JUnit: the file is the class, the case the name.
    let xml = std::fs::read_to_string(w.path().join("j.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!(report.tests, 4);
    let case = |name: &str| {
        suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} missing in {xml}"))
    };
    for name in ["test_pass", "test_fail", "test_skip"] {
        assert_eq!(
            case(name).classname.as_ref().unwrap().as_str(),
            "c/cases.rhai"
        );
    }
    use quick_junit::TestCaseStatus as S;
    assert!(matches!(case("test_skip").status, S::Skipped { .. }));
    assert!(matches!(case("test_fail").status, S::NonSuccess { .. }));
    assert_eq!(
        case("c/plain.rhai").classname.as_ref().unwrap().as_str(),
        "c"
    );

    // TAP and the human lines name the case FILE::test_name.
    let o = w.run(&["run", "--format", "tap", "c", "--", &dir]);
    let (plan, points, _) = parse_tap(&stdout(&o));
    assert_eq!(plan, 4);
    let skip = points
        .iter()
        .find(|p| p.description == "c/cases.rhai::test_skip")
        .unwrap();
    assert_eq!(skip.directive.as_deref(), Some("SKIP not this one"));
    let o = w.run(&["run", "c", "--", &dir]);
    let out = stdout(&o);
    assert!(out.contains("PASS c/cases.rhai::test_pass ("), "{out}");
    assert!(
        out.contains("SKIP c/cases.rhai::test_skip: not this one\n"),
        "{out}"
    );
    assert!(
        out.contains("FAIL c/cases.rhai::test_fail (",)
            && out.contains("    c/cases.rhai:9:18: AssertionFailed: one is two\n"),
        "{out}"
    );

    // --filter matches the case's name.
    let o = w.run(&[
        "run",
        "--format",
        "json",
        "--filter",
        "::test_pass",
        "c",
        "--",
        &dir,
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
    let (tests, _) = json_lines(&o);
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c/cases.rhai::test_pass"]);
}

#[test]
fn cases_run_in_parallel_and_are_retried_alone() {
    let w = World::new();
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!("fn test_sleep{i}() {{ sleep(5); }}\n"));
    }
    text.push_str(
        FLAKY
            .replace("let mark", "fn test_flaky() {\nlet mark")
            .as_str(),
    );
    text.push_str("}\n");
    w.script("p/cases.rhai", &text);
    let dir = format!("dir={}", w.path().display());
    let start = Instant::now();
    let o = w.run(&["run", "-j", "5", "--retries", "1", "p", "--", &dir]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    // One round of 5 s and the retry: in series the four take 20 s.
    assert!(
        start.elapsed() < Duration::from_secs(17),
        "{:?}",
        start.elapsed()
    );
    assert!(
        out.contains("FLAKY p/cases.rhai::test_flaky (") && out.contains("passed on try 2"),
        "{out}"
    );
    assert!(
        out.ends_with("    1 flaky\n5 passed, 0 failed, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn a_failing_top_level_fails_every_case_with_its_error() {
    let w = World::new();
    w.script(
        "t.rhai",
        "let x = 1;\nfail(\"no guest here\");\nfn test_a() {}\nfn test_b() {}\n",
    );
    let o = w.run(&["run", "--format", "json", "t.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let (tests, summary) = json_lines(&o);
    assert_eq!(summary["failed"], 2);
    for t in &tests {
        assert_eq!(t["error"]["message"], "no guest here", "{t}");
        assert_eq!(t["error"]["line"], 2, "{t}");
        assert_eq!(
            t["error"]["context"][0], "in the file's top level, which runs before each case",
            "{t}"
        );
    }
}

#[test]
fn setup_and_teardown_failures_are_reported_on_their_case() {
    let w = World::new();
    w.script(
        "s.rhai",
        "fn setup() {\n    throw \"no disk\";\n}\nfn teardown() { write_file(\"torn\", \"x\"); }\nfn test_a() { write_file(\"ran\", \"x\"); }\n",
    );
    w.script(
        "t.rhai",
        "fn teardown() {\n    fail(\"cannot clean\");\n}\nfn test_ok() {}\nfn test_bad() { fail(\"bad\"); }\n",
    );
    let o = w.run(&["run", "s.rhai", "t.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL s.rhai::test_a (")
            && out.contains(
                "    s.rhai:2:5: ScriptError: no disk\n      |\n    1 | fn setup() {\n    2 |     throw \"no disk\";\n      |     ^^^^^ ScriptError\n      in setup(), so test_a did not run\n"
            ),
        "{out}"
    );
    // As unittest: a failed setup runs neither the case nor teardown.
    assert!(!w.path().join("ran").exists() && !w.path().join("torn").exists());
    assert!(
        out.contains("    t.rhai:2:5: AssertionFailed: cannot clean\n      |\n    1 | fn teardown() {\n    2 |     fail(\"cannot clean\");\n      |     ^^^^ AssertionFailed\n      in teardown(), after test_ok passed\n"),
        "{out}"
    );
    assert!(
        out.contains("AssertionFailed: bad\n      |\n    3 | }\n    4 | fn test_ok() {}\n    5 | fn test_bad() { fail(\"bad\"); }\n      |                 ^^^^ AssertionFailed\n      in test_bad\n      teardown() failed too, at t.rhai:2:5: AssertionFailed: cannot clean\n"),
        "{out}"
    );
}

#[test]
fn a_case_that_times_out_leaves_no_machine_behind() {
    let w = World::new();
    w.script(
        "m.rhai",
        &format!(
            r#"
fn setup() {{
    let vm = machine();
    vm.add_args("-M", "none");
    vm.launch();
    write_file("{}/pid", `${{vm.get_pid()}}`);
    vm
}}
fn teardown(vm) {{ write_file("{}/torn", `${{vm.is_running()}}`); }}
fn test_wait(vm) {{
    vm.event_wait("NEVER", 600);
}}
fn test_quick(vm) {{ assert(vm.is_running()); }}
"#,
            w.path().display(),
            w.path().display()
        ),
    );
    let start = Instant::now();
    let o = w.run(&[
        "run",
        "--timeout",
        "2",
        "-j",
        "1",
        "--filter",
        "test_wait",
        "m.rhai",
    ]);
    assert!(start.elapsed() < Duration::from_secs(20));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.starts_with("TIMEOUT m.rhai::test_wait (2."), "{out}");
    // At the wait inside the case, which Rhai's own error position loses.
    assert!(
        out.contains("m.rhai:11:8: Timeout: the test timed out after 2s, waiting for event NEVER"),
        "{out}"
    );
    let pid: i32 = std::fs::read_to_string(w.path().join("pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!is_qemu_process(pid), "QEMU {pid} outlived its case");
    assert!(sockets_below(&w.tmp()).is_empty());
    // Its teardown ran, with the machine still up.
    let torn = w.path().join("torn");
    assert_eq!(std::fs::read_to_string(&torn).unwrap(), "true");
    std::fs::remove_file(&torn).unwrap();
    // The other case, on its own machine, passes.
    let o = w.run(&["run", "--filter", "test_quick", "m.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&torn).unwrap(), "true");
}

#[test]
fn a_teardown_that_hangs_after_its_case_timed_out_is_stopped_too() {
    let w = World::new();
    w.script(
        "h.rhai",
        r#"
fn setup() {
    let vm = machine();
    vm.add_args("-M", "none");
    vm.launch();
    vm
}
fn teardown(vm) { vm.event_wait("ALSO_NEVER", 600); }
fn test_wait(vm) { vm.event_wait("NEVER", 600); }
"#,
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "2", "h.rhai"]);
    let took = start.elapsed();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // The timeout, then the grace in which teardown ran, then the kill.
    assert!(took >= Duration::from_secs(7), "{took:?}\n{out}");
    assert!(took < Duration::from_secs(20), "{took:?}\n{out}");
    assert!(out.starts_with("TIMEOUT h.rhai::test_wait ("), "{out}");
    assert!(
        out.contains("Timeout: the test timed out after 2s, waiting for event NEVER"),
        "{out}"
    );
    assert!(
        out.contains("teardown() failed too, at h.rhai: Timeout: the test timed out after 2s"),
        "{out}"
    );
    w.assert_clean();
}

#[test]
fn skip_in_setup_skips_only_its_case() {
    let w = World::new();
    w.script(
        "k.rhai",
        r#"
fn setup() {
    if test_name().ends_with("::test_b") {
        skip("no b here");
    }
    5
}
fn test_a(n) { assert_eq(n, 5); }
fn test_b(n) { fail("ran after its setup skipped"); }
fn test_c(n) { assert_eq(n, 5); }
"#,
    );
    let o = w.run(&["run", "--format", "json", "--junit", "j.xml", "k.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let (tests, summary) = json_lines(&o);
    let got: BTreeSet<String> = tests
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["name"].as_str().unwrap(),
                t["status"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "k.rhai::test_a passed",
        "k.rhai::test_b skipped",
        "k.rhai::test_c passed",
    ]
    .map(String::from)
    .into();
    assert_eq!(got, want);
    assert_eq!(
        (summary["passed"].as_u64(), summary["skipped"].as_u64()),
        (Some(2), Some(1))
    );

    let xml = std::fs::read_to_string(w.path().join("j.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    use quick_junit::TestCaseStatus as S;
    for c in &report.test_suites[0].test_cases {
        let skipped = matches!(c.status, S::Skipped { .. });
        assert_eq!(skipped, c.name.as_str() == "test_b", "{xml}");
    }
    let o = w.run(&["run", "k.rhai"]);
    assert!(
        stdout(&o).contains("SKIP k.rhai::test_b: no b here\n"),
        "{}",
        stdout(&o)
    );
}

/// A file of cases whose machines are started by `start_vm(tag)`, which
/// writes the QEMU's pid to `DIR/pid_TAG`.
fn vm_cases(w: &World, body: &str) -> String {
    format!(
        r#"
fn start_vm(tag) {{
    let vm = machine();
    vm.add_args("-M", "none");
    vm.launch();
    write_file(`{}/pid_${{tag}}`, `${{vm.get_pid()}}`);
    vm
}}
{body}"#,
        w.path().display()
    )
}

#[test]
fn a_top_level_setup_or_teardown_that_fails_with_machines_running_leaves_none() {
    let w = World::new();
    w.script(
        "f/top.rhai",
        &vm_cases(
            &w,
            "let vm = start_vm(`top_${test_name().split(\"::\")[1]}`);\nfail(\"top level broke\");\nfn test_a() {}\nfn test_b() {}\n",
        ),
    );
    w.script(
        "f/setup.rhai",
        &vm_cases(
            &w,
            "fn setup() {\n    let vm = start_vm(\"setup\");\n    throw \"no disk\";\n}\nfn test_a(vm) {}\n",
        ),
    );
    w.script(
        "f/teardown.rhai",
        &vm_cases(
            &w,
            "fn setup() { start_vm(test_name().split(\"::\")[1]) }\nfn teardown(vm) {\n    fail(\"cannot clean\");\n}\nfn test_ok(vm) { assert(vm.is_running()); }\nfn test_bad(vm) { fail(\"bad\"); }\n",
        ),
    );
    let o = w.run(&["run", "-j", "2", "--format", "json", "f"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let (tests, summary) = json_lines(&o);
    assert_eq!(summary["failed"], 5, "{tests:?}");
    let test = |name: &str| {
        tests
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {tests:?}"))
            .clone()
    };
    for case in ["test_a", "test_b"] {
        let t = test(&format!("f/top.rhai::{case}"));
        assert_eq!(t["error"]["message"], "top level broke", "{t}");
        assert_eq!(
            t["error"]["context"][0], "in the file's top level, which runs before each case",
            "{t}"
        );
    }
    let t = test("f/setup.rhai::test_a");
    assert_eq!(t["error"]["message"], "no disk", "{t}");
    assert_eq!(
        t["error"]["context"][0], "in setup(), so test_a did not run",
        "{t}"
    );
    let t = test("f/teardown.rhai::test_ok");
    assert_eq!(t["error"]["message"], "cannot clean", "{t}");
    assert_eq!(
        t["error"]["context"][0], "in teardown(), after test_ok passed",
        "{t}"
    );
    let t = test("f/teardown.rhai::test_bad");
    assert_eq!(t["error"]["message"], "bad", "{t}");
    assert_eq!(t["error"]["context"][0], "in test_bad", "{t}");

    // Every machine was started, and none outlived its case.
    for tag in ["top_test_a", "top_test_b", "setup", "test_ok", "test_bad"] {
        let pid: i32 = std::fs::read_to_string(w.path().join(format!("pid_{tag}")))
            .unwrap_or_else(|e| panic!("no pid_{tag}: {e}"))
            .parse()
            .unwrap();
        assert!(
            !is_qemu_process(pid),
            "QEMU {pid} ({tag}) outlived its case"
        );
    }
    assert!(sockets_below(&w.tmp()).is_empty());
}

#[test]
fn steps_are_timed_in_every_report_and_name_where_an_error_happened() {
    let w = World::new();
    w.script(
        "s.rhai",
        r#"
let n = step("compute", || { sleep(0.2); 41 + 1 });
assert_eq(n, 42);
step("outer", || {
    step("inner", || {
        assert_eq(n, 43, "n is not 43");
    });
});
"#,
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let o = w.run(&["run", "--format", "json", "--junit", "j.xml", "s.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let (tests, _) = json_lines(&o);
    let steps = tests[0]["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["compute", "outer", "outer > inner"]);
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passed", "failed", "failed"]);
    assert!(steps[0]["duration"].as_f64().unwrap() >= 0.2, "{steps:?}");
    assert!(steps[0]["start"].as_f64().unwrap() >= before - 1.0);
    assert!(steps[1]["offset"].as_f64().unwrap() >= 0.2);
    assert!(steps[2]["error"]
        .as_str()
        .unwrap()
        .starts_with("AssertionFailed: n is not 43"));
    assert_eq!(tests[0]["error"]["context"][0], "in step outer > inner");

    let xml = std::fs::read_to_string(w.path().join("j.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let props: Vec<String> = report.test_suites[0].test_cases[0]
        .properties
        .iter()
        .map(|p| format!("{}={}", p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(props.len(), 3, "{props:?}");
    assert!(props[0].starts_with("step=passed  +0.0"), "{props:?}");
    assert!(props[0].ends_with("s  compute"), "{props:?}");
    assert!(
        props[2].ends_with("s  outer > inner: AssertionFailed: n is not 43"),
        "{props:?}"
    );

    // TAP: the failure's YAML block lists the steps.
    let o = w.run(&["run", "--format", "tap", "s.rhai"]);
    let (_, points, _) = parse_tap(&stdout(&o));
    let steps = points[0].yaml["steps"].as_array().unwrap();
    let got: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("compute", "passed"),
            ("outer", "failed"),
            ("outer > inner", "failed")
        ]
    );
    assert!(steps[0]["duration"].as_f64().unwrap() >= 0.2, "{steps:?}");

    let o = w.run(&["run", "s.rhai"]);
    let out = stdout(&o);
    assert!(
        out.contains("    s.rhai:6:9: AssertionFailed: n is not 43\n      left: 42\n     right: 43\n      |\n    4 | step(\"outer\", || {\n    5 |     step(\"inner\", || {\n    6 |         assert_eq(n, 43, \"n is not 43\");\n      |         ^^^^^^^^^ AssertionFailed\n      in step outer > inner\n"),
        "{out}"
    );
    assert!(
        out.contains("\n    --- steps ---\n    passed  +0.0"),
        "{out}"
    );
    assert!(
        out.contains("s  outer > inner: AssertionFailed: n is not 43\n"),
        "{out}"
    );
}

#[test]
fn list_shows_what_run_would_run_with_tags() {
    let w = World::new();
    w.script("l/cases.rhai", "fn test_b() {}\nfn test_a() {}\n");
    w.script("l/plain.rhai", "let x = 1;\n");
    w.script("l/lib/m.rhai", "fn test_not() {}\n");
    w.script(
        "l/vmscript.toml",
        "[[tests]]\nfilter = \"::test_a\"\ntags = [\"smoke\", \"fast\"]\n",
    );
    let o = w.run(&["list", "l"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "l/cases.rhai::test_a [smoke, fast]\nl/cases.rhai::test_b\nl/plain.rhai\n"
    );
    let o = w.run(&["list", "--format", "json", "--tag", "smoke", "l"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "l/cases.rhai::test_a");
    assert_eq!(lines[0]["case"], "test_a");
    assert_eq!(lines[0]["file"], "l/cases.rhai");
    assert_eq!(lines[0]["tags"], serde_json::json!(["smoke", "fast"]));
    let o = w.run(&["list", "--exclude-tag", "fast", "--filter", "cases", "l"]);
    assert_eq!(stdout(&o), "l/cases.rhai::test_b\n");
    // run selects the same.
    let o = w.run(&["run", "--format", "json", "--tag", "fast", "l"]);
    let (tests, _) = json_lines(&o);
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0]["name"], "l/cases.rhai::test_a");
}

#[test]
fn the_unittest_shaped_ports_list_one_case_per_original_method() {
    let o = Command::new(VMSCRIPT)
        .args(["list", "--format", "json", "scripts/ports"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let names: BTreeSet<String> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    for (port, cases) in [
        (
            "iotest-139-blockdev-del",
            &["test_quorum", "test_blkverify"][..],
        ),
        (
            "iotest-219-job-lifecycle",
            &[
                "test_mirror",
                "test_backup_auto_finalize_auto_dismiss",
                "test_backup_auto_finalize_manual_dismiss",
                "test_backup_manual_finalize_auto_dismiss",
                "test_backup_manual_finalize_manual_dismiss",
            ],
        ),
        ("iotest-migrate-during-backup", &["test_migrate"]),
        (
            "iotest-migration-permissions",
            &["test_post_migration_permissions"],
        ),
        (
            "iotest-mirror-ready-cancel-error",
            &["test_transient_error", "test_persistent_error"],
        ),
        (
            "iotest-stream-error-on-reset",
            &["test_stream_error_on_reset"],
        ),
    ] {
        let file = format!("scripts/ports/{port}.rhai");
        assert!(!names.contains(&file), "{file} is still one test");
        for case in cases {
            let name = format!("{file}::{case}");
            assert!(names.contains(&name), "{name} missing: {names:?}");
        }
    }
}

#[test]
fn selecting_no_test_exits_4_unless_told_otherwise() {
    let w = World::new();
    w.script("n/a.rhai", "let x = 1;\n");
    for cmd in ["run", "list"] {
        let o = w.run(&[cmd, "--filter", "typo", "n"]);
        assert_eq!(o.status.code(), Some(4), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no tests selected in n with --filter typo (exit status 4"),
            "{cmd}: {}",
            stderr(&o)
        );
        let o = w.run(&[cmd, "--filter", "typo", "--no-tests", "warn", "n"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(stderr(&o).contains("no tests selected"), "{cmd}");
        let o = w.run(&[cmd, "--filter", "typo", "--no-tests", "pass", "n"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(!stderr(&o).contains("no tests selected"), "{cmd}");
    }
    // An empty shard too.
    let o = w.run(&["run", "--partition", "count:2/2", "n"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

#[test]
fn vmscript_toml_sets_defaults_and_overrides_and_the_command_line_wins() {
    let w = World::new();
    w.script("suite/sub/short.rhai", "sleep(3);\n");
    w.script(
        "suite/sub/long.rhai",
        "sleep(3);\nimport \"helper\" as h;\nassert_eq(h::two(), 2);\n",
    );
    w.script("suite/mylib/helper.rhai", "fn two() { 2 }\n");
    w.script(
        "suite/vmscript.toml",
        "# the suite's settings\n[run]\ntimeout = 1\nlib = [\"mylib\"]\n\n[[tests]]\nfilter = \"long\"\ntimeout = 20\n",
    );
    // Found in a parent of the folder run.
    let o = w.run(&["run", "suite/sub"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("TIMEOUT suite/sub/short.rhai ("), "{out}");
    assert!(out.contains("timed out after 1s"), "{out}");
    assert!(out.contains("PASS suite/sub/long.rhai ("), "{out}");
    // The command line wins over the file.
    let o = w.run(&["run", "--timeout", "20", "suite/sub"]);
    assert!(o.status.success(), "{}", stdout(&o));

    // Unknown keys: the file, the line and the valid keys.
    w.script(
        "bad/vmscript.toml",
        "[run]\njobs = 2\n\n[[tests]]\nfilter = \"x\"\nwieght = 2\n",
    );
    w.script("bad/t.rhai", "let x = 1;\n");
    for cmd in ["run", "list"] {
        let o = w.run(&[cmd, "bad"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let err = stderr(&o);
        assert!(
            err.contains("bad/vmscript.toml:6:1: unknown field wieght; valid keys here are filter, timeout, retries, weight, tags"),
            "{err}"
        );
    }
}

#[test]
fn every_run_default_of_vmscript_toml_applies_and_the_command_line_wins() {
    let w = World::new();
    w.script("s/a_nap.rhai", "sleep(1.5);\n");
    w.script("s/b_nap.rhai", "sleep(1.5);\n");
    w.script(
        "s/c_machine.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n",
    );
    w.script("s/d_flaky.rhai", FLAKY);
    // A QEMU that only says whose it is.
    let fake = w.script(
        "fake-qemu",
        "#!/bin/sh\necho the QEMU of vmscript.toml >&2\nexit 1\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let toml = |qemu: &str| {
        w.script(
            "s/vmscript.toml",
            &format!("[run]\njobs = 1\ntimeout = 1\ntimeout-multiplier = 3\nretries = 1\nqemu = \"{qemu}\"\n"),
        );
    };
    toml(&fake.display().to_string());
    let dir = format!("dir={}", w.path().display());
    let run = |args: &[&str]| {
        let _ = std::fs::remove_file(w.path().join("flaky-mark"));
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["s", "--", &dir]);
        w.run(&a)
    };
    // From the file: one at a time, 1 s times 3 lets the naps pass, the
    // flaky test passes on its retry, and QEMU is the file's.
    let out = stdout(&run(&[]));
    assert!(out.contains("    Summary: 4 tests in "), "{out}");
    assert!(out.contains(", 1 at a time\n"), "{out}");
    assert!(
        out.contains("PASS s/a_nap.rhai (") && out.contains("PASS s/b_nap.rhai ("),
        "{out}"
    );
    assert!(out.contains("FLAKY s/d_flaky.rhai ("), "{out}");
    assert!(out.contains("FAIL s/c_machine.rhai ("), "{out}");
    assert!(out.contains("the QEMU of vmscript.toml"), "{out}");

    // The command line wins, key by key.
    let cli = [
        "-j",
        "2",
        "--timeout-multiplier",
        "1",
        "--retries",
        "0",
        "--qemu",
        crate::common::QEMU,
    ];
    let out = stdout(&run(&cli));
    assert!(out.contains(", 2 at a time\n"), "{out}");
    assert!(out.contains("TIMEOUT s/a_nap.rhai ("), "{out}");
    assert!(out.contains("FAIL s/d_flaky.rhai ("), "{out}");
    assert!(out.contains("PASS s/c_machine.rhai ("), "{out}");
    assert!(!out.contains("the QEMU of vmscript.toml"), "{out}");

    // A QEMU of the file that is not there: the error says where it was set.
    toml("/nowhere/qemu");
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("QEMU binary /nowhere/qemu (set in ")
            && stderr(&o).contains("/s/vmscript.toml) does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(run(&cli).status.code() == Some(1));
}

/// A test that records when it ran in `spans/NAME`.
fn span_script(name: &str, secs: f64) -> String {
    format!(
        "let start = now();\nsleep({secs});\nwrite_file(`${{param(\"dir\")}}/spans/{name}`, `${{start}} ${{now()}}`);\n"
    )
}

#[test]
fn a_test_of_weight_two_holds_two_slots() {
    let w = World::new();
    std::fs::create_dir_all(w.path().join("spans")).unwrap();
    w.script("h/a_heavy.rhai", &span_script("heavy", 1.5));
    for l in ["b_light", "c_light", "d_light"] {
        w.script(&format!("h/{l}.rhai"), &span_script(l, 1.5));
    }
    w.script(
        "h/vmscript.toml",
        "[[tests]]\nfilter = \"heavy\"\nweight = 2\n",
    );
    let dir = format!("dir={}", w.path().display());
    let o = w.run(&["run", "-j", "2", "h", "--", &dir]);
    assert!(o.status.success(), "{}", stdout(&o));
    let span = |n: &str| -> (f64, f64) {
        let t = std::fs::read_to_string(w.path().join("spans").join(n)).unwrap();
        let (a, b) = t.split_once(' ').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let heavy = span("heavy");
    let lights: Vec<(f64, f64)> = ["b_light", "c_light", "d_light"].map(span).into();
    for l in &lights {
        assert!(
            l.0 >= heavy.1 || l.1 <= heavy.0,
            "a light test {l:?} ran beside the heavy one {heavy:?}"
        );
    }
    // Two light ones did share the two slots.
    let overlap = |a: (f64, f64), b: (f64, f64)| a.0 < b.1 && b.0 < a.1;
    assert!(
        overlap(lights[0], lights[1])
            || overlap(lights[1], lights[2])
            || overlap(lights[0], lights[2]),
        "{lights:?}"
    );
    // A weight above -j is capped: the test still runs.
    let o = w.run(&["run", "-j", "1", "--filter", "heavy", "h", "--", &dir]);
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn the_timeout_multiplier_scales_the_test_timeout_and_the_scripts_waits() {
    let w = World::new();
    w.script("m/sleepy.rhai", "sleep(2);\n");
    w.script("m/wait.rhai", "wait_until(|| false, 1);\n");
    let o = w.run(&["run", "--timeout", "1", "--filter", "sleepy", "m"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let o = w.run(&[
        "run",
        "--timeout",
        "1",
        "--timeout-multiplier",
        "4",
        "--filter",
        "sleepy",
        "m",
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
    let o = w
        .command(&["run", "--timeout", "1", "--filter", "sleepy", "m"])
        .env("VMSCRIPT_TIMEOUT_MULTIPLIER", "4")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    // A script's own wait: 1 s times 2.
    let start = Instant::now();
    let o = w.run(&["run", "--timeout-multiplier", "2", "--filter", "wait", "m"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("Timeout: timed out after 2s waiting for wait_until's condition"),
        "{out}"
    );
    assert!(start.elapsed() >= Duration::from_secs(2));
    let o = w.run(&["run", "--timeout-multiplier", "0", "m"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_timeout_multiplier_scales_the_stdlibs_own_deadlines() {
    let w = World::new();
    w.script(
        "p.rhai",
        "import \"retry\" as retry;\nassert_eq(timeout_multiplier(), 2.0);\nretry::poll(|| false, 1);\n",
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout-multiplier", "2", "p.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("Timeout: timed out after 2.0s waiting for retry::poll's condition"),
        "{out}"
    );
    assert!(start.elapsed() >= Duration::from_secs(2));
    // Unscaled: 1 s, and timeout_multiplier() is 1.
    w.script(
        "q.rhai",
        "import \"retry\" as retry;\nassert_eq(timeout_multiplier(), 1.0);\nretry::poll(|| false, 1);\n",
    );
    let o = w.run(&["run", "q.rhai"]);
    let out = stdout(&o);
    assert!(
        out.contains("Timeout: timed out after 1.0s waiting for retry::poll's condition"),
        "{out}"
    );
}

#[test]
fn a_slow_test_is_announced_with_what_it_is_doing() {
    let w = World::new();
    w.script(
        "slow.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nstep(\"boot\", || vm.event_wait(\"NEVER\", 3));\n",
    );
    w.script("quick.rhai", "let x = 1;\n");
    let o = w.run(&["run", "--slow-timeout", "1", "--timeout", "30", "."]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("vmscript: SLOW slow.rhai has run 1s (timeout 30s), in step boot, waiting for event NEVER\n"),
        "{err}"
    );
    assert!(!err.contains("SLOW quick.rhai"), "{err}");
    // From vmscript.toml, scaled by the multiplier: not slow yet at 1 s.
    w.script("vmscript.toml", "[run]\nslow-timeout = 1\n");
    w.script("nap.rhai", "sleep(2);\n");
    let o = w.run(&["run", "--timeout-multiplier", "5", "nap.rhai"]);
    assert!(!stderr(&o).contains("SLOW"), "{}", stderr(&o));
    let o = w.run(&["run", "nap.rhai"]);
    assert!(
        stderr(&o).contains("SLOW nap.rhai has run 1s"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rerun_failed_runs_what_failed_when_it_last_ran() {
    let w = World::new();
    w.script("r/a.rhai", "let x = 1;\n");
    w.script(
        "r/b.rhai",
        &format!(
            "assert(file_exists(\"{}/fixed\"), \"not fixed\");\n",
            w.path().display()
        ),
    );
    w.script(
        "r/c.rhai",
        "fn test_one() { fail(\"broken\"); }\nfn test_two() {}\n",
    );
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["run", "--format", "json", "--no-tests", "pass"];
        a.extend_from_slice(args);
        let o = w.run(&a);
        let (tests, _) = json_lines(&o);
        let mut v: Vec<String> = tests
            .iter()
            .map(|t| {
                format!(
                    "{} {}",
                    t["name"].as_str().unwrap(),
                    t["status"].as_str().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&["r"]).len(), 4);
    assert!(w.path().join("r/.vmscript/history.json").is_file());
    assert_eq!(
        names(&["--rerun-failed", "r"]),
        ["r/b.rhai failed", "r/c.rhai::test_one failed"]
    );
    std::fs::write(w.path().join("fixed"), "").unwrap();
    assert_eq!(
        names(&["--rerun-failed", "r"]),
        ["r/b.rhai passed", "r/c.rhai::test_one failed"]
    );
    assert_eq!(
        names(&["--rerun-failed", "r"]),
        ["r/c.rhai::test_one failed"]
    );
    // Nothing failed: nothing selected, said so.
    w.script("r/c.rhai", "fn test_one() {}\nfn test_two() {}\n");
    assert_eq!(
        names(&["--rerun-failed", "r"]),
        ["r/c.rhai::test_one passed"]
    );
    let o = w.run(&["run", "--rerun-failed", "r"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("--rerun-failed"), "{}", stderr(&o));
}

#[test]
fn duration_partitions_balance_by_earlier_runs() {
    let w = World::new();
    w.script("d/t0_long.rhai", "sleep(2);\n");
    for i in 1..6 {
        w.script(&format!("d/t{i}.rhai"), "let x = 1;\n");
    }
    // Without a history: as many tests in each shard.
    let sizes = |w: &World| -> Vec<BTreeSet<String>> {
        (1..=2)
            .map(|k| partition_of(w, &format!("duration:{k}/2"), "d"))
            .collect()
    };
    let before = sizes(&w);
    assert_eq!((before[0].len(), before[1].len()), (3, 3), "{before:?}");
    // Once every test has run, the long test is a shard of its own.
    let o = w.run(&["run", "d"]);
    assert!(o.status.success());
    let after = sizes(&w);
    let mut lens = [after[0].len(), after[1].len()];
    lens.sort();
    assert_eq!(lens, [1, 5], "{after:?}");
    assert!(after
        .iter()
        .any(|s| s.len() == 1 && s.contains("d/t0_long.rhai")));
    assert!(after[0].is_disjoint(&after[1]));
}

/// The `vmscript run` command lines of docs/ci.md's YAML blocks, each with
/// its number of shards (`parallel:` or `SHARDS:`), each as one line.
fn ci_md_commands() -> Vec<(usize, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ci.md")).unwrap();
    let mut found = Vec::new();
    for block in doc.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let lines: Vec<&str> = block.lines().map(str::trim).collect();
        let shards: usize = lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("parallel:")
                    .or_else(|| l.strip_prefix("SHARDS:"))
            })
            .unwrap_or_else(|| panic!("no shard count in {block}"))
            .trim()
            .parse()
            .unwrap();
        let start = lines
            .iter()
            .position(|l| l.starts_with("vmscript run "))
            .unwrap_or_else(|| panic!("no vmscript run in {block}"));
        // A folded scalar: the command goes on over the lines of options.
        let mut line = lines[start].to_string();
        for l in &lines[start + 1..] {
            if !l.starts_with('-') || l.starts_with("- ") {
                break;
            }
            line = format!("{line} {l}");
        }
        found.push((shards, line));
    }
    found
}

#[test]
fn the_ci_configurations_in_the_docs_shard_a_suite_and_keep_each_shares_reports() {
    let commands = ci_md_commands();
    assert_eq!(commands.len(), 2, "GitLab and GitHub: {commands:?}");
    for (shards, line) in commands {
        assert!(shards > 1, "{line}");
        let w = World::new();
        let all: BTreeSet<String> = (0..7).map(|i| format!("tests/t{i}.rhai")).collect();
        for name in &all {
            w.script(name, "let x = 1;\n");
        }
        let mut seen = BTreeSet::new();
        for k in 1..=shards {
            let line = line
                .replace("${CI_NODE_INDEX}", &k.to_string())
                .replace("${{ matrix.shard }}", &k.to_string())
                .replace("${CI_NODE_TOTAL}", &shards.to_string())
                .replace("${{ env.SHARDS }}", &shards.to_string());
            assert!(!line.contains('$'), "{line}");
            let args: Vec<&str> = line.split_whitespace().skip(1).collect();
            let o = w.run(&args);
            assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
            let xml = std::fs::read_to_string(w.path().join(format!("junit-{k}.xml")))
                .unwrap_or_else(|e| panic!("{args:?}: no junit-{k}.xml: {e}"));
            let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
            for c in report.test_suites.iter().flat_map(|s| &s.test_cases) {
                // A file that is one test: classname its folder, name the file.
                assert_eq!(c.classname.as_ref().unwrap().as_str(), "tests");
                let name = c.name.as_str().to_string();
                assert!(seen.insert(name.clone()), "{name} ran in two shares");
            }
            assert!(w.path().join(format!("artifacts-{k}")).is_dir(), "{args:?}");
        }
        assert_eq!(seen, all);
    }
}

/// The names `--partition spec` selects in `dir`, by `vmscript list`.
fn partition_of(w: &World, spec: &str, dir: &str) -> BTreeSet<String> {
    let o = w.run(&["list", "--partition", spec, dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(String::from).collect()
}

#[test]
fn json_and_junit_carry_each_tests_wall_clock_start() {
    let w = World::new();
    w.script("s/a.rhai", "sleep(0.3);\n");
    w.script(
        "s/b.rhai",
        "fn test_one() { sleep(0.2); }\nfn test_two() {}\n",
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let o = w.run(&[
        "run", "-j", "1", "--format", "json", "--junit", "j.xml", "s",
    ]);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(o.status.success(), "{}", stdout(&o));
    let (tests, _) = json_lines(&o);
    assert_eq!(tests.len(), 3);
    let mut starts: Vec<(String, f64)> = tests
        .iter()
        .map(|t| {
            let start = t["start"]
                .as_f64()
                .unwrap_or_else(|| panic!("no start: {t}"));
            assert_eq!(t["attempts"][0]["start"].as_f64(), Some(start), "{t}");
            (t["name"].as_str().unwrap().to_string(), start)
        })
        .collect();
    for (name, s) in &starts {
        assert!(
            *s >= before && *s <= after,
            "{name} started at {s}, outside {before}..{after}"
        );
    }
    // One job: each test starts after the one before it ran.
    starts.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(starts[0].0, "s/a.rhai");
    assert!(starts[1].1 - starts[0].1 >= 0.3, "{starts:?}");

    let xml = std::fs::read_to_string(w.path().join("j.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let cases: Vec<_> = report
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .collect();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let t = c
            .timestamp
            .unwrap_or_else(|| panic!("no timestamp on {}: {xml}", c.name.as_str()));
        let secs = t.timestamp_millis() as f64 / 1000.0;
        assert!(
            secs >= before - 0.001 && secs <= after,
            "{}: {t}",
            c.name.as_str()
        );
    }
}
