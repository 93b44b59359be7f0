//! Injected faults: a QEMU that dies, hangs, or breaks its monitor at
//! every stage. Each must end in a clear error, in time, with nothing left.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use vmscript::machine::{Error, Machine, MachineOptions};

fn fake(mode: &str) -> MachineOptions {
    let mut o = MachineOptions::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-qemu.sh"),
    );
    o.wrapper = vec!["env".into(), format!("FAKE_QEMU_MODE={mode}")];
    o.qmp_timer = Duration::from_secs(2);
    o
}

fn launch_failure(opts: MachineOptions) -> (Error, Duration) {
    let mut vm = Machine::new(opts).unwrap();
    let start = Instant::now();
    let err = vm.launch().unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), "VMLaunchFailure", "{err}");
    assert!(!vm.is_running());
    assert!(
        vm.temp_dir().is_none(),
        "the temp dir survived a failed launch"
    );
    (err, took)
}

#[test]
fn qemu_exiting_before_the_greeting_is_a_launch_failure() {
    let (err, took) = launch_failure(fake("exit-before-greeting"));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let Error::LaunchFailure {
        exitcode, output, ..
    } = err
    else {
        unreachable!()
    };
    assert_eq!(exitcode, Some(7));
    assert!(output.contains("dying early"), "{output}");
}

#[test]
fn qemu_exiting_during_negotiation_is_a_launch_failure() {
    let (err, took) = launch_failure(fake("exit-during-negotiation"));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let Error::LaunchFailure {
        exitcode,
        output,
        cause,
        ..
    } = err
    else {
        unreachable!()
    };
    assert_eq!(exitcode, Some(5));
    assert!(output.contains("dying in negotiation"), "{output}");
    assert!(cause.contains("negotiation"), "{cause}");
}

#[test]
fn a_garbage_greeting_is_a_launch_failure_naming_it() {
    let (err, took) = launch_failure(fake("garbage-greeting"));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[test]
fn a_silent_monitor_times_out_at_qmp_timer() {
    let (err, took) = launch_failure(fake("no-greeting"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn a_monitor_closed_by_a_live_qemu_is_a_qmp_error_and_shutdown_kills() {
    let mut vm = Machine::new(fake("close-monitor-stay-alive")).unwrap();
    vm.launch().unwrap();
    let pid = vm.get_pid().unwrap();
    let err = vm.command("query-status", None, true).unwrap_err();
    assert_eq!(err.kind(), "QMPError", "{err}");
    assert!(vm.is_running());
    let start = Instant::now();
    let err = vm.shutdown(false, Duration::from_secs(1)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(err.kind(), "AbnormalShutdown", "{err}");
    assert!(!pid_exists(pid));
}

#[test]
fn a_stopped_qemu_times_out_every_wait_and_is_killed_on_shutdown() {
    let mut vm = Machine::new(none_options(&["-S"])).unwrap();
    vm.set_console(None, 0).unwrap();
    vm.launch().unwrap();
    let pid = vm.get_pid().unwrap();
    // SAFETY: signalling the QEMU this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let start = Instant::now();
    let err = vm.event_wait("RESUME", secs(1.0), None).unwrap_err();
    assert_eq!(err.kind(), "Timeout");
    assert!(start.elapsed() < secs(2.0));
    let start = Instant::now();
    let err = vm
        .wait_for_console_pattern("never", None, secs(1.0))
        .unwrap_err();
    assert_eq!(err.kind(), "Timeout", "{err}");
    assert!(start.elapsed() < secs(2.0));
    let start = Instant::now();
    let err = vm.shutdown(false, secs(1.0)).unwrap_err();
    assert_eq!(err.kind(), "AbnormalShutdown", "{err}");
    assert!(start.elapsed() < secs(3.0), "took {:?}", start.elapsed());
    assert!(!pid_exists(pid));
    assert_eq!(vm.exitcode(), Some(-9));
}

#[test]
fn qemu_killed_mid_launch_is_a_launch_failure() {
    // A wrapper that kills QEMU once it is up, before we can talk to it.
    let mut o = none_options(&[]);
    o.wrapper = vec![
        "bash".into(),
        "-c".into(),
        "\"$@\" & kill -9 $!; wait $!".into(),
        "wrapper".into(),
    ];
    let (err, _) = launch_failure(o);
    let Error::LaunchFailure { exitcode, .. } = err else {
        unreachable!()
    };
    assert_eq!(exitcode, Some(137));
}
