//! Injected faults: a QEMU that dies, hangs, or breaks its monitor at
//! every stage. Each must end in a clear error, in time, with nothing left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;
use vmscript::machine::{Error, Machine, MachineOptions};

fn fake(mode: &str) -> MachineOptions {
    let mut o = MachineOptions::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-qemu.sh"),
    );
    o.wrapper = vec!["env".into(), format!("FAKE_QEMU_MODE={mode}")];
    o.qmp_timer = Duration::from_secs(2);
    o
}

/// A launch that fails before QMP's own timeout: given a long one, so
/// that a failure found only at that timeout is told from one found at
/// once even on a loaded machine.
fn fails_before_qmp_timer(mode: &str) -> Error {
    let mut opts = fake(mode);
    opts.qmp_timer = Duration::from_secs(60);
    let (err, took) = launch_failure(opts);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    err
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
    let err = fails_before_qmp_timer("exit-before-greeting");
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
    let err = fails_before_qmp_timer("exit-during-negotiation");
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
    let err = fails_before_qmp_timer("garbage-greeting");
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[test]
fn a_silent_monitor_times_out_at_qmp_timer() {
    let (err, took) = launch_failure(fake("no-greeting"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
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
    assert!(start.elapsed() < Duration::from_secs(12));
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
    assert!(start.elapsed() < secs(10.0));
    let start = Instant::now();
    let err = vm
        .wait_for_console_pattern("never", None, secs(1.0))
        .unwrap_err();
    assert_eq!(err.kind(), "Timeout", "{err}");
    assert!(start.elapsed() < secs(10.0));
    let start = Instant::now();
    let err = vm.shutdown(false, secs(1.0)).unwrap_err();
    assert_eq!(err.kind(), "AbnormalShutdown", "{err}");
    assert!(start.elapsed() < secs(12.0), "took {:?}", start.elapsed());
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

/// A QEMU that crashes while `shutdown()` waits for it (here: stopped,
/// then sent the signal and continued, so the crash surely comes during
/// the wait) makes the shutdown fail with the signal named.
#[test]
fn a_crash_during_shutdown_is_an_abnormal_shutdown_naming_the_signal() {
    for (signal, name) in [
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        let mut vm = launched(&[]);
        let pid = vm.get_pid().unwrap();
        // SAFETY: signalling the QEMU this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, signal);
                libc::kill(pid, libc::SIGCONT);
            }
        });
        let err = vm.shutdown(false, secs(20.0)).unwrap_err();
        t.join().unwrap();
        assert_eq!(err.kind(), "AbnormalShutdown", "{name}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("signal {signal} ({name})")),
            "{err}"
        );
        assert_eq!(vm.crash().map(|c| c.contains(name)), Some(true));
        assert_eq!(vm.exitcode(), Some(-signal));
        assert!(!pid_exists(pid));
    }
}

/// A QEMU that crashed before the shutdown is reported the same way; one
/// killed by vmscript itself (its kill handle, `kill()`) is not a crash.
#[test]
fn a_crash_before_shutdown_is_reported_and_our_own_kill_is_not() {
    let mut vm = launched(&[]);
    let pid = vm.get_pid().unwrap();
    // SAFETY: signalling the QEMU this test started.
    unsafe { libc::kill(pid, libc::SIGSEGV) };
    let err = vm.shutdown(false, secs(20.0)).unwrap_err();
    assert!(err.to_string().contains("signal 11 (SIGSEGV)"), "{err}");

    let mut vm = launched(&[]);
    vm.kill_handle().kill();
    vm.shutdown(false, secs(20.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(-libc::SIGKILL));
    assert_eq!(vm.crash(), None);

    let mut vm = launched(&[]);
    vm.kill();
    assert_eq!(vm.crash(), None);
}

/// A QEMU that crashed mid-test, found by the cleanup at the end of the
/// script, fails the test with the machine and the signal named.
#[test]
fn a_crash_found_by_the_cleanup_fails_the_test() {
    use crate::common::world::{stdout, World};
    let w = World::new();
    let script = w.script(
        "crash.rhai",
        r#"
let vm = machine();
vm.add_args("-M", "none");
vm.launch();
run_host(["kill", "-SEGV", `${vm.get_pid()}`]);
sleep(0.5);
"#,
    );
    let o = w.run(&["run", script.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("AbnormalShutdown: vm0: QEMU was killed by signal 11 (SIGSEGV)"),
        "{out}"
    );
    w.assert_clean();
}
