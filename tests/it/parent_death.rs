//! QEMU never outlives vmscript: a process that launched machines is
//! SIGKILLed, and the parent-death signal takes every QEMU down with it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Run in a child process by the test below: launches four machines,
/// prints their pids and waits to be killed.
#[test]
#[ignore = "helper run by qemu_dies_with_a_sigkilled_parent"]
fn helper_launch_four_and_wait() {
    if std::env::var_os("VMSCRIPT_PARENT_DEATH_HELPER").is_none() {
        return;
    }
    let vms: Vec<_> = (0..4).map(|_| launched(&[])).collect();
    let pids: Vec<String> = vms
        .iter()
        .map(|v| v.get_pid().unwrap().to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn qemu_dies_with_a_sigkilled_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "parent_death::helper_launch_four_and_wait",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VMSCRIPT_PARENT_DEATH_HELPER", "1")
        // A SIGKILLed process cannot remove its temp folders: keep them
        // in one this test owns and removes.
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pids: Vec<i32> = loop {
        let line = lines.next().expect("helper ended without pids").unwrap();
        // libtest may print the test's name on the same line first.
        if let Some(at) = line.find("PIDS ") {
            break line[at + 5..]
                .split(' ')
                .map(|p| p.parse().unwrap())
                .collect();
        }
    };
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|&p| alive(p)));
    child.kill().unwrap();
    child.wait().unwrap();
    // Not a zombie: the killed QEMUs are reaped by whoever adopts
    // orphans on this machine, which is not this test.
    assert_eq!(
        still_alive_after_5s(&pids),
        Vec::<i32>::new(),
        "QEMU outlived its parent"
    );
}

/// A SIGKILLed `vmscript run` runs no cleanup: its QEMUs die with it (the
/// parent-death signal), and the next vmscript removes the temp folder it
/// left, but not the folder of a run still alive.
#[test]
fn the_next_run_removes_what_a_sigkilled_run_left() {
    use crate::common::world::{is_qemu, signal, World};
    let w = World::new();
    w.script(
        "hold.rhai",
        "let vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\n\
         print(`pid ${vm.get_pid()}`);\nprint(\"ready\");\nsleep(60);\n",
    );
    w.script("ok/t.rhai", "assert(true);\n");
    let run_dirs = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(w.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vmscript-run-"))
            .collect();
        v.sort();
        v
    };
    let mut killed = w.spawn(&["run", "--no-capture", "hold.rhai"]);
    killed.until("ready");
    let killed_dir = run_dirs();
    assert_eq!(killed_dir.len(), 1);
    let mut live = w.spawn(&["run", "--no-capture", "hold.rhai"]);
    live.until("ready");
    let live_dir: Vec<String> = run_dirs()
        .into_iter()
        .filter(|d| !killed_dir.contains(d))
        .collect();
    assert_eq!(live_dir.len(), 1);

    signal(killed.child.id() as i32, libc::SIGKILL);
    killed.child.wait().unwrap();
    let qemu = killed.pids()[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_qemu(qemu) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_qemu(qemu), "QEMU outlived its killed vmscript");
    assert_eq!(run_dirs().len(), 2, "a killed run removed its own folder");

    let o = w.run(&["run", "ok"]);
    assert!(o.status.success(), "{}", crate::common::world::stdout(&o));
    assert_eq!(run_dirs(), live_dir, "the sweep took the wrong folders");

    // The live run is unharmed and cleans up after itself.
    assert!(is_qemu(live.pids()[0]));
    signal(live.child.id() as i32, libc::SIGTERM);
    live.finish();
    w.assert_clean();
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Waits up to 5 s for every one of `pids` to be gone; those still alive.
fn still_alive_after_5s(pids: &[i32]) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.iter().copied().filter(|&p| alive(p)).collect()
}

/// Starts `vmscript run` on `script`, reads its output up to `ready`,
/// then SIGKILLs it; the pids it printed, and `with_pids` run on them
/// first (before the kill).
fn sigkill_when_ready(
    w: &crate::common::world::World,
    script: &str,
    with_pids: impl FnOnce(&[i32]) -> Vec<i32>,
) -> Vec<i32> {
    use crate::common::world::signal;
    w.script("hold.rhai", script);
    let mut run = w.spawn(&["run", "--no-capture", "hold.rhai"]);
    run.until("ready");
    let pids = with_pids(&run.pids());
    signal(run.child.id() as i32, libc::SIGKILL);
    run.child.wait().unwrap();
    pids
}

/// Runs a passing script, whose start removes the temp folder of the
/// killed run, then checks that nothing of either run is left.
fn assert_clean_after_next_run(w: &crate::common::world::World) {
    w.script("ok/t.rhai", "assert(true);\n");
    let o = w.run(&["run", "ok"]);
    assert!(o.status.success(), "{}", crate::common::world::stdout(&o));
    w.assert_clean();
}

/// The parent-death signal reaches only vmscript's own child: a wrapper
/// that forks QEMU (rather than exec it) dies with vmscript, and QEMU,
/// in the wrapper's process group, must be killed with that group.
#[test]
fn a_qemu_forked_by_its_wrapper_dies_with_a_sigkilled_vmscript() {
    use crate::common::world::{children_of, is_qemu, World};
    let w = World::new();
    let qemu = sigkill_when_ready(
        &w,
        r#"
let vm = machine(#{wrapper: ["sh", "-c", "\"$@\"; echo done", "sh"]});
vm.add_args("-M", "none");
vm.launch();
print(`pid ${vm.get_pid()}`);
print("ready");
sleep(60);
"#,
        |wrapper| {
            let qemu = children_of(wrapper[0], "qemu-system");
            assert_eq!(qemu.len(), 1, "the wrapper's QEMU: {qemu:?}");
            assert!(is_qemu(qemu[0]));
            qemu
        },
    );
    assert_eq!(
        still_alive_after_5s(&qemu),
        Vec::<i32>::new(),
        "QEMU outlived its killed vmscript"
    );
    assert_clean_after_next_run(&w);
}

/// A command's background child has no parent-death signal of its own;
/// it is in the command's process group, which must die with vmscript.
#[test]
fn what_run_host_left_in_the_background_dies_with_a_sigkilled_vmscript() {
    let w = crate::common::world::World::new();
    let sleep = sigkill_when_ready(
        &w,
        r#"
let s = run_host(["sh", "-c", "sleep 40 >/dev/null 2>&1 & echo $!"]).stdout;
s.trim();
print(`pid ${s}`);
print("ready");
sleep(60);
"#,
        |pids| {
            assert_eq!(pids.len(), 1);
            assert!(alive(pids[0]));
            pids.to_vec()
        },
    );
    assert_eq!(
        still_alive_after_5s(&sleep),
        Vec::<i32>::new(),
        "the background child outlived vmscript"
    );
    assert_clean_after_next_run(&w);
}
