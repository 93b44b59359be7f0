//! `parallel(…)` against real QEMU: branches really run at the same time,
//! results come back in order, the first failed branch's error is thrown
//! once every branch has ended, and whatever the branches made is cleaned
//! up however the script ends.

use std::time::{Duration, Instant};

use crate::common::world::*;

/// Concurrency is shown by a rendezvous, not by timing: each branch waits
/// for a file only a later branch writes, so run one after the other they
/// would time out.
#[test]
fn branches_run_at_the_same_time_and_return_in_order() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
let dir = temp_dir();
let r = parallel([
    || { wait_until(|| file_exists(`${dir}/b`), 20); "a" },
    || { write_file(`${dir}/b`, ""); wait_until(|| file_exists(`${dir}/c`), 20); "b" },
    || { write_file(`${dir}/c`, ""); "c" },
]);
assert_eq(r, ["a", "b", "c"]);
let squares = parallel([1, 2, 3], |x| x * x);
assert_eq(squares, [1, 4, 9]);
assert_eq(parallel(0..3, |i| i + 10), [10, 11, 12]);
assert_eq(parallel(1..=2, |i| -i), [-1, -2]);
assert_eq(parallel([], |x| x), []);
print("ok");
"#,
    );
    let o = w.run(&["run", "--no-capture", "t.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("ok\n"));
}

#[test]
fn machines_are_launched_and_commanded_from_branches() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
import "retry" as retry;
let vms = [];
for i in 0..4 {
    let vm = machine();
    vm.add_args("-M", "none", "-nodefaults");
    vms.push(vm);
}
// All four QEMUs must be up together: each branch waits until every
// machine answers, which it cannot while the others are still unlaunched.
let dir = temp_dir();
let states = parallel(vms, |vm| {
    vm.launch();
    write_file(`${dir}/${vm.name}`, "");
    retry::poll(|| [0, 1, 2, 3].all(|i| file_exists(`${dir}/vm${i}`)), 30);
    for k in 0..20 { vm.qmp("query-status"); }
    vm.qmp("query-status")["return"].status
});
assert_eq(states, ["running", "running", "running", "running"]);
for vm in vms { print(`pid ${vm.get_pid()}`); }
parallel(vms, |vm| vm.shutdown());
for vm in vms { assert(!vm.is_running()); }
print("done");
"#,
    );
    let o = w.run(&["run", "--no-capture", "t.rhai"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(printed_pids(&out).len(), 4, "{out}");
    w.assert_clean();
}

#[test]
fn the_first_failed_branch_is_thrown_after_every_branch_ended() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
let dir = temp_dir();
try {
    parallel([
        || 1,
        || { sleep(0.3); fail("second") },
        || fail("third"),
        || { sleep(0.6); write_file(`${dir}/last`, ""); 4 },
    ]);
    fail("parallel did not throw");
} catch (e) {
    assert_eq(e.kind, "AssertionFailed");
    assert_eq(e.branch, 1);
    assert_match(e.message, "second");
    // The slowest branch ran to its end before the error came back.
    assert(file_exists(`${dir}/last`));
}
try { parallel([|| 1, 2]); } catch (e) { assert_match(e.message, "a function"); print(e.message); }
print("ok");
"#,
    );
    let o = w.run(&["run", "--no-capture", "t.rhai"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("ok\n"), "{out}");
}

#[test]
fn an_uncaught_branch_error_points_into_the_branch_and_leaves_nothing() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"let vms = [];
for i in 0..3 { let vm = machine(); vm.add_args("-M", "none"); vms.push(vm); }
parallel(vms, |vm| {
    vm.launch();
    print(`pid ${vm.get_pid()}`);
    if vm.name == "vm1" { vm.command("no-such-command"); }
});
"#,
    );
    let o = w.run(&["run", "t.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("t.rhai:6:"), "{out}");
    assert!(out.contains("MonitorResponseError"), "{out}");
    assert_eq!(printed_pids(&out).len(), 3, "{out}");
    for p in printed_pids(&out) {
        assert!(!is_qemu(p), "QEMU {p} outlived the script");
    }
    w.assert_clean();
}

#[test]
fn the_run_timeout_ends_waits_in_every_branch() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
parallel(0..3, |i| {
    let vm = machine();
    vm.add_args("-M", "none");
    vm.launch();
    print(`pid ${vm.get_pid()}`);
    vm.event_wait("NEVER", 120);
});
"#,
    );
    let start = Instant::now();
    let o = w.run(&["run", "--timeout", "3", "--no-capture", "t.rhai"]);
    let took = start.elapsed();
    let out = stdout(&o);
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("Timeout: the test timed out after 3s"),
        "{out}"
    );
    assert_eq!(printed_pids(&out).len(), 3, "{out}");
    w.assert_clean();
}

/// `vm.kill()` in one branch ends the machine's `event_wait` in another
/// at once: the kill does not queue behind the wait for the machine.
#[test]
fn a_kill_from_another_branch_ends_a_running_event_wait() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
let vm = machine();
vm.add_args("-M", "none", "-nodefaults");
vm.launch();
// Each branch has its own copy of the Machine, naming the same QEMU.
let r = parallel([#{ vm: vm, kill: false }, #{ vm: vm, kill: true }], |b| {
    let m = b.vm;
    if b.kill {
        sleep(1);
        m.kill();
        "killed"
    } else {
        let msg = "no error";
        try { m.event_wait("NEVER", 120); } catch (e) { msg = `${e.kind}: ${e.message}`; }
        msg
    }
});
print(`wait: ${r[0]}`);
assert_eq(r[1], "killed");
assert(!vm.is_running(), "the machine is down");
"#,
    );
    let start = Instant::now();
    let o = w.run(&["run", "--no-capture", "--timeout", "100", "t.rhai"]);
    let took = start.elapsed();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {out}");
    assert!(
        out.contains("wait: ") && out.contains("NEVER") && out.contains("-9"),
        "{out}"
    );
    w.assert_clean();
}
