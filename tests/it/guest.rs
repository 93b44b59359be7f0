//! The real test guest: boot to the shell on the serial console, run
//! commands, power off.

use crate::common::*;
use serde_json::Value;
use vmscript::machine::Machine;

#[test]
fn boot_run_a_command_and_power_off() {
    let logs = tempfile::tempdir().unwrap();
    let mut opts = guest_options();
    opts.log_dir = Some(logs.path().to_path_buf());
    let mut vm = Machine::new(opts).unwrap();
    vm.set_console(None, 0).unwrap();
    vm.launch().unwrap();
    let con = vm.console_socket().unwrap();
    con.wait_for("VMSCRIPT-READY", secs(60.0)).unwrap();
    // The busybox prompt ends with an escape sequence and no newline.
    con.wait_for("/ # ", secs(30.0)).unwrap();
    con.send_line("echo $((6*7))").unwrap();
    let out = con.wait_for_regex(r"\n(\d+)\r?\n", secs(30.0)).unwrap();
    assert_eq!(out[1].as_deref(), Some("42"));
    let out = vm
        .exec_command_and_wait_for_pattern("uname -s", "Linux", None, secs(30.0))
        .unwrap();
    assert!(out.contains("Linux"));
    let log_path = vm.console_log_path();
    vm.exec_command("poweroff -f").unwrap();
    let ev = vm
        .event_wait("SHUTDOWN", secs(60.0), None)
        .unwrap()
        .unwrap();
    assert_eq!(ev["data"]["guest"], Value::Bool(true));
    vm.wait(secs(30.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("VMSCRIPT-READY") && log.contains("42"));
}

#[test]
fn a_console_wait_fails_at_once_when_qemu_dies() {
    let mut vm = Machine::new(guest_options()).unwrap();
    vm.set_console(None, 0).unwrap();
    vm.launch().unwrap();
    let pid = vm.get_pid().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(secs(0.5));
        // SAFETY: signalling the QEMU this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let start = std::time::Instant::now();
    let err = vm
        .wait_for_console_pattern("NEVER-PRINTED", None, secs(60.0))
        .unwrap_err();
    t.join().unwrap();
    // At once, not at the 60 s deadline (slack for a loaded machine).
    assert!(start.elapsed() < secs(20.0), "took {:?}", start.elapsed());
    assert_eq!(err.kind(), "QEMUMachineError");
    assert!(err.to_string().contains("-9"), "{err}");
}

/// Bytes that are not UTF-8 become U+FFFD on the console, for waits as for
/// `output()`; before, a regex wait could not match across such a byte and
/// every later `guest::run` timed out.
#[test]
fn an_invalid_utf8_byte_on_the_console_breaks_no_later_wait() {
    use crate::common::world::{stderr, stdout, World};
    let w = World::new();
    let script = w.script(
        "binary.rhai",
        r#"
import "guest" as guest;
let vm = guest::boot(#{ agent: false });
let r = guest::run(vm, "printf 'bin\\377\\n'", 30);
assert_eq(r, #{ status: 0, stdout: "bin\uFFFD\n", stderr: "", output: "bin\uFFFD\n" });
assert_eq(guest::run(vm, "echo after", 30), #{ status: 0, stdout: "after\n", stderr: "", output: "after\n" });
let con = vm.console_socket();
con.send_line("printf 'x\\376\\375y\\n'");
let caps = con.wait_for_regex("\nx([\\s\\S]*?)y", 30);
assert_eq(caps[1], "\uFFFD\uFFFD");
assert(vm.console_socket().output().contains("bin\uFFFD"), "output() shows what waits saw");
assert_eq(guest::run(vm, "echo $((6*7))", 30), #{ status: 0, stdout: "42\n", stderr: "", output: "42\n" });
vm.shutdown();
"#,
    );
    let o = w
        .command(&["run", script.to_str().unwrap(), "--timeout", "200"])
        .env("VMSCRIPT_GUEST", guest_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 passed"), "{}", stdout(&o));
    w.assert_clean();
}

/// `guest::run` and the copies over the guest agent's channel: stdout,
/// stderr and status apart, binary output, a 64 MiB file both ways, a
/// timeout that kills the command in the guest, nothing on the console;
/// a guest without the agent's port falls back to the console, and says
/// so once.
#[test]
fn commands_and_files_go_over_the_agent_channel() {
    use crate::common::world::{stderr, stdout, World};
    let w = World::new();
    let script = w.script(
        "agent_test.rhai",
        r#"
import "guest" as guest;
let vm = guest::boot(#{ memory: 512 });
assert(vm.guest_agent);
let con = vm.console_socket();
con.wait_for("/ # ", 60);
sleep(0.5);
let before = con.output();

let r = guest::run(vm, "echo out; echo err >&2; exit 3");
assert_eq(r, #{ status: 3, stdout: "out\n", stderr: "err\n", output: "out\nerr\n" });
assert_eq(guest::run_ok(vm, "printf 'a\\nb'"), "a\nb");
assert_eq(guest::run(vm, "cat; echo done").stdout, "done\n");

let bin = guest::run(vm, "printf 'a\\000\\377\\n'");
let want = blob();
for c in [0x61, 0, 0xff, 0x0a] { want.push(c); }
assert_eq(type_of(bin.stdout), "blob");
assert_eq(bin.stdout, want);
assert_eq(bin.stderr, "");

try {
    vm.guest_agent_run("head -c 5000 /dev/zero", 30, 1000);
    fail("output past the bound was accepted");
} catch (e) {
    assert_eq(e.kind, "HostError");
    assert_match(e.message, "more than the 1000 allowed");
}

// A command that outlives its timeout is killed in the guest, with what
// it started.
try {
    guest::run(vm, "sleep 1234 & sleep 1235", 2);
    fail("run returned before the command ended");
} catch (e) {
    assert_eq(e.kind, "Timeout");
}
let ps = guest::run_ok(vm, "ps");
assert(!ps.contains("sleep 123"), ps);

let d = temp_dir();
run_host(["sh", "-c", `head -c 67108864 /dev/urandom >${d}/big`]);
guest::copy_to(vm, `${d}/big`, "/tmp/big");
guest::copy_from(vm, "/tmp/big", `${d}/back`);
let sums = run_host(["sha256sum", `${d}/big`, `${d}/back`]).stdout.split("\n");
assert_eq(sums[0].sub_string(0, 64), sums[1].sub_string(0, 64));
assert_eq(guest::run_ok(vm, "sha256sum </tmp/big").sub_string(0, 64), sums[0].sub_string(0, 64));
write_file(`${d}/empty`, "");
guest::copy_to(vm, `${d}/empty`, "/tmp/empty");
assert_eq(guest::run_ok(vm, "wc -c </tmp/empty"), "0\n");

try { guest::copy_from(vm, "/no/such", `${d}/x`); fail("copied"); }
catch (e) { assert_eq(e.kind, "HostError"); assert_match(e.message, "no such file: /no/such"); }
try { guest::copy_to(vm, `${d}/nothing`, "/tmp/x"); fail("copied"); }
catch (e) { assert_eq(e.kind, "HostError"); assert_match(e.message, "No such file"); }
try { guest::copy_to(vm, `${d}/big`, "/no/such/dir/x"); fail("copied"); }
catch (e) { assert_eq(e.kind, "HostError"); assert_match(e.message, "/no/such/dir/x"); }
assert_eq(guest::run_ok(vm, "echo still in step"), "still in step\n");

assert_eq(con.output(), before);
vm.shutdown();

let old = guest::boot(#{ agent: false });
assert(!old.guest_agent);
assert_eq(guest::run(old, "echo out; exit 2"), #{ status: 2, stdout: "out\n", stderr: "", output: "out\n" });
assert_eq(guest::run_ok(old, "echo again"), "again\n");
try { guest::copy_from(old, "/init", `${d}/x`); fail("copied"); }
catch (e) { assert_eq(e.kind, "HostError"); assert_match(e.message, "no guest agent"); }
old.shutdown();
"#,
    );
    let art = w.dir("art");
    let o = run_on_the_guest(&w, &script, &art, &["--keep-artifacts"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let art = only_entry(&art);
    let log = std::fs::read_to_string(art.join("script.log")).unwrap();
    assert_eq!(
        log.matches("commands go through the serial console instead")
            .count(),
        1,
        "{log}"
    );
    let console = std::fs::read_to_string(art.join("vm0.console.log")).unwrap();
    assert!(!console.contains("sleep 123"), "{console}");
    w.assert_clean();
}

/// The agent's channel works on a migrated guest's destination, and a
/// failed test gets the guest files it named in its artifacts.
#[test]
fn the_channel_follows_a_migration_and_collects_files_on_failure() {
    use crate::common::world::{stderr, stdout, World};
    let w = World::new();
    let script = w.script(
        "moved_test.rhai",
        r#"
import "guest" as guest;
import "migration" as migration;
let src = guest::boot();
guest::run_ok(src, "echo before >/tmp/note");
let dst = migration::destination(src);
assert(dst.guest_agent);
migration::migrate(src, dst);
assert_eq(guest::run(dst, "cat /tmp/note; echo e >&2"), #{ status: 0, stdout: "before\n", stderr: "e\n", output: "before\ne\n" });
guest::collect_on_failure(dst, ["/tmp/note", "/no/such"]);
fail("on purpose");
"#,
    );
    let art = w.dir("art");
    let o = run_on_the_guest(&w, &script, &art, &[]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("on purpose") && out.contains("1 failed"),
        "{out}"
    );
    let files = only_entry(&art).join("vm1-files");
    assert_eq!(
        std::fs::read_to_string(files.join("tmp_note")).unwrap(),
        "before\n",
        "{out}"
    );
    let errors = std::fs::read_to_string(files.join("ERRORS")).unwrap();
    assert!(errors.contains("no such file: /no/such"), "{errors}");
    w.assert_clean();
}

/// The one test folder in `dir` (a run's artifacts folder, which also
/// holds the run's results.json).
/// `vmscript run SCRIPT` on the test guest, with a long timeout, its
/// artifacts in `art`, and `extra` arguments.
fn run_on_the_guest(
    w: &crate::common::world::World,
    script: &std::path::Path,
    art: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "run",
        script.to_str().unwrap(),
        "--timeout",
        "600",
        "--artifacts",
        art.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    w.command(&args)
        .env("VMSCRIPT_GUEST", guest_dir())
        .output()
        .unwrap()
}

fn only_entry(dir: &std::path::Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .filter(|p| !p.ends_with("results.json"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}
