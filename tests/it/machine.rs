//! The machine layer against a real QEMU.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Map, Value};
use vmscript::machine::{Error, EventWait, Machine};

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn launch_query_and_shutdown_leave_nothing_behind() {
    let mut vm = launched(&[]);
    let pid = vm.get_pid().unwrap();
    let temp = vm.temp_dir().unwrap().to_path_buf();
    assert!(vm.is_running());
    let status = vm.command("query-status", None, true).unwrap();
    assert_eq!(status["status"], "running");
    let version = vm.command("query-version", None, true).unwrap();
    assert_eq!(version, vm.qmp_greeting()["QMP"]["version"]);
    assert!(vm
        .full_args()
        .iter()
        .any(|a| a.starts_with("socket,id=mon,fd=")));
    vm.shutdown(false, secs(30.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
    assert!(!vm.is_running());
    assert!(!pid_exists(pid), "QEMU {pid} still exists after shutdown");
    assert!(!temp.exists(), "{} survived shutdown", temp.display());
    assert!(vm.get_log().is_some());
    // The SHUTDOWN event of the quit stays readable.
    let ev = vm.get_qmp_event(EventWait::No).unwrap().unwrap();
    assert_eq!(ev["event"], "SHUTDOWN");
    assert_eq!(ev["data"]["reason"], "host-qmp-quit");
}

#[test]
fn stop_and_cont_emit_events_that_queue_in_order() {
    let mut o = MachineOptions::new(QEMU);
    o.args = ["-accel", "tcg", "-M", "q35", "-nodefaults", "-S"]
        .map(String::from)
        .to_vec();
    let mut vm = Machine::new(o).unwrap();
    vm.launch().unwrap();
    vm.command("cont", None, true).unwrap();
    let ev = vm.event_wait("RESUME", secs(5.0), None).unwrap().unwrap();
    assert_eq!(ev["event"], "RESUME");
    vm.command("stop", None, true).unwrap();
    vm.command("cont", None, true).unwrap();
    vm.command("stop", None, true).unwrap();
    // Waiting for the second kind first leaves the others queued, in order.
    let m = json!({"event": "RESUME"});
    vm.event_wait("RESUME", secs(5.0), Some(&m))
        .unwrap()
        .unwrap();
    let pairs = [("STOP".to_string(), None), ("NEVER".to_string(), None)];
    let first = vm.events_wait(&pairs, secs(5.0)).unwrap().unwrap();
    assert_eq!(first["event"], "STOP");
    let rest: Vec<_> = vm
        .get_qmp_events(EventWait::No)
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, ["STOP"]);
    // A zero timeout with nothing matching returns nothing.
    assert!(vm
        .event_wait("STOP", Duration::ZERO, None)
        .unwrap()
        .is_none());
    vm.shutdown(false, secs(30.0)).unwrap();
}

#[test]
fn an_event_that_never_comes_times_out_on_time() {
    let mut vm = launched(&["-S"]);
    vm.command("cont", None, true).unwrap();
    let start = Instant::now();
    let err = vm.event_wait("NEVER", secs(1.5), None).unwrap_err();
    let took = start.elapsed();
    // On time, give or take a loaded machine's delays; never hours.
    assert!(took >= secs(1.5) && took < secs(10.0), "took {took:?}");
    assert_eq!(err.kind(), "Timeout");
    let text = err.to_string();
    assert!(text.contains("NEVER") && text.contains("RESUME"), "{text}");
    // The unmatched RESUME is still queued.
    assert!(vm.event_wait("RESUME", secs(1.0), None).unwrap().is_some());
}

#[test]
fn unknown_command_is_a_monitor_response_error() {
    let mut vm = launched(&[]);
    let err = vm.command("no-such-command", None, true).unwrap_err();
    assert_eq!(err.kind(), "MonitorResponseError");
    match err {
        Error::MonitorResponse { class, .. } => assert_eq!(class, "CommandNotFound"),
        e => panic!("{e:?}"),
    }
    // qmp() returns the error reply whole instead.
    let reply = vm.qmp("no-such-command", None, true).unwrap();
    assert_eq!(reply["error"]["class"], "CommandNotFound");
}

#[test]
fn conv_keys_turns_underscores_into_dashes() {
    let mut vm = launched(&[]);
    let a = args(json!({"driver": "null-co", "node_name": "n0"}));
    vm.command("blockdev-add", Some(&a), true).unwrap();
    let nodes = vm.command("query-named-block-nodes", None, true).unwrap();
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node-name"] == "n0"));
    let err = vm.command("blockdev-add", Some(&a), false).unwrap_err();
    assert_eq!(err.kind(), "MonitorResponseError");
}

#[test]
fn bad_argument_is_a_launch_failure_with_qemu_output() {
    let mut vm = Machine::new(none_options(&["-no-such-option"])).unwrap();
    let err = vm.launch().unwrap_err();
    assert_eq!(err.kind(), "VMLaunchFailure");
    match &err {
        Error::LaunchFailure {
            exitcode,
            output,
            command,
            ..
        } => {
            assert_eq!(*exitcode, Some(1));
            assert!(output.contains("-no-such-option"), "{output}");
            assert!(command.iter().any(|a| a == "-no-such-option"));
        }
        e => panic!("{e:?}"),
    }
    assert!(!vm.is_running());
    assert!(vm.temp_dir().is_none());
}

#[test]
fn missing_binary_names_the_path_and_the_fix() {
    let mut o = none_options(&[]);
    o.binary = "/nonexistent/qemu-system-foo".into();
    let err = Machine::new(o).unwrap().launch().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/nonexistent/qemu-system-foo"), "{text}");
    assert!(text.contains("VMSCRIPT_QEMU"), "{text}");
}

#[test]
fn configuring_after_launch_is_refused() {
    let mut vm = launched(&[]);
    let err = vm.set_machine("pc").unwrap_err();
    assert_eq!(err.kind(), "QEMUMachineError");
    assert!(err.to_string().contains("already launched"));
    assert_eq!(vm.launch().unwrap_err().kind(), "QEMUMachineError");
}

#[test]
fn calls_that_need_qemu_are_not_running_before_launch_and_after_exit() {
    let mut vm = Machine::new(none_options(&[])).unwrap();
    let err = vm.command("query-status", None, true).unwrap_err();
    assert!(
        matches!(&err, Error::NotRunning { what, .. } if what == "query-status"),
        "{err:?}"
    );
    assert_eq!(err.kind(), "QEMUMachineError");
    assert!(err.to_string().ends_with("is not running"), "{err}");
    assert!(matches!(vm.console_socket(), Err(Error::NotRunning { .. })));
    assert!(matches!(vm.qtest("readl 0"), Err(Error::NotRunning { .. })));
    vm.launch().unwrap();
    vm.command("stop", None, true).unwrap();
    vm.shutdown(false, secs(30.0)).unwrap();
    // The closed monitor keeps its events: a wait finds one, in order,
    // and a wait for one that never came says why it cannot come.
    let stop = vm.event_wait("STOP", Duration::ZERO, None).unwrap();
    assert_eq!(stop.unwrap()["event"], "STOP");
    let err = vm.event_wait("NEVER", secs(1.0), None).unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
    let rest = vm.get_qmp_events(EventWait::Forever).unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["event"], "SHUTDOWN");
    assert!(matches!(
        vm.command("query-status", None, true),
        Err(Error::NotRunning { .. })
    ));
}

