//! Starting and stopping QEMU (`launch`, `shutdown`, `kill`, `wait`),
//! what can be asked of its process (`is_running`, `exitcode`, `get_pid`,
//! `get_log`), and the process-level channels: qtest lines and descriptors
//! passed over the QMP socket.

use std::path::Path;
use std::time::Duration;

use rhai::{Dynamic, Engine, Map, NativeCallContext, INT};

use crate::machine::{process, Machine};
use crate::script::args;
use crate::script::convert;
use crate::script::docs::func;
use crate::script::errors::{self, ScriptResult};
use crate::script::run::Run;

use super::MachineRef;

/// `QEMUMachine.shutdown`'s and `wait`'s default timeout.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// `vm.launch()`, refusing a cancelled run and killing a QEMU that came up
/// while it was being cancelled.
fn launch(ctx: NativeCallContext, vm: &mut MachineRef) -> ScriptResult<()> {
    let run = Run::of(&ctx)?;
    run.check_cancelled()?;
    vm.with(Machine::launch)?;
    if run.cancel().is_cancelled() {
        vm.with(|m| {
            m.kill();
            Ok(())
        })?;
        run.check_cancelled()?;
    }
    Ok(())
}

fn shutdown(vm: &MachineRef, options: &Map) -> ScriptResult<()> {
    args::known_keys(options, &["hard", "timeout"], "shutdown()")?;
    let hard = match options.get("hard") {
        Some(v) => args::boolean(v, "hard")?,
        None => false,
    };
    let timeout = match options.get("timeout") {
        Some(v) => args::secs(v, "timeout")?,
        None => args::scaled(SHUTDOWN_WAIT),
    };
    vm.with(|m| m.shutdown(hard, timeout))
}

fn send_fd_scm(vm: &MachineRef, options: &Map) -> ScriptResult<INT> {
    args::known_keys(options, &["fd", "file_path"], "send_fd_scm()")?;
    match (options.get("fd"), options.get("file_path")) {
        (Some(fd), None) => {
            let not_open = || errors::misuse(format!("send_fd_scm: fd {fd} is not open"));
            let raw = fd
                .as_int()
                .ok()
                .and_then(|f| i32::try_from(f).ok())
                .ok_or_else(not_open)?;
            process::with_open_fd(raw, |fd| vm.with(|m| m.send_fd_scm(fd)))
                .ok_or_else(not_open)??;
        }
        (None, Some(p)) => {
            let p = args::string(p, "file_path")?;
            vm.with(|m| m.send_file_scm(Path::new(&p)))?;
        }
        _ => {
            return Err(errors::misuse(
                "send_fd_scm: give exactly one of #{fd: n} or #{file_path: p}",
            ))
        }
    }
    Ok(0)
}

pub(super) fn register_lifecycle(e: &mut Engine) {
    func(
        "launch(vm: Machine)",
        "Starts QEMU and negotiates QMP; VMLaunchFailure (exitcode, command, output) on failure.",
    )
    .register_into_engine(e, launch);
    func(
        "shutdown(vm: Machine)",
        "Quits QEMU by QMP, waits up to 30s, then SIGKILL; cleans up. No-op when not launched.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.with(|m| m.shutdown(false, args::scaled(SHUTDOWN_WAIT)))
    });
    func(
        "shutdown(vm: Machine, options: Map)",
        "shutdown() with #{hard, timeout}; AbnormalShutdown (after cleanup) if QEMU was killed.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, o: Map| shutdown(vm, &o));
    func(
        "kill(vm: Machine)",
        "SIGKILLs QEMU and cleans up; at once, even while another branch waits on the machine \
         (its wait then fails).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        // First without the machine's lock: a wait on the machine in
        // another branch holds it, and ends when QEMU dies.
        vm.1.kill();
        vm.with(|m| {
            m.kill();
            Ok(())
        })
    });
    func(
        "wait(vm: Machine)",
        "Waits up to 30s for QEMU to exit by itself (guest poweroff), then cleans up.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.with(|m| m.wait(args::scaled(SHUTDOWN_WAIT)))
    });
    func(
        "wait(vm: Machine, timeout: secs)",
        "Waits up to `timeout` for QEMU to exit by itself, then cleans up.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, t: Dynamic| {
        let t = args::secs(&t, "timeout")?;
        vm.with(|m| m.wait(t))
    });
    func(
        "is_running(vm: Machine) -> bool",
        "Whether QEMU is running.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| vm.get(Machine::is_running));
    func(
        "exitcode(vm: Machine) -> int",
        "QEMU's exit code (negative for a signal), or () while it runs.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| convert::opt_int(m.exitcode()))
    });
    func(
        "get_pid(vm: Machine) -> int",
        "QEMU's pid while it runs, else ().",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| convert::opt_int(m.get_pid()))
    });
    func(
        "get_log(vm: Machine) -> String",
        "QEMU's output once it has exited, else ().",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| m.get_log().map_or(Dynamic::UNIT, |l| l.to_string().into()))
    });
    func(
        "qtest(vm: Machine, line: String) -> String",
        "Sends one qtest command line; returns the reply line.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, line: &str| {
        vm.with(|m| m.qtest(line))
    });
    func(
        "send_fd_scm(vm: Machine, options: Map) -> int",
        "Passes #{fd: n} or #{file_path: p} to QEMU over the QMP socket (SCM_RIGHTS); returns 0.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, o: Map| send_fd_scm(vm, &o));
}
