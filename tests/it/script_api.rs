//! The `vmscript` binary on small scripts against real QEMU: the API self
//! test, error reports, the cleanup guarantee under errors, timeouts and
//! SIGTERM, and the `check` and `doc` commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::{is_qemu_process, printed_pids, sockets_below, stderr, stdout, World};

const THREE_MACHINES: &str = r#"
for i in 0..3 {
    let vm = machine();
    vm.add_args("-M", "none");
    vm.launch();
    print(`pid ${vm.get_pid()}`);
}
"#;

#[test]
fn the_api_self_test_passes() {
    let w = World::new();
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/examples/api.rhai");
    let o = w.run(&["run", api.to_str().unwrap(), "--", "api_param=42"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).ends_with("1 passed, 0 failed, 0 skipped\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_uncaught_error_reports_file_line_column_kind_and_message() {
    let w = World::new();
    w.script(
        "t.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n   vm.command(\"no-such-command\");\n",
    );
    let o = w.run(&["run", "t.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.starts_with("FAIL t.rhai ("), "{out}");
    assert!(
        out.contains("\n    t.rhai:4:7: MonitorResponseError: no-such-command: CommandNotFound: The command no-such-command has not been found\n"),
        "{out}"
    );
    assert!(out.contains("artifacts: "), "{out}");
    assert!(out.ends_with("0 passed, 1 failed, 0 skipped\n"), "{out}");
}

#[test]
fn errors_inside_functions_point_into_the_function() {
    let w = World::new();
    w.script(
        "t.rhai",
        "fn check(x) {\n    assert_eq(x, 2, \"x is two\");\n}\ncheck(1);\n",
    );
    let out = stdout(&w.run(&["run", "t.rhai"]));
    assert!(
        out.contains("    t.rhai:2:5: AssertionFailed: x is two\n"),
        "{out}"
    );
    assert!(out.contains("      left: 1\n     right: 2\n"), "{out}");
    assert!(
        out.contains("in function check called at t.rhai:4:1"),
        "{out}"
    );
}

#[test]
fn a_throw_with_three_machines_running_leaves_no_qemu_socket_or_temp_dir() {
    let w = World::new();
    w.script("t.rhai", &format!("{THREE_MACHINES}\nthrow \"boom\";\n"));
    let o = w.run(&["run", "t.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("t.rhai:9:1: ScriptError: boom"), "{out}");
    let pids = printed_pids(&out);
    assert_eq!(pids.len(), 3, "{out}");
    for p in pids {
        assert!(!is_qemu_process(p), "QEMU {p} outlived the script");
    }
    assert_eq!(w.leftovers(), Vec::<String>::new());
    assert_eq!(sockets_below(&w.tmp()), Vec::<PathBuf>::new());
    // The logs stay with the artifacts of the failed test.
    let art = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("artifacts: "))
        .unwrap();
    for vm in ["vm0", "vm1", "vm2"] {
        assert!(Path::new(art).join(format!("{vm}.log")).exists());
        assert!(Path::new(art).join(format!("{vm}.qmp.jsonl")).exists());
    }
}

#[test]
fn a_passing_test_leaves_nothing_behind() {
    let w = World::new();
    w.script("t.rhai", THREE_MACHINES);
    let o = w.run(&["run", "t.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let entries: Vec<_> = std::fs::read_dir(w.tmp()).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn the_timeout_stops_a_pure_rhai_loop() {
    let w = World::new();
    w.script("t.rhai", "let n = 0;\nloop { n += 1; }\n");
    w.script(
        "c.rhai",
        "fn test_spin() {\n    let n = 0;\n    loop { n += 1; }\n}\n",
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "2", "t.rhai", "c.rhai"]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("t.rhai:2:") && out.contains(": Timeout: the test timed out after 2s\n"),
        "{out}"
    );
    assert!(
        out.contains("c.rhai: Timeout: the test timed out after 2s\n      in test_spin\n"),
        "{out}"
    );
    // The watchdog's interrupt is the timeout, not a Ctrl-C.
    assert!(!out.contains("Ctrl-C"), "{out}");
}

#[test]
fn the_timeout_stops_a_blocking_event_wait() {
    let w = World::new();
    w.script(
        "t.rhai",
        &format!("{THREE_MACHINES}\nlet vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nprint(`pid ${{vm.get_pid()}}`);\nvm.event_wait(\"NEVER\", 60);\n"),
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "2", "t.rhai"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("t.rhai:13:4: Timeout: the test timed out after 2s"),
        "{out}"
    );
    for p in printed_pids(&out) {
        assert!(!is_qemu_process(p), "QEMU {p} outlived the script");
    }
    assert_eq!(w.leftovers(), Vec::<String>::new());
}

#[test]
fn the_timeout_stops_sleep_wait_until_and_run_host() {
    let w = World::new();
    w.script("a.rhai", "sleep(60);\n");
    w.script("b.rhai", "wait_until(|| false, 60);\n");
    w.script("c.rhai", "run_host([\"sleep\", \"60\"]);\n");
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "1", "."]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let out = stdout(&o);
    assert_eq!(
        out.matches("Timeout: the test timed out after 1s").count(),
        3,
        "{out}"
    );
    assert!(out.ends_with("0 passed, 3 failed, 0 skipped\n"), "{out}");
}

#[test]
fn sigterm_to_vmscript_leaves_no_qemu() {
    let w = World::new();
    w.script(
        "t.rhai",
        &format!("{THREE_MACHINES}\nprint(\"ready\");\nsleep(60);\n"),
    );
    let mut child = w
        .command(&["run", "--no-capture", "t.rhai"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l == "ready" {
            break;
        }
        pids.extend(printed_pids(&l));
    }
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| is_qemu_process(p)));
    let start = Instant::now();
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Interrupted")), "{rest:?}");
    for p in pids {
        assert!(!is_qemu_process(p), "QEMU {p} outlived vmscript");
    }
    assert_eq!(w.leftovers(), Vec::<String>::new());
}

#[test]
fn check_reports_a_syntax_error_position() {
    let w = World::new();
    w.script("good.rhai", "let x = 1;\n");
    w.script("bad.rhai", "let x = 1;\nlet y = (x + ;\n");
    let o = w.run(&["check", "."]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("bad.rhai:2:14: SyntaxError: "), "{out}");
    assert!(!out.contains("good.rhai"), "{out}");
    assert!(w.run(&["check", "good.rhai"]).status.success());
}

#[test]
fn a_missing_qemu_binary_is_one_clear_line() {
    let w = World::new();
    w.script("t.rhai", "machine();\n");
    let o = w.run(&["run", "--qemu", "/nonexistent/qemu-system-x86_64", "t.rhai"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/qemu-system-x86_64"), "{err}");
    assert!(
        err.contains("--qemu") && err.contains("VMSCRIPT_QEMU"),
        "{err}"
    );

    let o = w
        .command(&["run", "t.rhai"])
        .env("VMSCRIPT_QEMU", "/nonexistent/qemu-from-env")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/qemu-from-env"), "{err}");

    // Without --qemu or $VMSCRIPT_QEMU, the default is looked up when a
    // script asks for a machine.
    let o = w
        .command(&["run", "t.rhai"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("t.rhai:1:1: QEMUMachineError: QEMU binary qemu-system-"),
        "{out}"
    );
    assert!(
        out.contains("not found in $PATH; pass --qemu BINARY or set VMSCRIPT_QEMU"),
        "{out}"
    );
}

#[test]
fn doc_lists_every_function_with_its_signature_and_doc() {
    let w = World::new();
    let o = w.run(&["doc"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for sig in [
        "event_wait(vm: Machine, name: String, timeout: secs, match: Map) -> Map",
        "machine(binary: String, options: Map) -> Machine",
        "run_host(argv: Array, options: Map) -> Map",
        "wait_until(f: FnPtr, timeout: secs, interval: secs)",
        "Machine.full_args -> Array",
        "expect(con: Console, patterns: Array, timeout: secs) -> int",
    ] {
        assert!(out.contains(&format!("{sig}\n")), "{sig} missing");
    }
    assert!(out.contains("    Waits up to 60s for event `name`; Timeout otherwise.\n"));
}

#[test]
fn skip_ends_the_test_as_skipped_even_inside_try() {
    let w = World::new();
    w.script(
        "t.rhai",
        "try { skip(\"no guest here\"); } catch (e) { fail(\"caught\"); }\n",
    );
    let o = w.run(&["run", "t.rhai"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "SKIP t.rhai: no guest here\n0 passed, 0 failed, 1 skipped\n"
    );
}

#[test]
fn output_is_captured_unless_no_capture() {
    let w = World::new();
    w.script(
        "t.rhai",
        "print(\"hello from print\");\nlog(\"hello from log\");\n",
    );
    let out = stdout(&w.run(&["run", "t.rhai"]));
    assert!(!out.contains("hello"), "{out}");
    let out = stdout(&w.run(&["run", "--no-capture", "t.rhai"]));
    assert!(out.starts_with("hello from print\n["), "{out}");
    assert!(out.contains("s] hello from log\n"), "{out}");
}

#[test]
fn folders_run_sorted_outside_lib_with_filter_fail_fast_and_params() {
    let w = World::new();
    w.script("t/b.rhai", "assert_eq(param(\"who\"), \"me\");\n");
    w.script("t/a.rhai", "fail(\"a fails\");\n");
    w.script("t/lib/helper.rhai", "fail(\"modules are not tests\");\n");
    w.script(
        "t/c.rhai",
        "import \"helper2\" as h;\nassert_eq(h::two(), 2);\n",
    );
    w.script("t/helper2.rhai", "fn two() { 2 }\n");
    // One at a time: tests that run at once are reported as they end.
    let o = w.run(&["run", "-j", "1", "t", "--", "who=me"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let order: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        order,
        [
            "FAIL t/a.rhai",
            "PASS t/b.rhai",
            "PASS t/c.rhai",
            "PASS t/helper2.rhai",
            "3 passed,"
        ]
    );
    let out = stdout(&w.run(&["run", "t", "--filter", "b.rhai", "--", "who=me"]));
    assert!(out.ends_with("1 passed, 0 failed, 0 skipped\n"), "{out}");
    let out = stdout(&w.run(&["run", "-j", "1", "--fail-fast", "t"]));
    assert!(
        out.ends_with("3 not run\n0 passed, 1 failed, 0 skipped\n"),
        "{out}"
    );
    // --lib folders are searched by import.
    w.script("mods/three.rhai", "fn three() { 3 }\n");
    w.script(
        "u/d.rhai",
        "import \"three\" as t;\nassert_eq(t::three(), 3);\n",
    );
    let o = w.run(&["run", "--lib", "mods", "u"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let o = w.run(&["run", "t", "--", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
    let o = w.run(&["run", "nonexistent.rhai"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn deep_recursion_is_a_clear_error_not_a_crash() {
    let w = World::new();
    w.script(
        "deep.rhai",
        "fn down(n) { if n == 0 { 0 } else { 1 + down(n - 1) } }\n\
         assert_eq(down(100), 100);\n\
         fn forever(n) { forever(n + 1) }\n\
         forever(0);\n",
    );
    let o = w.run(&["run", "deep.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("deep.rhai:4:1") && out.contains("Stack overflow"),
        "{out}"
    );
}

#[test]
fn unbounded_allocation_stops_at_the_memory_limit() {
    let w = World::new();
    w.script(
        "hog.rhai",
        "let s = \"abcdefgh\";\nlet all = [];\nloop { s += s; all.push(s); }\n",
    );
    let start = Instant::now();
    let o = w
        .command(&["run", "hog.rhai"])
        .env("VMSCRIPT_MAX_MEMORY_MB", "256")
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("hog.rhai:3:")
            && out.contains("HostError")
            && out.contains("limit of 256 MiB"),
        "{out}"
    );
}

/// Runs `text` as one test and asserts that it passed.
fn passes(w: &World, text: &str) -> Output {
    w.script("t.rhai", text);
    let o = w.run(&["run", "t.rhai", "--artifacts", "art"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    o
}

#[test]
fn cmd_is_command_under_the_name_qemumachine_uses() {
    let w = World::new();
    passes(
        &w,
        r#"
let vm = machine(#{ args: ["-M", "none"] });
vm.launch();
assert_eq(vm.cmd("query-status").status, "running");
assert_eq(vm.cmd("query-name", #{}), vm.command("query-name"));
vm.cmd("stop", #{}, false);
assert_eq(vm.cmd("query-status").status, "paused");
try { vm.cmd("no-such-command"); fail("no error"); }
catch (e) { assert_eq(e.kind, "MonitorResponseError"); assert_eq(e.class, "CommandNotFound"); }
"#,
    );
}

#[test]
fn qtest_machine_is_configured_before_it_is_launched() {
    let w = World::new();
    passes(
        &w,
        r#"
let q = qtest_machine((), #{ name: "qt" });
assert(!q.is_running());
q.add_args("-nodefaults");
q.set_machine("q35");
q.launch();
assert(q.full_args.contains("-nodefaults"));
// The q35 host bridge: vendor 0x8086, device 0x29c0.
assert_eq(q.qtest("outl 0xcf8 0x80000000"), "OK");
assert_match(q.qtest("inl 0xcfc"), "^OK 0x0*29c08086$");
q.shutdown();
"#,
    );
}

#[test]
fn get_qmp_event_with_seconds_throws_timeout_when_nothing_came() {
    let w = World::new();
    passes(
        &w,
        r#"
let vm = machine(#{ args: ["-M", "none"] });
vm.launch();
// No wait: never throws.
assert_eq(vm.get_qmp_event(), ());
assert_eq(vm.get_qmp_event(false), ());
assert_eq(vm.get_qmp_events(false), []);
// Seconds: Timeout when nothing arrived, as QEMUMachine's pull_event.
let t0 = now();
try { vm.get_qmp_event(0.3); fail("no Timeout"); }
catch (e) { assert_eq(e.kind, "Timeout", e.message); }
assert(now() - t0 < 5.0);
try { vm.get_qmp_events(0.3); fail("no Timeout"); }
catch (e) { assert_eq(e.kind, "Timeout", e.message); }
// An event that comes is returned.
vm.command("stop");
assert_eq(vm.get_qmp_event(5).event, "STOP");
vm.command("cont");
assert_eq(vm.get_qmp_events(5)[0].event, "RESUME");
// event_wait(name, match) waits with the default timeout.
vm.command("stop");
assert_eq(vm.event_wait("STOP", #{ event: "STOP" }).event, "STOP");
"#,
    );
}

#[test]
fn vm_args_can_be_assigned_and_edited_in_place_before_launch() {
    let w = World::new();
    passes(
        &w,
        r#"
let vm = machine();
vm.args = ["-M", "pc"];
assert_eq(vm.args, ["-M", "pc"]);
vm.args[1] = "none";                    // as tests/functional's set_vm_arg()
vm.args.push("-name");
vm.args.push("edited");
assert_eq(vm.args, ["-M", "none", "-name", "edited"]);
vm.launch();
assert_eq(vm.command("query-name").name, "edited");
try { vm.args = []; fail("assigned after launch"); }
catch (e) { assert_eq(e.kind, "QEMUMachineError", e.message); }
"#,
    );
}

#[test]
fn two_machines_of_one_name_keep_their_own_logs() {
    let w = World::new();
    passes(
        &w,
        r#"
for i in 0..2 {
    let vm = machine(#{ name: "same", args: ["-M", "none", "-name", `guest${i}`] });
    vm.launch();
    vm.command("query-name");
    vm.shutdown();
}
"#,
    );
    let art = w.path().join("art");
    let transcripts: Vec<PathBuf> = walk(&art)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with("same.qmp.jsonl"))
        .collect();
    assert_eq!(transcripts.len(), 2, "{transcripts:?}");
    let mut seen: Vec<bool> = (0..2)
        .map(|i| {
            transcripts.iter().any(|t| {
                std::fs::read_to_string(t)
                    .unwrap()
                    .contains(&format!("\"guest{i}\""))
            })
        })
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        [true],
        "each machine's transcript is its own: {transcripts:?}"
    );
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn blobs_round_trip_through_files_and_arrays_join() {
    let w = World::new();
    passes(
        &w,
        r#"
let path = `${temp_dir()}/b.bin`;
let b = blob();
for i in 0..256 { b.push(i); }
write_blob(path, b);
let back = read_blob(path);
assert_eq(back.len(), 256);
assert_eq(back, b);
assert_eq(back[255], 255);
// write_file writes UTF-8: one char above 0x7f is two bytes.
write_file(path, "\xff");
assert_eq(read_blob(path).len(), 2);
assert_eq(["a", 1, true].join(", "), "a, 1, true");
assert_eq([].join("-"), "");
try { read_blob(`${temp_dir()}/missing`); fail("no error"); }
catch (e) { assert_eq(e.kind, "HostError"); assert_match(e.message, "read_blob: .*missing"); }
"#,
    );
}

#[test]
fn check_finds_what_would_fail_only_when_reached() {
    let w = World::new();
    w.script(
        "lib/helpers.rhai",
        "/// Boots nothing.\nfn start(vm) { vm.launch(); }\n",
    );
    w.script(
        "t.rhai",
        r#"import "helpers" as h;
import "missing_module" as m;
let vm = machine(#{ args: ["-M", "none"], nmae: "x" });
h::strat(vm);
vm.lanch();
"#,
    );
    w.script(
        "fine.rhai",
        "import \"helpers\" as h;\nlet vm = machine();\nh::start(vm);\n",
    );
    let o = w.run(&["check", "t.rhai", "fine.rhai", "--lib", "lib"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("t.rhai:2:1: import \"missing_module\": "),
        "{out}"
    );
    assert!(
        out.contains("t.rhai:3:43: machine: unknown option `nmae` (did you mean `name`?)"),
        "{out}"
    );
    assert!(
        out.contains("t.rhai:4:4: h::strat is not a function of the module imported as h; did you mean `start`?"),
        "{out}"
    );
    assert!(
        out.contains("t.rhai:5:4: no method `lanch` exists"),
        "{out}"
    );
    assert!(out.contains("did you mean `launch`?"), "{out}");
    assert!(!out.contains("fine.rhai"), "{out}");
    assert!(out.ends_with("1 ok, 1 with errors\n"), "{out}");
}

/// The width and height of the PNG at `path`, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn screenshots_keys_and_a_screenshot_of_every_display_when_a_test_fails() {
    let w = World::new();
    w.script(
        "shot.rhai",
        "let vm = machine();\n\
         vm.add_args(\"-M\", \"pc\", \"-vga\", \"std\");\n\
         vm.launch();\n\
         let quiet = machine();\n\
         quiet.add_args(\"-M\", \"none\");\n\
         quiet.launch();\n\
         print(vm.screenshot());\n\
         print(vm.screenshot(\"after boot/1\"));\n\
         vm.send_key(\"ctrl-alt-delete\");\n\
         vm.type_text(\"Hi!\\n\");\n\
         try { vm.send_key(\"ctrl-hyper\"); } catch (e) { print(e.message); }\n\
         try { vm.type_text(\"aé\"); } catch (e) { print(e.message); }\n\
         try { quiet.screenshot(); } catch (e) { print(e.kind); }\n\
         fail(\"on purpose\");\n",
    );
    let art = w.path().join("art");
    let o = w.run(&[
        "run",
        "--no-capture",
        "--artifacts",
        art.to_str().unwrap(),
        "shot.rhai",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let dir = art.join("shot");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        dir.join("vm0-screenshot-1.png").display().to_string(),
        "{out}"
    );
    assert_eq!(
        lines[1],
        dir.join("vm0-after_boot_1.png").display().to_string(),
        "{out}"
    );
    assert_eq!(
        lines[2], "send_key: \"hyper\" in \"ctrl-hyper\" is not a key",
        "{out}"
    );
    assert_eq!(
        lines[3], "type_text: no key types 'é'; use send_key for other keys",
        "{out}"
    );
    assert_eq!(lines[4], "MonitorResponseError", "{out}");
    for png in [
        "vm0-screenshot-1.png",
        "vm0-after_boot_1.png",
        "vm0-failure.png",
    ] {
        // The display's mode depends on how far the firmware got: its
        // 640x480 start, or the 720x400 text mode.
        let size = png_size(&dir.join(png));
        assert!([(640, 480), (720, 400)].contains(&size), "{png}: {size:?}");
    }
    // Only machines with a display are screenshotted on failure.
    assert!(!dir.join("vm1-failure.png").exists());
    // The keys went out as QMP send-key: the combination together, each
    // character as its keys (with shift where a US keyboard needs it),
    // and nothing of a text with a character no key types.
    let qmp = std::fs::read_to_string(dir.join("vm0.qmp.jsonl")).unwrap();
    let sent: Vec<String> = qmp
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["msg"]["execute"] == "send-key")
        .map(|m| {
            let keys = m["msg"]["arguments"]["keys"].as_array().unwrap().clone();
            keys.iter()
                .map(|k| k["data"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    assert_eq!(
        sent,
        ["ctrl+alt+delete", "shift+h", "i", "shift+1", "ret"],
        "{qmp}"
    );
}

#[test]
fn the_qmp_transcript_the_log_and_steps_share_the_tests_clock() {
    let w = World::new();
    w.script(
        "clock.rhai",
        "sleep(1.5);\n\
         log(\"launching\");\n\
         let vm = machine();\n\
         vm.add_args(\"-M\", \"none\");\n\
         step(\"launch\", || vm.launch());\n\
         vm.shutdown();\n",
    );
    let art = w.path().join("art");
    let o = w.run(&[
        "run",
        "--format",
        "json",
        "--artifacts",
        art.to_str().unwrap(),
        "clock.rhai",
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    let result: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let step = result["steps"][0]["offset"].as_f64().unwrap();
    let log = std::fs::read_to_string(art.join("clock/script.log")).unwrap();
    let logged: f64 = log
        .lines()
        .find(|l| l.ends_with("launching"))
        .and_then(|l| l.trim_start_matches('[').split('s').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timed log line in {log:?}"));
    let qmp = std::fs::read_to_string(art.join("clock/vm0.qmp.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(qmp.lines().next().unwrap()).unwrap();
    let greeted = first["t"].as_f64().unwrap();
    // The greeting comes after the sleep, the log line and the step's
    // start on the same clock; counted from the launch, it came at once.
    assert!(logged >= 1.5, "{log}");
    // The log prints milliseconds, rounded.
    assert!(step >= logged - 0.0005, "step at {step}, log at {logged}");
    assert!(
        greeted >= step,
        "greeting at {greeted}, step at {step}: {qmp}"
    );
}

#[test]
fn a_timed_out_test_screenshots_its_machines_before_they_are_killed() {
    let w = World::new();
    // One waits for an event, the other spins in pure Rhai: both are
    // stopped where they are, their machines screenshotted, then killed.
    w.script(
        "wait.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"pc\", \"-vga\", \"std\");\nvm.launch();\nvm.event_wait(\"NEVER\", 600);\n",
    );
    w.script(
        "spin.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"pc\", \"-vga\", \"std\");\nvm.launch();\nlet n = 0;\nloop { n += 1; }\n",
    );
    let art = w.path().join("art");
    let start = std::time::Instant::now();
    let o = w.run(&[
        "run",
        "--timeout",
        "3",
        "--artifacts",
        art.to_str().unwrap(),
        "--format",
        "json",
        "wait.rhai",
        "spin.rhai",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{out}"
    );
    for test in ["wait", "spin"] {
        let size = png_size(&art.join(test).join("vm0-failure.png"));
        assert!([(640, 480), (720, 400)].contains(&size), "{test}: {size:?}");
        // The machine died with the test, by the timeout's kill.
        let log = std::fs::read_to_string(art.join(test).join("vm0.qmp.jsonl")).unwrap();
        assert!(log.contains("screendump"), "{log}");
        assert!(
            !log.contains("\"quit\""),
            "{test} was shut down, not killed:\n{log}"
        );
    }
    let results: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("name").is_some())
        .collect();
    assert_eq!(results.len(), 2, "{out}");
    for r in &results {
        assert_eq!(r["status"], "timeout", "{r}");
        assert_eq!(r["error"]["kind"], "Timeout", "{r}");
    }
    w.assert_clean();
}