#[test]
fn a_relaunch_starts_from_nothing_the_last_run_left() {
    let mut vm = launched(&[]);
    vm.command("stop", None, true).unwrap();
    vm.kill();
    assert_eq!(vm.exitcode(), Some(-9));
    assert!(vm.get_log().is_some());
    vm.launch().unwrap();
    assert_eq!(vm.exitcode(), None);
    assert!(vm.get_log().is_none());
    assert!(vm.crash().is_none());
    assert!(vm.temp_dir().is_some());
    assert!(vm.qmp_greeting()["QMP"]["version"].is_object());
    assert!(vm.get_qmp_events(EventWait::No).unwrap().is_empty());
    vm.shutdown(false, secs(30.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}

#[test]
fn a_killed_qemu_ends_a_long_event_wait_at_once() {
    let mut vm = launched(&[]);
    let killer = vm.kill_handle();
    let pid = vm.get_pid().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(secs(0.3));
        // SAFETY: signalling the QEMU this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let start = Instant::now();
    let err = vm.event_wait("NEVER", secs(60.0), None).unwrap_err();
    t.join().unwrap();
    // At once, not at the 60 s deadline (slack for a loaded machine).
    assert!(start.elapsed() < secs(20.0), "took {:?}", start.elapsed());
    assert_eq!(err.kind(), "QEMUMachineError");
    assert!(err.to_string().contains("-9"), "{err}");
    let err = vm.shutdown(false, secs(5.0)).unwrap_err();
    assert_eq!(err.kind(), "AbnormalShutdown");
    drop(killer);
}

#[test]
fn kill_handle_works_from_another_thread() {
    let mut vm = launched(&[]);
    let handle = vm.kill_handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(secs(0.2));
        handle.kill();
    });
    let err = vm.event_wait("NEVER", secs(60.0), None).unwrap_err();
    t.join().unwrap();
    assert_eq!(err.kind(), "QEMUMachineError");
    vm.kill();
    assert!(!vm.is_running());
}

