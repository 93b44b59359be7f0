//! QEMU never outlives vmscript: a process that launched machines is
//! SIGKILLed, and the parent-death signal takes every QEMU down with it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

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
            "helper_launch_four_and_wait",
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
