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

/// The node that holds in-test snapshots' device state.
const VMSTATE_NODE: &str = "vmscript-vmstate";

impl Machine {
    /// Saves the running machine as snapshot `name` (QEMU's internal
    /// snapshots, `snapshot-save`): devices and memory go to a qcow2 node
    /// of ours in the machine's temp dir, each writable disk gets an
    /// internal snapshot of its own, so [`Machine::snapshot_load`] rolls
    /// back both. Every writable disk must be qcow2; a raw one could not
    /// be rolled back, and is an error.
    pub fn snapshot_save(&mut self, name: &str, timeout: Duration) -> Result<()> {
        // QMP's snapshot-save refuses a name that exists; a test saving
        // the same point again means to replace it.
        if self.has_snapshot(name)? {
            self.snapshot_job("snapshot-delete", name, timeout)?;
        }
        self.snapshot_job("snapshot-save", name, timeout)
    }

    fn has_snapshot(&mut self, name: &str) -> Result<bool> {
        let nodes = self.command("query-named-block-nodes", None, false)?;
        Ok(nodes.as_array().is_some_and(|a| {
            a.iter()
                .filter(|n| n["node-name"] == VMSTATE_NODE)
                .flat_map(|n| n["image"]["snapshots"].as_array().into_iter().flatten())
                .any(|s| s["name"] == name)
        }))
    }

    /// Rolls the machine back to snapshot `name` (`snapshot-load`): same
    /// QEMU, same console and monitor; the guest goes on from that point.
    pub fn snapshot_load(&mut self, name: &str, timeout: Duration) -> Result<()> {
        // Checked first: QEMU stops the guest before it looks, and a
        // failed load leaves it stopped.
        if !self.has_snapshot(name)? {
            return Err(Error::Machine(format!(
                "snapshot_load: no snapshot {name:?} on the machine {}; save it first with snapshot_save",
                self.name
            )));
        }
        self.snapshot_job("snapshot-load", name, timeout)
    }

    fn snapshot_job(&mut self, command: &str, name: &str, timeout: Duration) -> Result<()> {
        let what = command.replace('-', "_");
        if name.is_empty() {
            return Err(Error::Machine(format!("{what}: a snapshot needs a name")));
        }
        let mut devices = self.snapshot_disks(&what)?;
        self.ensure_vmstate_node(&what)?;
        devices.push(VMSTATE_NODE.to_string());
        let job = format!("vmscript-{command}");
        let mut a = args(json!({ "job-id": job, "tag": name, "devices": devices }));
        if command != "snapshot-delete" {
            a.insert("vmstate".into(), VMSTATE_NODE.into());
        }
        self.command(command, Some(&a), false)?;
        let deadline = Instant::now() + timeout;
        loop {
            let jobs = self.command("query-jobs", None, false)?;
            let mine = jobs
                .as_array()
                .and_then(|a| a.iter().find(|j| j["id"] == job.as_str()))
                .cloned();
            let Some(j) = mine else {
                return Err(Error::Machine(format!("{what}: the job {job} vanished")));
            };
            if j["status"] == "concluded" {
                let _ = self.command("job-dismiss", Some(&args(json!({ "id": job }))), false);
                return match j["error"].as_str() {
                    Some(e) => Err(Error::Machine(format!("{what} {name:?}: {e}"))),
                    None => Ok(()),
                };
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} {name:?}"),
                    after: timeout,
                    seen: Vec::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node names of the writable disks; an error for one that is not
    /// qcow2.
    fn snapshot_disks(&mut self, what: &str) -> Result<Vec<String>> {
        let blocks = self.command("query-block", None, false)?;
        let mut nodes = Vec::new();
        for b in blocks.as_array().into_iter().flatten() {
            let Some(ins) = b.get("inserted") else {
                continue;
            };
            if ins["ro"] == Value::Bool(true) {
                continue;
            }
            let device = b["qdev"].as_str().or(b["device"].as_str()).unwrap_or("?");
            if ins["drv"] != "qcow2" {
                return Err(Error::Machine(format!(
                    "{what}: the disk {device} is {}, and only qcow2 disks can be rolled back \
                     with the machine (guest::boot puts disks on qcow2 overlays)",
                    ins["drv"].as_str().unwrap_or("of an unknown format")
                )));
            }
            if let Some(n) = ins["node-name"].as_str() {
                nodes.push(n.to_string());
            }
        }
        Ok(nodes)
    }

    /// Adds the qcow2 node in-test snapshots keep device state in, once
    /// per QEMU.
    fn ensure_vmstate_node(&mut self, what: &str) -> Result<()> {
        let nodes = self.command("query-named-block-nodes", None, false)?;
        let there = nodes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["node-name"] == VMSTATE_NODE));
        if there {
            return Ok(());
        }
        let dir = self
            .temp_dir()
            .ok_or_else(|| self.not_running(what))?
            .to_path_buf();
        let file = dir.join("vmstate.qcow2");
        let img = self
            .opts
            .binary
            .parent()
            .map(|d| d.join("qemu-img"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| "qemu-img".into());
        let out = std::process::Command::new(&img)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&file)
            .arg("1M")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::host(format!("{what}: running {}", img.display()), e))?;
        if !out.status.success() {
            return Err(Error::host(
                format!("{what}: creating {}", file.display()),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        self.command(
            "blockdev-add",
            Some(&args(json!({
                "driver": "qcow2", "node-name": VMSTATE_NODE,
                "file": { "driver": "file", "filename": file.display().to_string() }
            }))),
            false,
        )
        .map(drop)
    }
}