#[test]
fn unix_and_tcp_monitor_addresses_work() {
    use vmscript::qmp::Address;
    let dir = tempfile::tempdir().unwrap();
    let mut o = none_options(&[]);
    o.monitor_address = Some(Address::Unix(dir.path().join("qmp.sock")));
    let mut vm = Machine::new(o).unwrap();
    vm.launch().unwrap();
    assert_eq!(
        vm.command("query-status", None, true).unwrap()["status"],
        "running"
    );
    vm.shutdown(false, secs(30.0)).unwrap();

    let mut o = none_options(&[]);
    o.monitor_address = Some(Address::Tcp("127.0.0.1".into(), 0));
    let mut vm = Machine::new(o).unwrap();
    vm.launch().unwrap();
    assert_eq!(
        vm.command("query-status", None, true).unwrap()["status"],
        "running"
    );
    let file = tempfile::tempfile().unwrap();
    use std::os::fd::AsFd;
    assert_eq!(vm.send_fd_scm(file.as_fd()).unwrap_err().kind(), "QMPError");
    vm.shutdown(false, secs(30.0)).unwrap();
}

#[test]
fn send_fd_scm_then_getfd_and_closefd() {
    let mut vm = launched(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"x").unwrap();
    vm.send_file_scm(&path).unwrap();
    vm.command("getfd", Some(&args(json!({"fdname": "f1"}))), true)
        .unwrap();
    vm.command("closefd", Some(&args(json!({"fdname": "f1"}))), true)
        .unwrap();
    // Closing it twice fails: the first close really found it.
    let err = vm
        .command("closefd", Some(&args(json!({"fdname": "f1"}))), true)
        .unwrap_err();
    assert_eq!(err.kind(), "MonitorResponseError");
}

#[test]
fn hmp_returns_text() {
    let mut vm = launched(&[]);
    let out = vm.hmp("info status").unwrap();
    assert!(out.contains("running"), "{out}");
}

#[test]
fn qtest_reads_the_host_bridge_id() {
    let mut o = MachineOptions::new(QEMU);
    o.args = vec!["-M".into(), "pc".into(), "-nodefaults".into()];
    let mut vm = Machine::new(o).unwrap();
    vm.enable_qtest().unwrap();
    vm.launch().unwrap();
    assert_eq!(vm.qtest("outl 0xcf8 0x80000000").unwrap(), "OK");
    let id = vm.qtest("inl 0xcfc").unwrap();
    // i440FX: vendor 0x8086, device 0x1237.
    assert_eq!(id, "OK 0x12378086");
    vm.shutdown(false, secs(30.0)).unwrap();
}

use vmscript::machine::MachineOptions;

#[test]
fn transcript_records_commands_and_replies() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = none_options(&[]);
    o.qmp_transcript = true;
    o.log_dir = Some(dir.path().to_path_buf());
    let mut vm = Machine::new(o).unwrap();
    vm.launch().unwrap();
    vm.command("query-status", None, true).unwrap();
    let path = vm.qmp_transcript_path();
    vm.shutdown(false, secs(30.0)).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["dir"] == "sent" && l["msg"]["execute"] == "query-status"));
    assert!(lines
        .iter()
        .any(|l| l["dir"] == "received" && l["msg"]["event"] == "SHUTDOWN"));
    assert!(lines.iter().all(|l| l["t"].is_f64()));
}

#[test]
fn a_machine_without_a_monitor_shuts_down_cleanly() {
    let mut vm = Machine::new(none_options(&[])).unwrap();
    vm.set_qmp_monitor(false).unwrap();
    vm.launch().unwrap();
    assert!(vm.is_running());
    assert!(!vm.full_args().iter().any(|a| a.contains("id=mon")));
    assert_eq!(
        vm.command("query-status", None, true).unwrap_err().kind(),
        "QEMUMachineError"
    );
    vm.shutdown(false, secs(10.0)).unwrap();
    assert!(!vm.is_running());
}

#[test]
fn an_interrupt_ends_an_event_wait_and_qemu_keeps_running() {
    let mut vm = launched(&[]);
    let handle = vm.interrupt_handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        handle.interrupt();
    });
    let start = Instant::now();
    let err = vm.event_wait("NEVER", secs(60.0), None).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
    assert_eq!(err.kind(), "Interrupted");
    assert_eq!(err.to_string(), "interrupted while waiting for event NEVER");
    t.join().unwrap();
    assert!(vm.is_running());
    let status = vm.command("query-status", None, true).unwrap();
    assert_eq!(status["status"], "running");
    vm.shutdown(false, secs(30.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}

#[test]
fn an_observer_sees_every_qmp_message() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut vm = Machine::new(none_options(&[])).unwrap();
    let s = seen.clone();
    vm.observe_qmp(std::sync::Arc::new(move |_, bytes: &[u8]| {
        s.lock()
            .unwrap()
            .push(String::from_utf8_lossy(bytes).into_owned())
    }));
    vm.launch().unwrap();
    vm.command("stop", None, true).unwrap();
    vm.event_wait("STOP", secs(5.0), None).unwrap();
    vm.shutdown(false, secs(30.0)).unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|m| m.contains("\"execute\":\"stop\"")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m.contains("\"STOP\"")), "{seen:?}");
}

