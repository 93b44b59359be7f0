//! The boot cache's binding: `vm.launch_guest(options)`, which
//! `guest::boot` calls, and the in-test snapshots `vm.snapshot_save(name)`
//! and `vm.snapshot_load(name)`. The work is [`crate::bootcache`]'s.

use rhai::{Dynamic, Engine, Map, NativeCallContext};

use crate::bootcache::{self, Request};

use super::args;
use super::docs::func;
use super::errors::{self, ScriptResult};
use super::machine_api::{opt_string, MachineRef};
use super::run::{lock, Run};

/// The keys of `launch_guest`'s options.
const OPTIONS: &[&str] = &["ready", "timeout", "snapshot", "refuse"];

fn launch_guest(ctx: &NativeCallContext, vm: &MachineRef, o: &Map) -> ScriptResult<String> {
    args::known_keys(o, OPTIONS, "launch_guest()")?;
    let run = Run::of(ctx)?;
    run.check_cancelled()?;
    let get = |k: &str| o.get(k).cloned().unwrap_or(Dynamic::UNIT);
    let ready = opt_string(&get("ready"), "ready")?.unwrap_or_else(|| "VMSCRIPT-READY".into());
    let timeout = match o.get("timeout") {
        Some(t) if !t.is_unit() => args::secs(t, "timeout")?,
        _ => args::scaled(std::time::Duration::from_secs(120)),
    };
    let snapshot = match o.get("snapshot") {
        Some(s) if !s.is_unit() => args::boolean(s, "snapshot")?,
        _ => true,
    };
    let refuse = opt_string(&get("refuse"), "refuse")?;
    let log = |text: &str| run.log(text);
    let req = Request {
        ready: &ready,
        timeout,
        snapshot,
        refuse,
        scratch: run.temp_dir(),
        log: &log,
    };
    let _doing = run.doing(ctx, format!("waiting for {ready:?} on the console"));
    let outcome = bootcache::boot(&mut lock(vm.machine()), &req).map_err(errors::machine_error)?;
    if run.cancel().is_cancelled() {
        lock(vm.machine()).kill();
        run.check_cancelled()?;
    }
    Ok(outcome.as_str().to_string())
}

/// Registers the functions.
pub fn register(e: &mut Engine) {
    func(
        "launch_guest(vm: Machine, options: Map) -> String",
        "Launches a machine configured as guest::create makes it and waits until its shell is up, restoring a saved boot from the boot cache when there is one. Options: ready (the text that says the shell is up), timeout (120), snapshot (false: boot from scratch), refuse (why the boot must not be cached). Returns \"restored\", \"saved\" (booted and saved) or \"booted\".",
    )
    .register_into_engine(e, |ctx: NativeCallContext, vm: &mut MachineRef, o: Map| {
        launch_guest(&ctx, vm, &o)
    });
    func(
        "snapshot_save(vm: Machine, name: String)",
        "Saves the running machine as snapshot `name`, to roll back to with snapshot_load(name). QEMU's internal snapshots (snapshot-save): memory and devices go to a qcow2 file in the machine's temp dir, and each writable disk, which must be qcow2 (guest::boot's are), keeps a snapshot of its own, so disks roll back with the machine. The same QEMU goes on: console, monitor and pid stay. Saving the same name again replaces it.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, name: &str| {
        vm.with(|m| m.snapshot_save(name, args::scaled(SNAPSHOT_WAIT)))
    });
    func(
        "snapshot_load(vm: Machine, name: String)",
        "Rolls the running machine back to snapshot `name` (snapshot-load): memory, devices and disks as they were at snapshot_save(name); it runs on from there. An unknown name is a QEMUMachineError. The guest's wall clock goes back with it.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, name: &str| {
        vm.with(|m| m.snapshot_load(name, args::scaled(SNAPSHOT_WAIT)))
    });
}

/// How long an in-test snapshot may take to save or load.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
