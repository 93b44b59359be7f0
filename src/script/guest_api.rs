//! The guest agent in scripts: the `Machine` functions stdlib `guest`
//! builds `guest::run`, `guest::copy_to`, `guest::copy_from` and
//! `guest::collect_on_failure` on, over [`crate::machine::Agent`].

use std::path::PathBuf;

use rhai::{Array, Blob, Dynamic, Engine, Map, NativeCallContext, INT};

use crate::machine::{self, Agent, RunOutput};

use super::args;
use super::docs::{func, getter};
use super::errors::{self, ScriptResult};
use super::machine_api::MachineRef;
use super::run::{self, lock, Run};

/// The agent of `vm` when it has one that answers; the first time a
/// machine turns out to have none, the run's log says so.
fn agent(ctx: &NativeCallContext, vm: &MachineRef) -> ScriptResult<Option<Agent>> {
    let (name, agent) = {
        let m = lock(vm.machine());
        let agent = m.guest_agent().map_err(errors::machine_error)?;
        (m.name().to_string(), agent)
    };
    let answering = match &agent {
        Some(a) => a.available().map_err(errors::machine_error)?,
        None => false,
    };
    if !answering {
        let run = Run::of(ctx)?;
        if run.first_time(&format!("no guest agent {name}")) {
            let why = if agent.is_some() {
                format!(
                    "the guest did not answer on its {} port",
                    machine::agent::PORT_NAME
                )
            } else {
                "it has no guest agent port".to_string()
            };
            run.log(&format!(
                "{name}: {why}; commands go through the serial console instead"
            ));
        }
    }
    Ok(agent.filter(|_| answering))
}

/// `bytes` as a string when they are UTF-8, else as a BLOB.
fn text_or_blob(bytes: Vec<u8>) -> Dynamic {
    match String::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(e) => Dynamic::from_blob(e.into_bytes() as Blob),
    }
}

fn output_map(r: RunOutput) -> Map {
    let mut output = r.stdout.clone();
    output.extend_from_slice(&r.stderr);
    let mut map = Map::new();
    map.insert("status".into(), Dynamic::from_int(r.status as INT));
    map.insert("stdout".into(), text_or_blob(r.stdout));
    map.insert("stderr".into(), text_or_blob(r.stderr));
    map.insert("output".into(), text_or_blob(output));
    map
}

/// Registers the agent's functions on `Machine`.
pub fn register(e: &mut Engine) {
    func(
        "set_guest_agent(vm: Machine)",
        "Adds a virtio-serial port for the guest agent (scripts/guest-agent.sh), before launch.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        lock(vm.machine())
            .set_guest_agent()
            .map_err(errors::machine_error)
    });
    getter(
        "Machine",
        "guest_agent",
        "bool",
        "Whether set_guest_agent added the guest agent's port.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| -> ScriptResult<bool> {
        Ok(lock(vm.machine()).has_guest_agent())
    });
    func(
        "guest_agent_run(vm: Machine, cmd: String, timeout: int, max: int) -> Map",
        "Runs cmd on the guest agent: #{status, stdout, stderr, output} (text, or BLOBs when not UTF-8); () when the guest has no agent. The command is killed after timeout seconds (Timeout); more than max bytes of output is an error.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext,
         vm: &mut MachineRef,
         cmd: &str,
         timeout: Dynamic,
         max: INT|
         -> ScriptResult<Dynamic> {
            let timeout = args::secs(&timeout, "guest_agent_run: timeout")?;
            let max = u64::try_from(max)
                .map_err(|_| errors::misuse(format!("guest_agent_run: max {max} is negative")))?;
            let _doing = run::doing(&ctx, format!("running `{cmd}` in the guest"));
            let Some(a) = agent(&ctx, vm)? else {
                return Ok(Dynamic::UNIT);
            };
            let r = a.run(cmd, timeout, max).map_err(errors::machine_error)?;
            Ok(output_map(r).into())
        },
    );
    func(
        "guest_agent_copy_to(vm: Machine, host_path: String, guest_path: String)",
        "Copies a host file into the guest over the guest agent, byte for byte.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, from: &str, to: &str| {
            let _doing = run::doing(&ctx, format!("copying {from} to {to} in the guest"));
            need(&ctx, vm, "guest::copy_to")?
                .copy_to(&PathBuf::from(from), to)
                .map_err(errors::machine_error)
        },
    );
    func(
        "guest_agent_copy_from(vm: Machine, guest_path: String, host_path: String)",
        "Copies a guest file to the host over the guest agent, byte for byte.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, from: &str, to: &str| {
            let _doing = run::doing(&ctx, format!("copying {from} in the guest to {to}"));
            need(&ctx, vm, "guest::copy_from")?
                .copy_from(from, &PathBuf::from(to))
                .map_err(errors::machine_error)
        },
    );
    func(
        "collect_on_failure(vm: Machine, guest_paths: Array)",
        "When the test fails, copies these guest files (over the guest agent) into its artifacts as NAME-files/PATH.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, paths: Array| -> ScriptResult<()> {
            let paths = args::strings(&Dynamic::from_array(paths), "collect_on_failure")?;
            Run::of(&ctx)?.collect_on_failure(vm.machine().clone(), paths);
            Ok(())
        },
    );
}

/// The agent of `vm`, or an error naming `what` when it has none.
fn need(ctx: &NativeCallContext, vm: &MachineRef, what: &str) -> ScriptResult<Agent> {
    agent(ctx, vm)?.ok_or_else(|| {
        errors::machine_error(machine::Error::Host {
            what: what.to_string(),
            message: format!(
                "the machine has no guest agent that answers (booted without its {} port, or without scripts/guest-agent.sh in the guest)",
                machine::agent::PORT_NAME
            ),
        })
    })
}
