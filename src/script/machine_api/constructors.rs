//! Making machines: `machine`, `qtest_machine` and `vms`, with the
//! options map of `machine(binary, options)`; and the global functions
//! registered beside them (`event_match`, `open_fd`, `close_fd`).

use std::path::PathBuf;

use rhai::{Array, Dynamic, Engine, Map, NativeCallContext, INT};

use crate::machine::{self, Machine, MachineOptions};
use crate::qmp::Address;
use crate::script::args;
use crate::script::docs::func;
use crate::script::errors::{self, ScriptResult};
use crate::script::run::Run;

use super::qmp::json;
use super::{opt_string, MachineRef};

/// The keys of `machine(binary, options)`.
pub(crate) const MACHINE_OPTIONS: &[&str] = &[
    "args",
    "wrapper",
    "name",
    "base_temp_dir",
    "monitor_address",
    "sock_dir",
    "log_dir",
    "drain_console",
    "console_log",
    "qmp_timer",
];

/// Applies the `options` map of `machine(binary, options)`.
fn apply_options(opts: &mut MachineOptions, options: &Map) -> ScriptResult<()> {
    args::known_keys(options, MACHINE_OPTIONS, "machine()")?;
    let path = |v: &Dynamic, k: &str| args::string(v, k).map(PathBuf::from);
    for (k, v) in options {
        let k = k.as_str();
        match k {
            "args" => opts.args = args::strings(v, k)?,
            "wrapper" => opts.wrapper = args::strings(v, k)?,
            "name" => opts.name = Some(args::string(v, k)?),
            "base_temp_dir" => opts.base_temp_dir = Some(path(v, k)?),
            "sock_dir" => opts.sock_dir = Some(path(v, k)?),
            "log_dir" => opts.log_dir = Some(path(v, k)?),
            "console_log" => opts.console_log = Some(path(v, k)?),
            "drain_console" => opts.drain_console = args::boolean(v, k)?,
            "qmp_timer" => opts.qmp_timer = args::secs(v, k)?,
            "monitor_address" => opts.monitor_address = Some(monitor_address(v)?),
            _ => unreachable!("known_keys checked the key"),
        }
    }
    Ok(())
}

/// A path (unix socket) or `[host, port]` (TCP).
fn monitor_address(v: &Dynamic) -> ScriptResult<Address> {
    if let Ok(p) = args::string(v, "monitor_address") {
        return Ok(Address::Unix(p.into()));
    }
    let pair = v.read_lock::<Array>();
    match pair.as_ref().map(|a| a.as_slice()) {
        Some([host, port]) => {
            let host = args::string(host, "monitor_address host")?;
            let port = port
                .as_int()
                .ok()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| errors::bad_type("monitor_address port", "a port INT", port))?;
            Ok(Address::Tcp(host, port))
        }
        _ => Err(errors::bad_type(
            "monitor_address",
            "a socket path or [host, port]",
            v,
        )),
    }
}

/// `machine(binary, options)`: `binary` may be `()` for the default, and
/// a lone map stands for the options.
fn make_machine(
    ctx: &NativeCallContext,
    binary: &Dynamic,
    options: Option<&Map>,
) -> ScriptResult<MachineRef> {
    let run = Run::of(ctx)?;
    run.check_cancelled()?;
    if let (Some(m), None) = (binary.read_lock::<Map>(), options) {
        return make_machine(ctx, &Dynamic::UNIT, Some(&m));
    }
    let binary = opt_string(binary, "binary")?;
    let mut opts = run.machine_options(binary.as_deref())?;
    if let Some(o) = options {
        apply_options(&mut opts, o)?;
    }
    run.add_machine(opts).map(MachineRef::new)
}

/// As Python's `QEMUQtestMachine`: configured here, launched by the
/// script, so `add_args` and `set_machine` still apply.
fn qtest_machine(
    ctx: &NativeCallContext,
    binary: &Dynamic,
    options: Option<&Map>,
) -> ScriptResult<MachineRef> {
    let vm = make_machine(ctx, binary, options)?;
    vm.with(Machine::enable_qtest)?;
    Ok(vm)
}

pub(super) fn register_constructors(e: &mut Engine) {
    func(
        "machine() -> Machine",
        "A machine using the default QEMU binary (--qemu, $VMSCRIPT_QEMU, qemu-system-<arch>).",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        make_machine(&ctx, &Dynamic::UNIT, None)
    });
    func(
        "machine(binary_or_options: String|Map) -> Machine",
        "A machine running QEMU from `binary` (`()` for the default), or machine(options) with the default binary.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, b: Dynamic| {
        make_machine(&ctx, &b, None)
    });
    func(
        "machine(binary: String, options: Map) -> Machine",
        "A machine with options: args, wrapper, name, base_temp_dir, monitor_address (a socket path or [host, port]), sock_dir, log_dir, drain_console, console_log, qmp_timer (an unknown key is an error that lists the valid ones).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, b: Dynamic, o: Map| {
        make_machine(&ctx, &b, Some(&o))
    });
    func(
        "vms() -> Array",
        "Every machine the test (or REPL session) made so far, oldest first, launched or not.",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        Run::of(&ctx).map(|run| {
            run.machines()
                .into_iter()
                .map(|m| Dynamic::from(MachineRef::new(m)))
                .collect::<Array>()
        })
    });
    func(
        "qtest_machine(binary: String, options: Map) -> Machine",
        "A machine with a qtest socket, not yet launched: configure it, launch() it, then vm.qtest(line).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, b: Dynamic, o: Map| {
        qtest_machine(&ctx, &b, Some(&o))
    });
    func(
        "qtest_machine(binary: String) -> Machine",
        "A qtest machine without options. QEMUs without a qtest accelerator (Debian's 7.2) run it under TCG started with -S, so the guest never runs; clock_step is refused there.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, b: Dynamic| {
        qtest_machine(&ctx, &b, None)
    });
    func(
        "qtest_machine() -> Machine",
        "A qtest machine of the default QEMU binary.",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        qtest_machine(&ctx, &Dynamic::UNIT, None)
    });
    func(
        "event_match(event: Map, match: Map) -> bool",
        "True when `match` is a subset of `event`, recursively; `()` in `match` matches anything.",
    )
    .register_into_engine(e, |ev: Dynamic, m: Dynamic| -> ScriptResult<bool> {
        Ok(machine::event_match(
            &json(&ev, "event")?,
            &json(&m, "match")?,
        ))
    });
    func(
        "open_fd(path: String, mode: String) -> int",
        "Opens a file (\"r\", \"w\" or \"rw\"); its descriptor is closed when the script ends.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, p: &str, mode: &str| {
        Run::of(&ctx)?.open_fd(p, mode).map(INT::from)
    });
    func("close_fd(fd: int)", "Closes a descriptor from open_fd.")
        .register_into_engine(e, |ctx: NativeCallContext, fd: INT| {
            Run::of(&ctx)?.close_fd(i32::try_from(fd).unwrap_or(-1))
        });
}
