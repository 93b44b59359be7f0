//! `vmscript run --report FILE.html`, rendered in a real browser: Debian's
//! chromium, headless, runs the page's script and prints the DOM it built.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::world::{stdout, World};

/// The DOM of `page` after its scripts ran, as chromium renders it.
fn rendered(page: &Path, profile: &Path) -> String {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: `apt-get install chromium` (scripts/test-all.sh does)");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own group, so that every helper process it started ends
        // with it below.
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let status = child.wait().unwrap();
    // SAFETY: signals the process group this test started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    assert!(status.success(), "chromium failed: {status}");
    out
}

#[test]
fn the_html_report_shows_tests_errors_steps_events_and_consoles_in_a_browser() {
    let w = World::new();
    w.script(
        "t/ok.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nvm.shutdown();\n",
    );
    w.script(
        "t/bad.rhai",
        "import \"guest\" as guest;\n\
         let vm = guest::boot(#{ agent: false });\n\
         step(\"pause it\", || {\n\
         \x20   vm.cmd(\"stop\");\n\
         \x20   log(\"paused </script> <b>not bold</b>\");\n\
         \x20   vm.event_wait(\"STOP\");\n\
         \x20   vm.cmd(\"cont\");\n\
         });\n\
         guest::run_ok(vm, \"echo hello-from-the-$((6*7))-guest\");\n\
         step(\"check it\", || {\n\
         \x20   let st = vm.cmd(\"query-status\");\n\
         \x20   assert_eq(st.status, \"paused\", \"not paused\");\n\
         });\n",
    );
    w.script(
        "t/screen.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"pc\", \"-vga\", \"std\");\nvm.launch();\nvm.screenshot(\"start\");\nfail(\"look at the screen\");\n",
    );
    let page = w.path().join("report.html");
    let o = w.run(&["run", "--report", page.to_str().unwrap(), "t"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing is fetched.
    for fetch in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(fetch), "the page fetches {fetch}");
    }
    let dom = rendered(&page, &w.dir("profile"));
    let text = |needle: &str| assert!(dom.contains(needle), "{needle:?} not in the page:\n{dom}");
    text("1 passed");
    text("2 failed");
    text("t/ok.rhai");
    text("t/bad.rhai");
    // The failing test comes first, with its error at its own line.
    assert!(dom.find("t/bad.rhai") < dom.find("t/ok.rhai"), "{dom}");
    text("t/bad.rhai:12:5: AssertionFailed: not paused");
    text("12 |     assert_eq(st.status, \"paused\", \"not paused\");");
    // Its steps, its log line (escaped, not markup) and its machine's
    // lane with the STOP event and the commands.
    text("pause it");
    text("check it");
    text("paused &lt;/script&gt; &lt;b&gt;not bold&lt;/b&gt;");
    text("&quot;event&quot;:&quot;STOP&quot;");
    text("&quot;execute&quot;:&quot;query-status&quot;");
    // The console as the guest's user saw it.
    text("vm0 console");
    text("hello-from-the-42-guest");
    // Its console lines are on the timeline too, on the test's clock.
    text("vm0 console</span>");
    assert!(
        dom.contains("s hello-from-the-42-guest\"></div>"),
        "no console mark:\n{dom}"
    );
    // The console's tail shows the commands as typed, without markers.
    let tail = dom
        .split("vm0 console (last lines)</h3><pre>")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no console tail:\n{dom}"));
    assert!(tail.contains("hello-from-the-42-guest"), "{tail}");
    let marker = tail
        .match_indices("vms")
        .any(|(i, _)| tail[i + 3..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(!marker, "guest::run's markers are shown:\n{tail}");
    // Screenshots, taken by the test and on its failure, inline.
    text("vm0-start.png");
    text("vm0-failure.png");
    assert!(
        dom.matches("<img src=\"data:image/png;base64,").count() >= 2,
        "{dom}"
    );
    // The passing test is listed, its details closed.
    assert!(!dom.contains("<b>not bold</b>"), "{dom}");
}

#[test]
fn vmscript_report_makes_the_same_report_later_from_a_moved_artifacts_folder() {
    let w = World::new();
    w.script(
        "t/ok.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nvm.shutdown();\n",
    );
    w.script(
        "t/bad.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"pc\", \"-vga\", \"std\");\nvm.launch();\nlog(\"about to fail\");\nvm.cmd(\"stop\");\nvm.event_wait(\"STOP\");\nfail(\"as planned\");\n",
    );
    let live = w.path().join("live.html");
    let art = w.path().join("art");
    let o = w.run(&[
        "run",
        "--report",
        live.to_str().unwrap(),
        "--artifacts",
        art.to_str().unwrap(),
        "t",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // The folder as a CI job hands it on: somewhere else.
    let moved = w.path().join("downloaded");
    std::fs::rename(&art, &moved).unwrap();
    let later = w.path().join("later.html");
    let o = w.run(&[
        "report",
        moved.to_str().unwrap(),
        "-o",
        later.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout(&o).trim(), later.display().to_string());
    let (live, later) = (
        std::fs::read_to_string(&live).unwrap(),
        std::fs::read_to_string(&later).unwrap(),
    );
    for needle in [
        r#""kind":"AssertionFailed","message":"as planned","file":"t/bad.rhai","line":7"#,
        "about to fail",
        "\\\"event\\\":\\\"STOP\\\"",
        "vm0-failure.png",
        "data:image/png;base64,",
    ] {
        assert!(later.contains(needle), "{needle:?} is not in the report");
    }
    if live != later {
        let at = live
            .bytes()
            .zip(later.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(live.len().min(later.len()));
        let around = |s: &str| {
            s.get(at.saturating_sub(200)..(at + 200).min(s.len()))
                .unwrap_or("")
                .to_string()
        };
        panic!(
            "the later report differs from the run's at byte {at}:\nrun:   {}\nlater: {}",
            around(&live),
            around(&later)
        );
    }
    // Without -o, beside the results.
    let o = w.run(&["report", moved.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(moved.join("report.html")).unwrap(),
        live
    );
}

#[test]
fn vmscript_report_names_what_is_missing_and_a_passing_run_leaves_no_folder() {
    let w = World::new();
    let empty = w.dir("empty");
    let o = w.run(&["report", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("empty has no results.json"), "{err}");
    std::fs::write(empty.join("results.json"), "[1, 2]").unwrap();
    let o = w.run(&["report", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("results.json is not a run's results"), "{err}");
    assert!(!empty.join("report.html").exists());
    // Results are written only where logs stay: a passing run's temp
    // folder still goes.
    w.script("ok.rhai", "let x = 1;\n");
    let o = w.run(&["run", "ok.rhai"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(w.tmp_entries(), Vec::<String>::new());
}
