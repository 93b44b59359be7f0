//! `vmscript run --debug-on-fail`: a failed test is handed, machines
//! running, to a debugger before its cleanup. The script layer's side is
//! tested with a debugger that records what it was handed; the REPL's in
//! a real terminal (tmux, as in `repl.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmscript::script::{self, Cancel, Debugger, QemuBinary, RunConfig, Scene};

use super::repl::{vmscript, Terminal, PROMPT};
use crate::common::world::{stderr, World};
use crate::common::{pid_exists, QEMU};

const NONE_ARGS: &str = r#"["-accel", "tcg", "-M", "none", "-nodefaults"]"#;

/// What a debugger saw of a failed test, while it had it.
#[derive(Debug, Default, Clone)]
struct Seen {
    test: String,
    failure: String,
    timed_out: bool,
    /// Each variable of the scope, as Rhai prints it.
    variables: Vec<(String, String)>,
    has_setup_value: bool,
    modules: Vec<String>,
    functions: Vec<String>,
    /// The pids of the machines that ran, and whether they did.
    running: Vec<(i32, bool)>,
}

fn recorder() -> (Debugger, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let debugger = Debugger::new(move |scene: Scene| {
        let running = scene
            .run
            .machines()
            .iter()
            .filter_map(|m| {
                let m = m.lock().unwrap();
                m.get_pid().map(|p| (p, m.is_running() && pid_exists(p)))
            })
            .collect();
        s.lock().unwrap().push(Seen {
            test: scene.test.clone(),
            failure: scene.failure.to_string(),
            timed_out: scene.timed_out,
            variables: scene
                .scope
                .iter_raw()
                .map(|(n, _, v)| (n.to_string(), v.to_string()))
                .collect(),
            has_setup_value: scene.has_setup_value,
            modules: scene.modules.iter().map(|(a, _)| a.clone()).collect(),
            functions: scene
                .functions
                .iter_functions()
                .map(|f| f.name.to_string())
                .collect(),
            running,
        });
    });
    (debugger, seen)
}

fn config(script: &Path, artifacts: &Path, timeout: f64, debugger: Debugger) -> RunConfig {
    RunConfig {
        script: script.to_path_buf(),
        artifacts: artifacts.to_path_buf(),
        timeout: Duration::from_secs_f64(timeout),
        qemu: QemuBinary::resolve(Some(QEMU.into())),
        params: Default::default(),
        capture: true,
        lib_dirs: Vec::new(),
        debugger: Some(debugger),
    }
}

fn variable<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.variables
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_failed_script_is_debugged_with_its_variables_and_running_machines_then_cleaned_up() {
    let w = World::new();
    w.script("lib/helpers.rhai", "fn three() { 3 }\n");
    let path = w.script(
        "t.rhai",
        &format!(
            "import \"lib/helpers\" as h;\nfn twice(x) {{ x * 2 }}\nlet answer = 41;\n\
             let vm = machine(#{{ args: {NONE_ARGS} }});\nvm.launch();\n\
             assert_eq(answer, 42, \"not the answer\");\n"
        ),
    );
    let (debugger, seen) = recorder();
    let art = w.dir("art");
    let outcome = script::run_file(config(&path, &art, 60.0, debugger), Cancel::new());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert!(
        s.failure
            .contains("t.rhai:6:1: AssertionFailed: not the answer"),
        "{}",
        s.failure
    );
    assert!(!s.timed_out);
    assert_eq!(variable(s, "answer"), Some("41"));
    assert!(variable(s, "vm").is_some(), "{:?}", s.variables);
    assert_eq!(s.modules, ["h"]);
    assert_eq!(s.functions, ["twice"]);
    assert_eq!(s.running.len(), 1);
    let (pid, running) = s.running[0];
    assert!(running, "the machine was not kept running");
    // Then the usual cleanup: the machine is gone, the failure reported.
    assert!(!pid_exists(pid), "QEMU {pid} outlived the test");
    let script::Status::Failed(f) = outcome.status else {
        panic!("{:?}", outcome.status);
    };
    assert_eq!(f.kind, "AssertionFailed");
}

