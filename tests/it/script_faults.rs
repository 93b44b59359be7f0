//! Faults injected while `vmscript run` runs scripts: QEMU SIGKILLed or
//! SIGSTOPped while a script waits on it, scripts that never end or take
//! all the memory, artifacts on a full or read-only disk. Each test checks
//! what the report says, that the other tests of the same run were not
//! affected, and that no process, temp folder, socket or descriptor was
//! left. (tests/it/faults.rs does the same for the machine layer.)

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::secs;
use crate::common::world::*;

/// The line number (1-based) of the first line of `script` that contains `needle`.
fn line_of(script: &str, needle: &str) -> usize {
    script
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the script"))
        + 1
}

/// b.rhai of the SIGKILL tests: after a.rhai's fault, the same vmscript
/// has its descriptors back and still runs machines.
const AFTER: &str = r#"
let base = parse_int(read_file(param("state") + "/fds"));
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
assert_eq(vm.command("query-status").status, "running");
vm.shutdown();
assert_eq(vmscript_fds(), base, "vmscript's descriptors after the fault");
"#;

/// Runs a.rhai, which launches a machine (after `setup`), prints its pid
/// and `waiting`, then blocks in `wait` for 30 s or more; SIGKILLs that
/// QEMU; returns the line of the report that gives a.rhai's error, after
/// checking that the run ended promptly, that b.rhai passed, and that
/// nothing was left.
fn sigkill_while(setup: &str, wait: &str) -> String {
    let w = World::new();
    let state = w.dir("state");
    let a = format!(
        "{PROBE}\nwrite_file(param(\"state\") + \"/fds\", `${{vmscript_fds()}}`);\n\
         let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.set_console();\nvm.launch();\n\
         {setup}\nprint(`pid ${{vm.get_pid()}}`);\nprint(\"waiting\");\n{wait}\n"
    );
    w.script("a.rhai", &a);
    w.script("b.rhai", &format!("{PROBE}{AFTER}"));
    let state_param = format!("state={}", state.display());
    let mut run = w.spawn(&[
        "run",
        "-j",
        "1",
        "--no-capture",
        "--timeout",
        "60",
        "a.rhai",
        "b.rhai",
        "--",
        &state_param,
    ]);
    run.until("waiting");
    let pid = run.pids()[0];
    // Let the script get into its wait.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    signal(pid, libc::SIGKILL);
    let (code, out, err) = run.finish();
    let took = killed.elapsed();
    // Well before the 30 s wait would have ended, on a loaded machine too.
    assert!(took < Duration::from_secs(25), "took {took:?}:\n{out}");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("\nPASS b.rhai"), "{out}");
    assert!(out.contains("1 passed, 1 failed, 0 skipped"), "{out}");
    assert!(!is_qemu(pid));
    w.assert_clean();
    let at = format!("a.rhai:{}:", line_of(&a, wait));
    line_with(&out, &at).to_string()
}

#[test]
fn qemu_sigkilled_during_a_qmp_command_fails_the_command_at_once() {
    // A stopped QEMU never answers, so the command is surely in its wait.
    let line = sigkill_while(
        "run_host([\"kill\", \"-STOP\", `${vm.get_pid()}`]);",
        "vm.command(\"query-status\");",
    );
    assert!(
        line.contains(
            "QEMUMachineError: QEMU exited with code -9 while waiting for the reply to query-status"
        ),
        "{line}"
    );
}

#[test]
fn qemu_sigkilled_during_an_event_wait_fails_the_wait_at_once() {
    let line = sigkill_while("", "vm.event_wait(\"NEVER\", 30);");
    assert!(
        line.contains("QEMUMachineError: QEMU exited with code -9 while waiting for event NEVER"),
        "{line}"
    );
}

#[test]
fn qemu_sigkilled_during_get_qmp_event_forever_fails_it_at_once() {
    let line = sigkill_while("", "vm.get_qmp_event(true);");
    assert!(
        line.contains("QEMUMachineError: QEMU exited with code -9 while waiting for an event"),
        "{line}"
    );
}

#[test]
fn qemu_sigkilled_during_a_console_wait_fails_the_wait_at_once() {
    let line = sigkill_while("", "vm.wait_for_console_pattern(\"never\");");
    assert!(
        line.contains(
            "QEMUMachineError: QEMU exited with code -9 while waiting for \"never\" on the console"
        ),
        "{line}"
    );
    let line = sigkill_while(
        "let con = vm.console_socket();",
        "con.wait_for(\"never\", 30);",
    );
    assert!(
        line.contains("ConsoleError: console closed while waiting for"),
        "{line}"
    );
}

