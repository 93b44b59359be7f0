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
    assert!(pids.iter().all(|&p| pid_exists(p)));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| pid_exists(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| pid_exists(p)).collect();
    assert!(alive.is_empty(), "QEMU outlived its parent: {alive:?}");
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