#[test]
fn a_timed_out_script_keeps_its_machines_for_the_debugger() {
    let w = World::new();
    let path = w.script(
        "slow.rhai",
        &format!(
            "let vm = machine(#{{ args: {NONE_ARGS} }});\nvm.launch();\n\
             let waited = \"NEVER\";\nvm.event_wait(waited, 600);\n"
        ),
    );
    let (debugger, seen) = recorder();
    let art = w.dir("art");
    let outcome = script::run_file(config(&path, &art, 2.0, debugger), Cancel::new());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert!(s.timed_out);
    assert!(
        s.failure.contains("Timeout: the test timed out after 2s"),
        "{}",
        s.failure
    );
    assert_eq!(variable(s, "waited"), Some("NEVER"));
    let (pid, running) = s.running[0];
    assert!(running, "the timeout killed the machine");
    assert!(!pid_exists(pid));
    let script::Status::Failed(f) = outcome.status else {
        panic!("{:?}", outcome.status);
    };
    assert_eq!(f.kind, "Timeout");
}

#[test]
fn a_failed_case_is_debugged_with_its_setup_value_before_teardown() {
    let w = World::new();
    let marker = w.path().join("torn");
    let path = w.script(
        "cases.rhai",
        &format!(
            "import \"retry\" as r;\nlet top = \"t\";\n\
             fn setup() {{ let vm = machine(#{{ args: {NONE_ARGS} }}); vm.launch(); #{{ n: 7, vm: vm }} }}\n\
             fn teardown(ctx) {{ ctx.vm.shutdown(); write_blob({:?}, blob(1)); }}\n\
             fn test_ok(ctx) {{ }}\n\
             fn test_bad(ctx) {{ throw \"boom\"; }}\n",
            marker.display().to_string()
        ),
    );
    let program = script::Program::load(&path);
    let (debugger, seen) = recorder();
    let art = w.dir("art");
    let passed = script::run_program(
        config(&path, &art, 60.0, debugger.clone()),
        &program,
        Some("test_ok"),
        Cancel::new(),
    );
    assert_eq!(passed.status, script::Status::Passed);
    assert!(seen.lock().unwrap().is_empty(), "a pass is not debugged");
    std::fs::remove_file(&marker).unwrap();
    let outcome = script::run_program(
        config(&path, &art, 60.0, debugger),
        &program,
        Some("test_bad"),
        Cancel::new(),
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert!(s.test.ends_with("cases.rhai::test_bad"), "{}", s.test);
    assert!(s.has_setup_value);
    assert_eq!(variable(s, "top"), Some("t"));
    assert!(variable(s, "ctx").is_some_and(|v| v.contains("7")), "{s:?}");
    assert_eq!(s.modules, ["r"]);
    // The debugger came before teardown, which stopped the machine.
    assert_eq!(s.running.len(), 1);
    assert!(s.running[0].1, "teardown ran before the debugger");
    assert!(marker.exists(), "teardown did not run after the debugger");
    assert!(!pid_exists(s.running[0].0));
    assert!(matches!(outcome.status, script::Status::Failed(_)));
}

#[test]
fn debug_on_fail_is_refused_without_a_terminal() {
    let w = World::new();
    let path = w.script("t.rhai", "throw \"never runs\";\n");
    let out = w.run(&["run", "--debug-on-fail", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("--debug-on-fail") && err.contains("terminal"),
        "{err}"
    );
    assert_eq!(w.tmp_entries(), Vec::<String>::new(), "something ran");
}

/// `vmscript run --debug-on-fail --qemu QEMU FILES…` in a terminal, in `w`.
fn debug_run(w: &World, files: &[&Path]) -> Terminal {
    let mut argv = vec![vmscript(), "run", "--debug-on-fail", "--qemu", QEMU];
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    argv.extend(files.iter().map(String::as_str));
    let tmp = w.tmp();
    let mark = Path::new(w.mark());
    let guest = crate::common::guest_dir();
    let state = w.dir("state");
    Terminal::start(
        &argv,
        &[
            ("TMPDIR", &tmp),
            ("VMSCRIPT_TEST_MARK", mark),
            ("VMSCRIPT_GUEST", &guest),
            ("XDG_STATE_HOME", &state),
        ],
    )
}

fn pid_of(vms: &str, name: &str) -> i32 {
    let row = vms
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {vms}"));
    row.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn debug_repl_opens_in_the_failed_test_and_the_run_goes_on() {
    let w = World::new();
    let fail = w.script(
        "a_fail.rhai",
        &format!(
            "let answer = 41;\nlet vm = machine(#{{ args: {NONE_ARGS} }});\nvm.launch();\n\
             assert_eq(answer, 42, \"not the answer\");\n"
        ),
    );
    let pass = w.script("b_pass.rhai", "let x = 1;\n");
    let cases = w.script(
        "c_cases.rhai",
        "let top = \"t\";\nfn setup() { 7 }\nfn test_x(ctx) { throw \"boom\"; }\n",
    );
    let t = debug_run(&w, &[&fail, &pass, &cases]);
    let banner = t.wait_for(PROMPT);
    assert!(
        banner.contains("the test failed; its machines are kept running"),
        "{banner}"
    );
    assert!(
        banner.contains("a_fail.rhai:4:1: AssertionFailed: not the answer"),
        "{banner}"
    );
    // QEMU's whole command line.
    assert!(banner.contains("-chardev socket,id=mon"), "{banner}");
    assert!(banner.contains("-M none -nodefaults"), "{banner}");

    // A second monitor, for `vmscript qmp` from another terminal.
    let line = banner
        .lines()
        .find(|l| l.contains("from another terminal: vmscript qmp "))
        .unwrap_or_else(|| panic!("no monitor in {banner}"));
    let socket = line.rsplit(' ').next().unwrap().trim_matches('\'');
    let mut shell = std::process::Command::new(vmscript())
        .args(["qmp", socket])
        .env("XDG_STATE_HOME", w.dir("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut shell.stdin.take().unwrap(), b"query-status\n").unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("\"status\": \"running\""), "{text}");

    assert!(t.run("answer", PROMPT).ends_with("\n41"));
    let out = t.run("vms()", PROMPT);
    assert!(out.ends_with("\n[Machine(vm0)]"), "{out}");
    let vms = t.run(":vms", PROMPT);
    let pid = pid_of(&vms, "vm0");
    assert!(vms.contains("running"), "{vms}");
    assert!(pid_exists(pid));
    let out = t.run(r#"vm.command("query-status").status"#, PROMPT);
    assert!(out.ends_with("\nrunning"), "{out}");
    let out = t.run(":console vm0", PROMPT);
    assert!(out.contains("has no console"), "{out}");
    let out = t.run(":console nope", PROMPT);
    assert!(
        out.contains("no machine nope; the machines are vm0"),
        "{out}"
    );

    // Ctrl-D: cleanup, then the next tests; the case opens its own.
    let before = t.screen().trim_end().len();
    t.press("C-d");
    let out = t.wait_for_after(before, &format!("\n{PROMPT}"));
    assert!(out.contains("FAIL "), "{out}");
    assert!(out.contains("b_pass.rhai"), "{out}");
    assert!(out.contains("c_cases.rhai::test_x"), "{out}");
    assert!(out.contains("setup()'s value is in `ctx`"), "{out}");
    assert!(!pid_exists(pid), "QEMU {pid} outlived its test's debugging");
    assert!(t.run("ctx", PROMPT).ends_with("\n7"));
    assert!(t.run("top", PROMPT).ends_with("\nt"));
    t.line(":quit");
    let out = t.wait_for("[exit 1]");
    assert!(out.contains("1 passed, 2 failed"), "{out}");
    drop(t);
    w.assert_clean();
}

#[test]
fn debug_repl_after_a_timeout_has_the_machines_alive() {
    let w = World::new();
    let slow = w.script(
        "slow.rhai",
        &format!(
            "let vm = machine(#{{ args: {NONE_ARGS} }});\nvm.launch();\nvm.event_wait(\"NEVER\", 600);\n"
        ),
    );
    let tmp = w.tmp();
    let mark = Path::new(w.mark());
    let t = Terminal::start(
        &[
            vmscript(),
            "run",
            "--debug-on-fail",
            "--timeout",
            "3",
            "--qemu",
            QEMU,
            slow.to_str().unwrap(),
        ],
        &[("TMPDIR", &tmp), ("VMSCRIPT_TEST_MARK", mark)],
    );
    let banner = t.wait_for(PROMPT);
    assert!(banner.contains("the test timed out"), "{banner}");
    assert!(
        banner.contains("Timeout: the test timed out after 3s"),
        "{banner}"
    );
    let pid = pid_of(&t.run(":vms", PROMPT), "vm0");
    assert!(pid_exists(pid));
    assert!(t.run("vm.is_running()", PROMPT).ends_with("\ntrue"));
    // Waits work again, and Ctrl-C ends one without killing anything.
    t.line(r#"vm.event_wait("NEVER", 60)"#);
    std::thread::sleep(Duration::from_millis(500));
    t.press("C-c");
    t.wait_for("Interrupted: interrupted while waiting for event NEVER");
    assert!(t.run("vm.is_running()", PROMPT).ends_with("\ntrue"));
    t.press("C-d");
    let out = t.wait_for("[exit 1]");
    assert!(out.contains("TIMEOUT"), "{out}");
    assert!(!pid_exists(pid));
    drop(t);
    w.assert_clean();
}

#[test]
fn debug_console_reaches_the_guest_shell_and_comes_back() {
    let w = World::new();
    let test = w.script(
        "boot.rhai",
        "import \"guest\" as guest;\nlet vm = guest::boot();\nthrow \"look at it\";\n",
    );
    let t = debug_run(&w, &[&test]);
    t.wait_for(PROMPT);
    let before = t.screen().trim_end().len();
    t.line(":console vm0");
    t.wait_for_after(
        before,
        "[attached to vm0's console; Ctrl-] returns to the prompt]",
    );
    t.burst("\r");
    t.wait_for_after(before, "/ # ");
    let before = t.screen().trim_end().len();
    t.burst("echo $((6*7))\r");
    t.wait_for_after(before, "\n42");
    t.press("C-]");
    t.wait_for_after(before, "[detached from vm0's console]");
    t.wait_for_after(before, &format!("\n{PROMPT}"));
    // The console's reader and the guest channel still work.
    let out = t.run(r#"guest::run_ok(vm, "echo after")"#, PROMPT);
    assert!(out.ends_with("\nafter"), "{out}");
    let out = t.run(r#"vm.console_socket().output().contains("42")"#, PROMPT);
    assert!(out.ends_with("\ntrue"), "{out}");
    let pid = pid_of(&t.run(":vms", PROMPT), "vm0");
    t.press("C-d");
    t.wait_for("[exit 1]");
    assert!(!pid_exists(pid));
    drop(t);
    w.assert_clean();
}

#[test]
fn repl_console_attaches_in_vmscript_repl_too_and_ctrl_bracket_returns() {
    let w = World::new();
    let tmp = w.tmp();
    let state = w.dir("state");
    let mark = Path::new(w.mark());
    let t = Terminal::start(
        &[vmscript(), "repl", "--qemu", QEMU],
        &[
            ("TMPDIR", &tmp),
            ("VMSCRIPT_TEST_MARK", mark),
            ("XDG_STATE_HOME", &state),
        ],
    );
    t.wait_for(PROMPT);
    t.run(
        r#"let vm = machine(#{args: ["-accel", "tcg", "-M", "pc", "-nodefaults", "-m", "64"]})"#,
        PROMPT,
    );
    t.run("vm.set_console(); vm.launch()", PROMPT);
    let before = t.screen().trim_end().len();
    t.line(":console vm0");
    t.wait_for_after(
        before,
        "[attached to vm0's console; Ctrl-] returns to the prompt]",
    );
    // Keys go to the guest, not to the REPL: no prompt comes back.
    t.burst("1 + 1\r");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.wait_for_after(before, "attached").contains("\n2\n"));
    t.press("C-]");
    t.wait_for_after(before, "[detached from vm0's console]");
    let out = t.run("vm.is_running()", PROMPT);
    assert!(out.ends_with("\ntrue"), "{out}");
    let pid = pid_of(&t.run(":vms", PROMPT), "vm0");
    t.press("C-d");
    t.wait_for("[exit 0]");
    assert!(!pid_exists(pid));
    drop(t);
    w.assert_clean();
}