#[test]
fn qemu_sigkilled_mid_launch_is_a_launch_failure_and_takes_its_group_along() {
    let w = World::new();
    let state = w.dir("state");
    // The wrapper stands for a QEMU that is slow to start; it and its
    // `sleep` child hold the monitor socket until both are gone.
    let a = format!(
        "{PROBE}\nwrite_file(param(\"state\") + \"/fds\", `${{vmscript_fds()}}`);\n\
         let vm = machine((), #{{ wrapper: [\"sh\", \"-c\", \"sleep 30; exec \\\"$@\\\"\", \"sh\"] }});\n\
         vm.add_args(\"-M\", \"none\");\nprint(\"launching\");\nvm.launch();\n"
    );
    w.script("a.rhai", &a);
    w.script("b.rhai", &format!("{PROBE}{AFTER}"));
    let state_param = format!("state={}", state.display());
    let mut run = w.spawn(&[
        "run",
        "-j",
        "1",
        "--no-capture",
        "a.rhai",
        "b.rhai",
        "--",
        &state_param,
    ]);
    run.until("launching");
    let vmscript = run.child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    let wrapper = loop {
        if let Some(&p) = children_of(vmscript, "sleep 30").first() {
            break p;
        }
        assert!(Instant::now() < deadline, "the wrapper never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    signal(wrapper, libc::SIGKILL);
    let (code, out, err) = run.finish();
    assert!(killed.elapsed() < Duration::from_secs(25), "{out}");
    assert_eq!(code, Some(1), "{out}{err}");
    let line = line_with(&out, &format!("a.rhai:{}:", line_of(&a, "vm.launch()")));
    assert!(
        line.contains("VMLaunchFailure: failed to launch QEMU"),
        "{line}"
    );
    assert!(line.contains("exit code -9"), "{line}");
    assert!(out.contains("\nPASS b.rhai"), "{out}");
    w.assert_clean();
}

#[test]
fn a_stopped_qemu_times_out_every_wait_and_shutdown_escalates_to_sigkill() {
    let w = World::new();
    // Every wait on a SIGSTOPped QEMU ends at its own timeout (1 s).
    w.script(
        "a_waits.rhai",
        &format!(
            "{PROBE}{}",
            r#"
let base = vmscript_fds();
let vm = machine();
vm.add_args("-M", "none");
vm.set_console();
vm.launch();
let pid = vm.get_pid();
print(`pid ${pid}`);
let con = vm.console_socket();
run_host(["kill", "-STOP", `${pid}`]);
let waits = [
    ["event_wait", || vm.event_wait("NEVER", 1)],
    ["events_wait", || vm.events_wait([["A", ()], ["B", ()]], 1)],
    ["wait_for_console_pattern", || vm.wait_for_console_pattern("never", (), 1)],
    ["con.wait_for", || con.wait_for("never", 1)],
    ["con.wait_for_regex", || con.wait_for_regex("nev+er", 1)],
    ["con.expect", || con.expect(["a1", "b2"], 1)],
    ["wait_until", || wait_until(|| vm.get_qmp_event(false) != (), 1)],
];
for w in waits {
    let t0 = now();
    try {
        w[1].call();
        fail(`${w[0]} returned`);
    } catch (e) {
        assert_eq(e.kind, "Timeout", `${w[0]}: ${e.message}`);
    }
    let took = now() - t0;
    assert(took >= 0.9 && took < 10.0, `${w[0]} took ${took}s`);
}
let t0 = now();
try {
    vm.get_qmp_event(1.0);
    fail("get_qmp_event(1.0) returned");
} catch (e) {
    assert_eq(e.kind, "Timeout", e.message);
}
assert(now() - t0 >= 0.9 && now() - t0 < 10.0);
let t0 = now();
try {
    vm.shutdown(#{ timeout: 1 });
    fail("shutdown of a stopped QEMU succeeded");
} catch (e) {
    assert_eq(e.kind, "AbnormalShutdown", e.message);
    print(`shutdown: ${e.message}`);
}
let took = now() - t0;
assert(took < 10.0, `shutdown took ${took}s`);
assert_eq(vm.exitcode(), -9);
assert(!vm.is_running());
// The console's socket goes with the last handle on it.
waits = ();
con = ();
assert_eq(vmscript_fds(), base, "vmscript's descriptors");
"#
        ),
    );
    // A QMP command has no timeout of its own but the test's.
    let b = r#"
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
print(`pid ${vm.get_pid()}`);
run_host(["kill", "-STOP", `${vm.get_pid()}`]);
vm.command("query-status");
"#;
    w.script("b_command.rhai", b);
    // wait() on a stopped QEMU ends at its timeout and kills it.
    w.script(
        "c_wait.rhai",
        r#"
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
print(`pid ${vm.get_pid()}`);
run_host(["kill", "-STOP", `${vm.get_pid()}`]);
let t0 = now();
try { vm.wait(1); fail("wait returned"); } catch (e) { assert_eq(e.kind, "AbnormalShutdown", e.message); }
assert(now() - t0 < 3.0);
assert_eq(vm.exitcode(), -9);
"#,
    );
    // A stopped QEMU left running at the end is killed by the cleanup.
    w.script(
        "d_left.rhai",
        r#"
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
print(`pid ${vm.get_pid()}`);
run_host(["kill", "-STOP", `${vm.get_pid()}`]);
"#,
    );
    let start = Instant::now();
    let o = w.run(&[
        "run",
        "-j",
        "1",
        "--no-capture",
        "--timeout",
        "30",
        "--filter",
        "_w",
        "--filter",
        "_l",
        ".",
    ]);
    let took = start.elapsed();
    let mut out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("PASS ")).count(),
        3,
        "{out}"
    );
    // 7 waits and a shutdown of 1 s, a 1 s wait, a 1 s final grace, and
    // the launches; slack for a loaded machine, far below the 300 s at
    // which a wait that never ends would be stopped.
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let start = Instant::now();
    let o = w.run(&["run", "--no-capture", "--timeout", "3", "b_command.rhai"]);
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
    out.push_str(&stdout(&o));
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let line = line_with(
        &out,
        &format!("b_command.rhai:{}:", line_of(b, "query-status")),
    );
    assert!(
        line.contains("Timeout: the test timed out after 3s"),
        "{line}"
    );
    let pids = printed_pids(&out);
    assert_eq!(pids.len(), 4, "{out}");
    for p in pids {
        assert!(!is_qemu(p), "QEMU {p} outlived its test");
    }
    w.assert_clean();
}

/// A test that launches a machine, commands it and checks vmscript's
/// descriptors against the baseline 0_base.rhai wrote.
const HEALTHY: &str = r#"
let base = parse_int(read_file(param("state") + "/fds"));
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
assert_eq(vm.command("query-status").status, "running");
vm.shutdown();
// Memory the runaway tests took is free again: this fits under the limit.
let s = "0123456789abcdef";
for i in 0..22 { s += s; }
assert_eq(s.len, 64 * 1024 * 1024);
assert_eq(vmscript_fds(), base, "vmscript's descriptors");
"#;

#[test]
fn runaway_scripts_stop_at_their_limits_and_the_other_tests_still_pass() {
    let w = World::new();
    let state = w.dir("state");
    w.script(
        "t/0_base.rhai",
        &format!("{PROBE}\nwrite_file(param(\"state\") + \"/fds\", `${{vmscript_fds()}}`);\n"),
    );
    w.script("t/1_loop.rhai", "let n = 0;\nloop { n += 1; }\n");
    w.script("t/2_healthy.rhai", &format!("{PROBE}{HEALTHY}"));
    // Catching every error does not catch the timeout.
    w.script(
        "t/3_swallow.rhai",
        "loop {\n    try { sleep(10); } catch (e) { }\n}\n",
    );
    w.script(
        "t/4_recursion.rhai",
        "fn down(n) { down(n + 1) }\ndown(0);\n",
    );
    w.script("t/5_healthy.rhai", &format!("{PROBE}{HEALTHY}"));
    w.script(
        "t/6_hog.rhai",
        "let s = \"abcdefgh\";\nlet all = [];\nloop { s += s; all.push(s); }\n",
    );
    w.script("t/7_healthy.rhai", &format!("{PROBE}{HEALTHY}"));
    // A loop with a machine running: the timeout kills it too.
    w.script(
        "t/8_loop_with_machine.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nprint(`pid ${vm.get_pid()}`);\nloop { }\n",
    );
    w.script("t/9_healthy.rhai", &format!("{PROBE}{HEALTHY}"));
    let state_param = format!("state={}", state.display());
    let start = Instant::now();
    let o = w
        .command(&["run", "-j", "1", "--timeout", "4", "t", "--", &state_param])
        .env("VMSCRIPT_MAX_MEMORY_MB", "256")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(start.elapsed() < Duration::from_secs(60), "{out}");
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    for ok in ["0_base", "2_healthy", "5_healthy", "7_healthy", "9_healthy"] {
        assert!(out.contains(&format!("PASS t/{ok}.rhai")), "{ok}:\n{out}");
    }
    let timeout = "Timeout: the test timed out after 4s";
    assert!(
        line_with(&out, "t/1_loop.rhai:2:").contains(timeout),
        "{out}"
    );
    assert!(
        line_with(&out, "t/3_swallow.rhai:2:").contains(timeout),
        "{out}"
    );
    assert!(
        line_with(&out, "t/8_loop_with_machine.rhai:5:").contains(timeout),
        "{out}"
    );
    let rec = line_with(&out, "t/4_recursion.rhai:");
    assert!(
        rec.contains("ScriptError") && rec.contains("Stack overflow"),
        "{rec}"
    );
    let hog = line_with(&out, "t/6_hog.rhai:3:");
    assert!(
        hog.contains("HostError") && hog.contains("over the limit of 256 MiB"),
        "{hog}"
    );
    assert!(out.contains("5 passed, 5 failed, 0 skipped"), "{out}");
    w.assert_clean();
}

/// Two small tests around one that fills the disk: the first's artifacts
/// stay whole; the filler and the one after it fail, saying what was lost.
#[test]
fn a_full_artifacts_disk_is_a_clear_error_and_spares_earlier_artifacts() {
    let w = World::new();
    let Some(disk) = Tmpfs::mount(&w.path().join("art"), "size=64k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let small = "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n\
                 vm.command(\"query-status\");\nprint(\"hello\");\nvm.shutdown();\n";
    w.script("t/a_first.rhai", small);
    let fill = "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n\
                let s = \"0123456789abcdef\";\nfor i in 0..13 { s += s; }\n\
                write_file(vm.log_dir + \"/big.bin\", s);\n";
    w.script("t/b_fill.rhai", fill);
    w.script("t/c_after.rhai", small);
    let art = disk.path.display().to_string();
    let o = w.run(&["run", "-j", "1", "--artifacts", &art, "t"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("PASS t/a_first.rhai"), "{out}");
    let at = format!("t/b_fill.rhai:{}:", line_of(fill, "write_file"));
    let line = line_with(&out, &at);
    assert!(
        line.contains("HostError: write_file: ") && line.contains("No space left on device"),
        "{line}"
    );
    let line = line_with(&out, "t/c_after.rhai: HostError");
    assert!(
        line.contains("the test's artifacts could not all be written")
            && line.contains("script.log: No space left on device"),
        "{line}"
    );
    assert!(out.contains("1 passed, 2 failed, 0 skipped"), "{out}");
    // The first test's artifacts are whole.
    let first = std::fs::read_dir(&disk.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("a_first"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(first.join("script.log")).unwrap(),
        "hello\n"
    );
    let transcript = std::fs::read_to_string(first.join("vm0.qmp.jsonl")).unwrap();
    assert!(transcript.lines().count() >= 4, "{transcript}");
    for l in transcript.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    assert!(first.join("vm0.log").exists());
    w.assert_clean();
}

#[test]
fn a_read_only_artifacts_folder_is_one_clear_setup_error() {
    let w = World::new();
    let Some(disk) = Tmpfs::mount(&w.path().join("ro"), "ro,size=64k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    w.script(
        "t/a.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n",
    );
    let art = disk.path.display().to_string();
    let o = w.run(&["run", "--artifacts", &art, "t"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vmscript: error: creating ") && err.contains("Read-only file system"),
        "{err}"
    );
    assert!(!stdout(&o).contains("PASS"), "{}", stdout(&o));
    w.assert_clean();
    drop(disk);
    assert!(!Path::new(&art).join("t_a").exists());
}

/// Runs vmscript with `args` (and `env`), SIGKILLing it if it has not
/// ended after `limit`: (exit code, stdout, stderr, how long it took).
fn run_within(
    w: &World,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String, Duration) {
    use std::io::Read;
    let start = Instant::now();
    let mut child = w
        .command(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    (code, out.join().unwrap(), err.join().unwrap(), took)
}

#[test]
fn run_host_returns_when_its_command_exits_though_a_background_child_holds_the_pipes() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
let t = now();
let r = run_host(["sh", "-c", "sleep 40 & echo started"], #{timeout: 30});
let took = now() - t;
print(`took ${took}`);
assert_eq(r.status, 0);
assert_eq(r.stdout, "started\n");
assert(took < 10.0, `run_host took ${took}s`);
"#,
    );
    let (code, out, err, took) = run_within(&w, &["run", "t.rhai"], &[], secs(30.0));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(took < secs(25.0), "took {took:?}");
    // The background `sleep 40` was killed when the script ended.
    w.assert_clean();
}

#[test]
fn run_host_timeout_ends_the_call_though_an_escaped_grandchild_holds_the_pipes() {
    let w = World::new();
    // `setsid` takes the grandchild out of the command's process group,
    // so killing the group leaves it, holding the pipes.
    w.script(
        "t.rhai",
        r#"
let t = now();
try {
    run_host(["sh", "-c", "setsid sleep 40 & sleep 30"], #{timeout: 2});
    fail("no timeout");
} catch (e) {
    assert_eq(e.kind, "Timeout", e.message);
}
let took = now() - t;
assert(took >= 2.0 && took < 12.0, `run_host took ${took}s`);
"#,
    );
    let (code, out, err, took) = run_within(&w, &["run", "t.rhai"], &[], secs(30.0));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(took < secs(25.0), "took {took:?}");
    w.assert_clean();
}

#[test]
fn the_test_timeout_ends_run_host_and_everything_it_started() {
    let w = World::new();
    w.script(
        "t.rhai",
        "run_host([\"sh\", \"-c\", \"sleep 50 & setsid sleep 40 & sleep 30\"]);\n",
    );
    let (code, out, err, took) =
        run_within(&w, &["run", "--timeout", "3", "t.rhai"], &[], secs(30.0));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(took < secs(25.0), "took {took:?}");
    assert!(
        line_with(&out, "t.rhai:1:").contains("Timeout: the test timed out after 3s"),
        "{out}"
    );
    w.assert_clean();
}

#[test]
fn a_qemu_that_run_host_leaves_in_the_background_is_killed_at_the_end() {
    let w = World::new();
    let pidfile = w.path().join("daemon.pid");
    // One QEMU left behind by `&`, one that daemonizes itself (it forks,
    // leaves its parent and calls setsid).
    let script = format!(
        r#"
let r = run_host(["sh", "-c", "qemu-system-x86_64 -M none -display none -nodefaults -S & echo $!"]);
let s = r.stdout;
s.trim();
print(`pid ${{s}}`);
run_host(["qemu-system-x86_64", "-M", "none", "-display", "none", "-nodefaults", "-S",
          "-daemonize", "-pidfile", "{}"]);
let d = read_file("{}");
d.trim();
print(`pid ${{d}}`);
"#,
        pidfile.display(),
        pidfile.display()
    );
    w.script("t.rhai", &script);
    let (code, out, err, _) = run_within(&w, &["run", "--no-capture", "t.rhai"], &[], secs(60.0));
    assert_eq!(code, Some(0), "{out}{err}");
    let pids = printed_pids(&out);
    assert_eq!(pids.len(), 2, "{out}");
    for p in pids {
        assert!(!is_qemu(p), "QEMU {p} outlived its test");
    }
    w.assert_clean();
}

#[test]
fn a_host_command_dies_with_a_sigkilled_vmscript() {
    let w = World::new();
    w.script(
        "t.rhai",
        "print(\"waiting\");\nrun_host([\"sleep\", \"40\"]);\n",
    );
    let mut run = w.spawn(&["run", "--no-capture", "t.rhai"]);
    run.until("waiting");
    std::thread::sleep(Duration::from_millis(500));
    signal(run.child.id() as i32, libc::SIGKILL);
    let (code, _, _) = run.finish();
    assert_eq!(code, None);
    assert_eq!(
        w.survivors(),
        Vec::<i32>::new(),
        "the command outlived vmscript"
    );
}

#[test]
fn reads_and_captured_output_stop_at_the_memory_limit_naming_what_was_read() {
    let w = World::new();
    let big = w.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    w.script("a.rhai", &format!("read_file(\"{}\");\n", big.display()));
    w.script("b.rhai", "run_host([\"yes\"], #{timeout: 20});\n");
    w.script("c.rhai", "read_file(\"/dev/zero\");\n");
    let env = [("VMSCRIPT_MAX_MEMORY_MB", "256")];
    for (name, what) in [
        (
            "a.rhai",
            format!("read_file: {}: stopped after", big.display()),
        ),
        (
            "b.rhai",
            "run_host: [\"yes\"] was stopped after".to_string(),
        ),
        ("c.rhai", "read_file: /dev/zero: stopped after".to_string()),
    ] {
        let (code, out, err, took) = run_within(&w, &["run", name], &env, secs(60.0));
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(took < secs(20.0), "{name} took {took:?}");
        let line = line_with(&out, &format!("{name}:1:"));
        assert!(
            line.contains("HostError")
                && line.contains(&what)
                && line.contains("over the limit of 256 MiB"),
            "{line}"
        );
    }
    w.assert_clean();
}

#[test]
fn a_long_read_ends_at_the_test_timeout() {
    let w = World::new();
    let fifo = w.path().join("fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo on a path in this test's folder.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A writer that never ends, a little at a time.
    w.script(
        "t.rhai",
        &format!(
            "run_host([\"sh\", \"-c\", \"(while true; do echo x; sleep 0.01; done) > {} &\"]);\nread_file(\"{}\");\n",
            fifo.display(),
            fifo.display()
        ),
    );
    let (code, out, err, took) =
        run_within(&w, &["run", "--timeout", "3", "t.rhai"], &[], secs(30.0));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(took < secs(25.0), "took {took:?}");
    assert!(
        line_with(&out, "t.rhai:2:").contains("Timeout: the test timed out after 3s"),
        "{out}"
    );
    w.assert_clean();
}

#[test]
fn the_test_timeout_inside_try_is_reported_at_the_wait_naming_what_it_awaited() {
    let w = World::new();
    let event = r#"let vm = machine();
vm.add_args("-M", "none");
vm.launch();
try {
    vm.event_wait("NEVER", 100);
} catch (e) {
    print("caught");
}
"#;
    let console = r#"let vm = machine();
vm.add_args("-M", "none");
vm.set_console();
vm.launch();
let con = vm.console_socket();
try {
    con.wait_for("never", 100);
} catch (e) {
    print("caught");
}
"#;
    // Without a timeout of its own, a wait lasts until the test's timeout
    // ends it: the report names the timeout, not the wait's end as well.
    let until_timeout = r#"let vm = machine();
vm.add_args("-M", "none");
vm.set_console();
vm.launch();
vm.wait_for_console_pattern("never");
"#;
    w.script("t/event.rhai", event);
    w.script("t/console.rhai", console);
    w.script("t/until_timeout.rhai", until_timeout);
    let (code, out, err, took) = run_within(
        &w,
        &["run", "--no-capture", "--timeout", "3", "t"],
        &[],
        secs(60.0),
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(took < secs(30.0), "took {took:?}");
    assert!(!out.contains("caught"), "a catch block ran:\n{out}");
    let line = line_with(&out, "t/event.rhai:5:");
    assert!(
        line.contains("Timeout: the test timed out after 3s, waiting for event NEVER"),
        "{out}"
    );
    let line = line_with(&out, "t/console.rhai:7:");
    assert!(
        line.contains("Timeout: the test timed out after 3s, waiting for"),
        "{out}"
    );
    let line = line_with(&out, "t/until_timeout.rhai:5:");
    assert!(
        line.contains("Timeout: the test timed out after 3s, waiting for \"never\" on the console"),
        "{out}"
    );
    assert!(!out.contains("the call it stopped"), "{out}");
    w.assert_clean();
}

#[test]
fn the_test_timeout_ends_a_wait_on_the_guest_agent_at_once_naming_it() {
    let w = World::new();
    // A paused machine with the agent's port: nothing in it ever answers,
    // so the first look for the agent waits (5 s) and the command (60 s)
    // never gets a reply.
    let agent = |call: &str| {
        format!(
            r#"let vm = machine();
vm.add_args("-M", "pc", "-nodefaults", "-S");
vm.set_guest_agent();
vm.launch();
{call};
"#
        )
    };
    w.script(
        "t/first_look.rhai",
        &agent(r#"vm.guest_agent_run("sleep 100", 200, 1000)"#),
    );
    let (code, out, err, _) = run_within(
        &w,
        &["run", "--no-capture", "--timeout", "2", "t"],
        &[],
        secs(60.0),
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let line = line_with(&out, "t/first_look.rhai:5:");
    assert!(
        line.contains(
            "Timeout: the test timed out after 2s, waiting for the guest agent to answer"
        ),
        "{out}"
    );
    assert!(!out.contains("port closed"), "{out}");
    w.assert_clean();
}
