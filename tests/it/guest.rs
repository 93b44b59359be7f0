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
let vm = guest::boot();
let r = guest::run(vm, "printf 'bin\\377\\n'", 30);
assert_eq(r, #{ status: 0, output: "bin\uFFFD\n" });
assert_eq(guest::run(vm, "echo after", 30), #{ status: 0, output: "after\n" });
let con = vm.console_socket();
con.send_line("printf 'x\\376\\375y\\n'");
let caps = con.wait_for_regex("\nx([\\s\\S]*?)y", 30);
assert_eq(caps[1], "\uFFFD\uFFFD");
assert(vm.console_socket().output().contains("bin\uFFFD"), "output() shows what waits saw");
assert_eq(guest::run(vm, "echo $((6*7))", 30), #{ status: 0, output: "42\n" });
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
