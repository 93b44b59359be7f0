//! A running machine's whole state (CPU, memory, devices) saved to a file
//! and loaded back into a new QEMU, by migration: `migrate` to a
//! descriptor passed with `getfd`, and `-incoming defer` plus
//! `migrate-incoming` from one. QEMU 7.2 has no `file:` migration URI,
//! and a descriptor needs no helper process.
//!
//! Disk contents are not in the state: whoever saves one keeps the disks
//! as they were at that moment (the boot cache copies their overlays).

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{Error, Machine, Result};

/// The name the state file's descriptor gets in QEMU.
const FD_NAME: &str = "vmscript-state";

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("QMP arguments are written as objects"),
    }
}

impl Machine {
    /// Stops the guest and writes its state to `file`. The machine stays
    /// paused (QEMU's `postmigrate`) until [`Machine::resume`].
    pub fn save_state(&mut self, file: &File, timeout: Duration) -> Result<()> {
        self.send_fd_scm(file.as_fd())?;
        self.command("getfd", Some(&args(json!({ "fdname": FD_NAME }))), false)?;
        // QEMU's default limit, 32 MiB/s, would make a 256 MiB guest take
        // seconds to write to a local file.
        self.command(
            "migrate-set-parameters",
            Some(&args(json!({ "max-bandwidth": 1u64 << 40 }))),
            false,
        )?;
        // Stopped first, the state is one instant: no dirty pages to chase.
        self.command("stop", None, false)?;
        self.command(
            "migrate",
            Some(&args(json!({ "uri": format!("fd:{FD_NAME}") }))),
            false,
        )?;
        self.wait_migration("saving the machine's state", timeout)
    }

    /// Lets a stopped guest run again (`cont`).
    pub fn resume(&mut self) -> Result<()> {
        self.command("cont", None, false).map(drop)
    }

    /// Launches the machine from a state [`Machine::save_state`] wrote,
    /// with the same command line plus `-incoming defer`, and lets it run.
    /// On failure QEMU is killed; a state QEMU cannot read makes it exit.
    pub fn launch_from_state(&mut self, file: &File, timeout: Duration) -> Result<()> {
        self.incoming = true;
        let launched = self.launch();
        self.incoming = false;
        launched?;
        let loaded = self.load_state(file, timeout);
        if loaded.is_err() {
            self.kill();
        }
        loaded
    }

    fn load_state(&mut self, file: &File, timeout: Duration) -> Result<()> {
        self.send_fd_scm(file.as_fd())?;
        self.command("getfd", Some(&args(json!({ "fdname": FD_NAME }))), false)?;
        self.command(
            "migrate-incoming",
            Some(&args(json!({ "uri": format!("fd:{FD_NAME}") }))),
            false,
        )?;
        self.wait_migration("loading the machine's state", timeout)?;
        let status = self.command("query-status", None, false)?;
        if status["running"] != Value::Bool(true) {
            self.resume()?;
        }
        Ok(())
    }

    /// Polls `query-migrate` until the migration completes or fails.
    fn wait_migration(&mut self, what: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.command("query-migrate", None, false)?;
            match info["status"].as_str() {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    let why = info["error-desc"].as_str().unwrap_or("no reason given");
                    return Err(Error::Machine(format!("{what}: migration {s}: {why}")));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    after: timeout,
                    seen: Vec::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