/// QEMU answers an argument nested deeper than its limit with about 1030
/// error replies that carry no id. Matched by order, they answered the
/// next commands; matched by id, the deep command fails with a desync and
/// the next command gets its own reply.
///
/// QEMU 7.2 itself sometimes aborts on that flood (its assertion
/// `qmp_requests->length < QMP_REQ_QUEUE_LEN_MAX`, a race in its monitor):
/// then the check is made again on a new QEMU, a few times at most, and an
/// abort of any other kind fails the test at once.
#[test]
fn an_argument_nested_past_qemus_limit_is_a_desync_and_later_commands_get_their_own_replies() {
    const QEMU_OWN_ABORT: &str = "QMP_REQ_QUEUE_LEN_MAX";
    let mut aborts = Vec::new();
    for _ in 0..4 {
        match deep_argument_then_three_commands() {
            Ok(()) => return,
            Err(Error::Exited { log_tail, .. }) if log_tail.contains(QEMU_OWN_ABORT) => {
                aborts.push(log_tail)
            }
            Err(other) => panic!("{other}"),
        }
    }
    panic!("QEMU aborted on every try: {aborts:?}");
}

fn deep_argument_then_three_commands() -> Result<(), Error> {
    let mut vm = launched(&[]);
    let mut deep = json!(1);
    for _ in 0..1100 {
        deep = json!([deep]);
    }
    let err = vm
        .qmp(
            "qom-get",
            Some(&args(json!({"path": "/machine", "property": deep}))),
            false,
        )
        .unwrap_err();
    if matches!(err, Error::Exited { .. }) {
        return Err(err);
    }
    assert_eq!(err.kind(), "QMPError", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("out of step") && text.contains("qom-get"),
        "{text}"
    );
    assert!(text.contains("not answered"), "{text}");
    for _ in 0..3 {
        let status = vm.command("query-status", None, true)?;
        assert_eq!(status["status"], "running");
    }
    let name = vm.command(
        "qom-get",
        Some(&args(json!({"path": "/machine", "property": "type"}))),
        false,
    )?;
    assert_eq!(name, "none-machine");
    vm.shutdown(false, secs(30.0)).unwrap();
    Ok(())
}

/// QEMU's uint64 18446744073709551615 (the size of the system memory
/// region) comes to a script exactly and can be written back: before, it
/// became a FLOAT and QEMU refused it ("expects uint64").
#[test]
fn a_uint64_above_i64_max_round_trips_through_a_script_exactly() {
    use crate::common::world::{stdout, World};
    let w = World::new();
    let script = w.script(
        "u64.rhai",
        r#"
let vm = machine();
vm.add_args("-M", "none", "-nodefaults");
vm.launch();
let size = vm.command("qom-get", #{ path: "/machine/unattached/system[0]", property: "size" });
assert_eq(`${size}`, "18446744073709551615");
vm.command("migrate-set-parameters", #{ max_bandwidth: size });
let back = vm.command("query-migrate-parameters")["max-bandwidth"];
assert(back == size, "the same integer came back");
assert_eq(back, size);
assert_eq(to_json(#{ v: back }), "{\"v\":18446744073709551615}");
print(`bandwidth ${back}`);
vm.shutdown();
"#,
    );
    let o = w.run(&["run", "--no-capture", script.to_str().unwrap()]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("bandwidth 18446744073709551615"), "{out}");
    w.assert_clean();
}

/// QEMU reads `,` in an option value as its end: a temp folder with a
/// comma in its name (from `TMPDIR`) must reach QEMU as `,,`, for the
/// qtest socket and for a monitor socket path alike.
#[test]
fn a_comma_in_tmpdir_breaks_neither_qtest_nor_a_monitor_path() {
    use crate::common::world::{stdout, World};
    let w = World::new();
    let tmp = w.dir("tmp,with,commas");
    let script = w.script(
        "comma.rhai",
        r#"
let q = qtest_machine((), #{ name: "q" });
q.launch();
assert(q.qtest("readb 0x0").starts_with("OK "), "qtest answers");
q.shutdown();
let vm = machine((), #{ monitor_address: "mon,1.sock" });
vm.add_args("-M", "none", "-nodefaults");
vm.launch();
assert_eq(vm.command("query-status").status, "running");
vm.shutdown();
print("both ok");
"#,
    );
    let o = w
        .command(&["run", "--no-capture", script.to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}{}",
        crate::common::world::stderr(&o)
    );
    assert!(out.contains("both ok"), "{out}");
    w.assert_clean();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with("vmscript-artifacts-"))
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
