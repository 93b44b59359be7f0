//! The real test guest: boot to the shell on the serial console, run
//! commands, power off.

mod common;

use common::*;
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
    assert!(start.elapsed() < secs(2.0), "took {:?}", start.elapsed());
    assert_eq!(err.kind(), "QEMUMachineError");
    assert!(err.to_string().contains("-9"), "{err}");
}
