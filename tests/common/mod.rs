//! Helpers shared by the integration tests: real QEMU, the test guest,
//! and leak checks on this process.
#![allow(dead_code)]

pub mod world;

use std::path::PathBuf;
use std::time::Duration;

use vmscript::machine::{Machine, MachineOptions};

pub const QEMU: &str = "qemu-system-x86_64";

/// A `-M none` machine's options (plus `extra` arguments).
pub fn none_options(extra: &[&str]) -> MachineOptions {
    let mut o = MachineOptions::new(QEMU);
    o.args = ["-M", "none", "-nodefaults"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    o
}

pub fn launched(extra: &[&str]) -> Machine {
    let mut vm = Machine::new(none_options(extra)).unwrap();
    vm.launch().unwrap();
    vm
}

/// The test guest built by scripts/build-guest.sh.
pub fn guest_dir() -> PathBuf {
    let dir = std::env::var_os("VMSCRIPT_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/guest"));
    assert!(
        dir.join("vmlinuz").exists() && dir.join("initrd.gz").exists(),
        "the test guest is missing in {}: run scripts/build-guest.sh",
        dir.display()
    );
    dir
}

/// Options that boot the test guest with its console on the first serial port.
pub fn guest_options() -> MachineOptions {
    let g = guest_dir();
    let mut o = MachineOptions::new(QEMU);
    o.args = vec![
        "-accel".into(),
        "tcg".into(),
        "-M".into(),
        "q35".into(),
        "-m".into(),
        "256".into(),
        "-kernel".into(),
        g.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        g.join("initrd.gz").display().to_string(),
        "-append".into(),
        "console=ttyS0 quiet panic=-1".into(),
        "-no-reboot".into(),
        "-nodefaults".into(),
    ];
    o
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Live (non-zombie or zombie) children of this process.
pub fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: i32 = rest.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == me {
            out.push(pid);
        }
    }
    out
}

/// True while `pid` exists (zombies included).
pub fn pid_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
