//! The `Machine` script type and the global functions that make machines
//! (`machine`, `qtest_machine`), match events and pass descriptors: one
//! registration per API entry, each a one-liner over [`crate::machine`].
//! The console, on `Machine` and as its own type, is in
//! [`super::console_api`], which builds on this module's [`MachineRef`].
//!
//! A script's `Machine` is a [`MachineRef`], a shared handle: copies in a
//! script name the same QEMU. Every machine is made through the [`Run`], so
//! it gets the run's defaults and is shut down when the script ends; a
//! binding finds the run in the call's context ([`Run::of`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rhai::{
    Array, Dynamic, Engine, FuncRegistration, ImmutableString, Map, NativeCallContext, INT,
};
use serde_json::Value;

use crate::machine::{self, process, EventWait, KillHandle, Machine, MachineOptions, DEFAULT_WAIT};
use crate::qmp::Address;

use super::args;
use super::convert;
use super::docs::{func, getter};
use super::errors::{self, ScriptResult};
use super::run::{lock, screenshot_path, Run, SharedMachine};

/// `QEMUMachine.shutdown`'s and `wait`'s default timeout.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

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

/// A script's `Machine`: a shared handle on one [`Machine`].
#[derive(Clone)]
pub struct MachineRef(SharedMachine, KillHandle);

impl MachineRef {
    fn new(machine: SharedMachine) -> MachineRef {
        // Kept beside the lock: a kill must not wait for a call in
        // progress on another branch (an `event_wait`) to give it up.
        let kill = lock(&machine).kill_handle();
        MachineRef(machine, kill)
    }

    /// The machine itself, shared with the run's registry.
    pub fn machine(&self) -> &SharedMachine {
        &self.0
    }

    /// Runs `f` on the machine, turning its error into the script's.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Machine) -> machine::Result<T>,
    ) -> ScriptResult<T> {
        f(&mut lock(&self.0)).map_err(errors::machine_error)
    }

    /// Reads a property.
    fn get<T>(&self, f: impl FnOnce(&Machine) -> T) -> ScriptResult<T> {
        Ok(f(&lock(&self.0)))
    }
}

fn path_or_unit(p: Option<&Path>) -> Dynamic {
    match p {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string().into(),
        _ => Dynamic::UNIT,
    }
}

/// A directory set at launch, else the one given in the options, else `()`.
fn or_option(launched: &Path, option: Option<&Path>) -> Dynamic {
    if launched.as_os_str().is_empty() {
        path_or_unit(option)
    } else {
        path_or_unit(Some(launched))
    }
}

fn json_or_unit(v: Option<Value>) -> Dynamic {
    v.as_ref().map_or(Dynamic::UNIT, convert::from_json)
}

/// `()` or a map, as QMP arguments.
fn qmp_args(v: &Dynamic) -> ScriptResult<Option<serde_json::Map<String, Value>>> {
    if v.is_unit() {
        return Ok(None);
    }
    let Some(m) = v.read_lock::<Map>() else {
        return Err(errors::bad_type("QMP arguments", "a map", v));
    };
    convert::map_to_json(&m)
        .map(Some)
        .map_err(|e| errors::misuse(format!("QMP arguments: {e}")))
}

/// Any value as JSON, for event filters.
fn json(v: &Dynamic, what: &str) -> ScriptResult<Value> {
    convert::to_json(v).map_err(|e| errors::misuse(format!("{what}: {e}")))
}

/// `get_qmp_event(wait)`: a bool or seconds.
fn event_wait_arg(v: &Dynamic) -> ScriptResult<EventWait> {
    match v.as_bool() {
        Ok(true) => Ok(EventWait::Forever),
        Ok(false) => Ok(EventWait::No),
        Err(_) => args::secs(v, "wait").map(EventWait::For),
    }
}

/// `events_wait`'s `[[name, match], …]` (also `[name]` or `"name"`).
fn event_pairs(pairs: &Array) -> ScriptResult<Vec<(String, Option<Value>)>> {
    pairs
        .iter()
        .map(|p| {
            if let Ok(name) = args::string(p, "events_wait") {
                return Ok((name, None));
            }
            let Some(a) = p.read_lock::<Array>() else {
                return Err(errors::bad_type("events_wait", "[name, match] pairs", p));
            };
            let name = a
                .first()
                .map(|n| args::string(n, "an event name"))
                .transpose()?
                .ok_or_else(|| {
                    errors::misuse("events_wait: an empty pair; expected [name, match]")
                })?;
            let filter = match a.get(1) {
                Some(m) if !m.is_unit() => Some(json(m, "an event match")?),
                _ => None,
            };
            Ok((name, filter))
        })
        .collect()
}

/// `()` for "none", or a string.
pub(super) fn opt_string(v: &Dynamic, what: &str) -> ScriptResult<Option<String>> {
    if v.is_unit() {
        Ok(None)
    } else {
        args::string(v, what).map(Some)
    }
}

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

/// Registers the `Machine` type and the machine functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<MachineRef>("Machine");
    register_constructors(engine);
    register_configuration(engine);
    register_properties(engine);
    register_lifecycle(engine);
    register_qmp(engine);
    register_display(engine);
    register_events(engine);
}

fn register_constructors(e: &mut Engine) {
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

macro_rules! add_args_n {
    ($e:expr, $($a:ident),+) => {
        func(
            concat!("add_args(vm: Machine", $(", ", stringify!($a), ": String",)+ ")"),
            "Appends arguments to the QEMU command line (before launch).",
        )
        .register_into_engine($e, |vm: &mut MachineRef, $($a: ImmutableString),+| {
            vm.with(|m| m.add_args(&[$($a.as_str()),+]))
        });
    };
}

fn register_configuration(e: &mut Engine) {
    add_args_n!(e, a1);
    add_args_n!(e, a1, a2);
    add_args_n!(e, a1, a2, a3);
    add_args_n!(e, a1, a2, a3, a4);
    add_args_n!(e, a1, a2, a3, a4, a5);
    add_args_n!(e, a1, a2, a3, a4, a5, a6);
    add_args_n!(e, a1, a2, a3, a4, a5, a6, a7);
    add_args_n!(e, a1, a2, a3, a4, a5, a6, a7, a8);
    func(
        "add_args(vm: Machine, args: Array)",
        "Appends an array of arguments to the QEMU command line (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, a: Array| {
        let a = args::strings(&Dynamic::from_array(a), "add_args")?;
        vm.with(|m| m.add_args(&a))
    });
    func(
        "set_machine(vm: Machine, machine_type: String)",
        "Sets -machine (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, t: &str| {
        vm.with(|m| m.set_machine(t))
    });
    func(
        "set_console(vm: Machine)",
        "Puts a console on the first serial port (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| vm.with(|m| m.set_console(None, 0)));
    func(
        "set_console(vm: Machine, device_type: String)",
        "Puts a console on a -device of this type (`()`: the first serial port).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, t: Dynamic| {
        let t = opt_string(&t, "device_type")?;
        vm.with(|m| m.set_console(t.as_deref(), 0))
    });
    func(
        "set_console(vm: Machine, device_type: String, console_index: int)",
        "Puts a console on serial port `console_index` (device_type `()`).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, t: Dynamic, i: INT| {
        let t = opt_string(&t, "device_type")?;
        let i = u32::try_from(i).map_err(|_| {
            errors::misuse(format!("set_console: console_index {i} is out of range"))
        })?;
        vm.with(|m| m.set_console(t.as_deref(), i))
    });
    func(
        "set_qmp_monitor(vm: Machine, enabled: bool)",
        "Turns the QMP monitor on or off (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, on: bool| {
        vm.with(|m| m.set_qmp_monitor(on))
    });
    func(
        "add_monitor_null(vm: Machine)",
        "Adds -monitor null (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| vm.with(Machine::add_monitor_null));
    func(
        "add_fd(vm: Machine, fd: int, fdset: int, opaque: String)",
        "Passes a descriptor to QEMU as -add-fd (before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, fd: INT, set: INT, opaque: &str| {
        let fd = i32::try_from(fd).unwrap_or(-1);
        vm.with(|m| m.add_fd(fd, set, opaque, ""))
    });
    func(
        "add_fd(vm: Machine, fd: int, fdset: int, opaque: String, opts: String)",
        "Passes a descriptor to QEMU as -add-fd with extra options.",
    )
    .register_into_engine(
        e,
        |vm: &mut MachineRef, fd: INT, set: INT, opaque: &str, opts: &str| {
            let fd = i32::try_from(fd).unwrap_or(-1);
            vm.with(|m| m.add_fd(fd, set, opaque, opts))
        },
    );
}

fn register_properties(e: &mut Engine) {
    getter(
        "Machine",
        "name",
        "String",
        "The machine's name (vm0, vm1, … unless given).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| vm.get(|m| m.name().to_string()));
    getter(
        "Machine",
        "args",
        "Array",
        "The arguments added with add_args and the args option; assignable and editable before launch.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| vm.get(|m| convert::string_array(m.args())));
    // A setter makes `vm.args = […]` and in-place edits such as
    // `vm.args.push(…)` or `vm.args[1] = …` reach the machine: Rhai writes
    // a property changed through its getter back with the setter.
    FuncRegistration::new_setter("args")
        .with_comments(["/// Replaces the user arguments (before launch)."])
        .with_params_info(["vm: Machine", "args: Array"])
        .register_into_engine(e, |vm: &mut MachineRef, a: Array| {
            let a = args::strings(&Dynamic::from_array(a), "args")?;
            vm.with(|m| m.set_args(a))
        });
    getter(
        "Machine",
        "full_args",
        "Array",
        "The whole QEMU command line of the last launch.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| convert::string_array(m.full_args()))
    });
    getter(
        "Machine",
        "binary",
        "String",
        "The QEMU binary the machine runs.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| m.options().binary.display().to_string())
    });
    getter(
        "Machine",
        "console",
        "Map",
        "The console set_console asked for: #{device_type, index} (device_type () for a serial port), or ().",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| match m.console_config() {
            Some((device_type, index)) => {
                let mut c = Map::new();
                c.insert(
                    "device_type".into(),
                    device_type.map_or(Dynamic::UNIT, |t| t.to_string().into()),
                );
                c.insert("index".into(), INT::from(index).into());
                Dynamic::from_map(c)
            }
            None => Dynamic::UNIT,
        })
    });
    getter(
        "Machine",
        "temp_dir",
        "String",
        "The machine's temp dir while launched, else ().",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| path_or_unit(m.temp_dir()))
    });
    getter(
        "Machine",
        "sock_dir",
        "String",
        "Where the machine's socket files go (after launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| or_option(m.sock_dir(), m.options().sock_dir.as_deref()))
    });
    getter(
        "Machine",
        "log_dir",
        "String",
        "Where the machine's logs go (after launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| or_option(m.log_dir(), m.options().log_dir.as_deref()))
    });
    getter(
        "Machine",
        "qmp_greeting",
        "Map",
        "The QMP server's greeting of the last launch.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| json_or_unit(Some(m.qmp_greeting().clone())))
    });
    func(
        "to_string(vm: Machine) -> String",
        "The machine as text: Machine(vm0).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| format!("Machine({})", m.name()))
    });
    func(
        "to_debug(vm: Machine) -> String",
        "The machine as debug text.",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.get(|m| format!("Machine({})", m.name()))
    });
}

fn register_lifecycle(e: &mut Engine) {
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

fn register_qmp(e: &mut Engine) {
    let qmp = |vm: &MachineRef, cmd: &str, a: &Dynamic, conv: bool| -> ScriptResult<Dynamic> {
        let a = qmp_args(a)?;
        vm.with(|m| m.qmp(cmd, a.as_ref(), conv))
            .map(|v| convert::from_json(&v))
    };
    let command = |vm: &MachineRef, cmd: &str, a: &Dynamic, conv: bool| -> ScriptResult<Dynamic> {
        let a = qmp_args(a)?;
        vm.with(|m| m.command(cmd, a.as_ref(), conv))
            .map(|v| convert::from_json(&v))
    };
    func(
        "qmp(vm: Machine, cmd: String) -> Map",
        "Sends a QMP command; returns the whole reply.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, c: &str| {
        qmp(vm, c, &Dynamic::UNIT, true)
    });
    func(
        "qmp(vm: Machine, cmd: String, args: Map) -> Map",
        "Sends a QMP command with arguments; returns the whole reply.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, c: &str, a: Dynamic| {
        qmp(vm, c, &a, true)
    });
    func(
        "qmp(vm: Machine, cmd: String, args: Map, conv_keys: bool) -> Map",
        "qmp() where conv_keys=false keeps '_' in argument keys.",
    )
    .register_into_engine(
        e,
        move |vm: &mut MachineRef, c: &str, a: Dynamic, k: bool| qmp(vm, c, &a, k),
    );
    // `cmd` is the name today's QEMUMachine uses; `command` the older one.
    for name in ["command", "cmd"] {
        func(
            &format!("{name}(vm: Machine, cmd: String) -> any"),
            "Sends a QMP command; returns its `return` value; MonitorResponseError on an error reply.",
        )
        .register_into_engine(e, move |vm: &mut MachineRef, c: &str| {
            command(vm, c, &Dynamic::UNIT, true)
        });
        func(
            &format!("{name}(vm: Machine, cmd: String, args: Map) -> any"),
            "Sends a QMP command with arguments ('_' in keys becomes '-'); returns its `return` value.",
        )
        .register_into_engine(e, move |vm: &mut MachineRef, c: &str, a: Dynamic| {
            command(vm, c, &a, true)
        });
        func(
            &format!("{name}(vm: Machine, cmd: String, args: Map, conv_keys: bool) -> any"),
            "As with args, where conv_keys=false keeps '_' in argument keys.",
        )
        .register_into_engine(
            e,
            move |vm: &mut MachineRef, c: &str, a: Dynamic, k: bool| command(vm, c, &a, k),
        );
    }
    func(
        "hmp(vm: Machine, command_line: String) -> String",
        "Runs an HMP command through human-monitor-command; returns its text.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, c: &str| vm.with(|m| m.hmp(c)));
}

fn register_display(e: &mut Engine) {
    let shot = |vm: &MachineRef, name: Option<&str>| -> ScriptResult<String> {
        vm.with(|m| {
            let path = match name {
                Some(n) => screenshot_path(m, n),
                None => (1..)
                    .map(|i| screenshot_path(m, &format!("screenshot-{i}")))
                    .find(|p| !p.exists())
                    .expect("an unused number"),
            };
            m.screendump(&path)?;
            Ok(path.display().to_string())
        })
    };
    func(
        "screenshot(vm: Machine) -> String",
        "Saves the display as a PNG in the test's artifacts (`NAME-screenshot-N.png`) and returns its path. Needs a display device (e.g. `-vga std`).",
    )
    .register_into_engine(e, move |vm: &mut MachineRef| shot(vm, None));
    func(
        "screenshot(vm: Machine, name: String) -> String",
        "Saves the display as `NAME-name.png` in the test's artifacts and returns its path.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, name: &str| {
        shot(vm, Some(name))
    });
    func(
        "send_key(vm: Machine, keys: String)",
        "Presses keys together and releases them (QMP send-key): `\"ctrl-alt-delete\"`, `\"ret\"`, `\"shift-f1\"`.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, keys: &str| {
        vm.with(|m| m.send_key(keys))
    });
    func(
        "type_text(vm: Machine, text: String)",
        "Types text key by key as on a US keyboard (QMP send-key per character).",
    )
    .register_into_engine(e, |vm: &mut MachineRef, text: &str| {
        vm.with(|m| m.type_text(text))
    });
}

fn register_events(e: &mut Engine) {
    // As QEMUMachine's: a wait of some seconds that sees nothing throws
    // Timeout (a ported wait loop must not spin until the test's timeout);
    // no wait never throws.
    let one = |vm: &MachineRef, w: EventWait| match vm.with(|m| m.get_qmp_event(w))? {
        None => match w {
            EventWait::For(d) if !d.is_zero() => Err(errors::timeout("a QMP event", d)),
            _ => Ok(Dynamic::UNIT),
        },
        ev => Ok(json_or_unit(ev)),
    };
    let all = |vm: &MachineRef, w: EventWait| {
        let evs = vm.with(|m| m.get_qmp_events(w))?;
        match w {
            EventWait::For(d) if evs.is_empty() && !d.is_zero() => {
                Err(errors::timeout("a QMP event", d))
            }
            _ => Ok(evs.iter().map(convert::from_json).collect::<Array>()),
        }
    };
    func(
        "get_qmp_event(vm: Machine) -> Map",
        "The next queued event, or ().",
    )
    .register_into_engine(e, move |vm: &mut MachineRef| one(vm, EventWait::No));
    func(
        "get_qmp_event(vm: Machine, wait: bool|secs) -> Map",
        "The next event; `wait` is true (until one comes), false (never waits), or seconds (Timeout when none came).",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, w: Dynamic| {
        one(vm, event_wait_arg(&w)?)
    });
    func(
        "get_qmp_events(vm: Machine) -> Array",
        "Every queued event.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef| all(vm, EventWait::No));
    func(
        "get_qmp_events(vm: Machine, wait: bool|secs) -> Array",
        "Every queued event, first waiting for one (true, or seconds: Timeout when none came) when none is queued.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, w: Dynamic| {
        all(vm, event_wait_arg(&w)?)
    });
    func("clear_events(vm: Machine)", "Drops every queued event.").register_into_engine(
        e,
        |vm: &mut MachineRef| {
            vm.with(|m| {
                m.clear_events();
                Ok(())
            })
        },
    );
    let wait = |ctx: &NativeCallContext,
                vm: &MachineRef,
                name: &str,
                t: Duration,
                filter: Option<Value>| {
        let _doing = Run::of(ctx)?
            .cancel()
            .doing(format!("waiting for event {name}"));
        vm.with(|m| m.event_wait(name, t, filter.as_ref()))
            .map(json_or_unit)
    };
    func(
        "event_wait(vm: Machine, name: String) -> Map",
        "Waits up to 60s for event `name`; Timeout otherwise.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, vm: &mut MachineRef, n: &str| {
            wait(&ctx, vm, n, args::scaled(DEFAULT_WAIT), None)
        },
    );
    func(
        "event_wait(vm: Machine, name: String, timeout: secs) -> Map",
        "Waits up to `timeout` for event `name`; timeout 0 returns () when none is queued.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, vm: &mut MachineRef, n: &str, t: Dynamic| {
            wait(&ctx, vm, n, args::secs(&t, "timeout")?, None)
        },
    );
    func(
        "event_wait(vm: Machine, name: String, match: Map) -> Map",
        "Waits up to 60s for event `name` matching `match`; others stay queued in order.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, vm: &mut MachineRef, n: &str, f: Map| {
            let filter = json(&Dynamic::from_map(f), "match")?;
            wait(&ctx, vm, n, args::scaled(DEFAULT_WAIT), Some(filter))
        },
    );
    func(
        "event_wait(vm: Machine, name: String, timeout: secs, match: Map) -> Map",
        "Waits for event `name` matching `match` (see event_match); others stay queued in order.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, vm: &mut MachineRef, n: &str, t: Dynamic, f: Dynamic| {
            let filter = if f.is_unit() {
                None
            } else {
                Some(json(&f, "match")?)
            };
            wait(&ctx, vm, n, args::secs(&t, "timeout")?, filter)
        },
    );
    let many = |vm: &MachineRef, pairs: &Array, t: Duration| {
        let pairs = event_pairs(pairs)?;
        vm.with(|m| m.events_wait(&pairs, t)).map(json_or_unit)
    };
    func(
        "events_wait(vm: Machine, events: Array) -> Map",
        "Waits up to 60s for the first event matching any [name, match] pair.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, p: Array| {
        many(vm, &p, args::scaled(DEFAULT_WAIT))
    });
    func(
        "events_wait(vm: Machine, events: Array, timeout: secs) -> Map",
        "Waits up to `timeout` for the first event matching any [name, match] pair.",
    )
    .register_into_engine(e, move |vm: &mut MachineRef, p: Array, t: Dynamic| {
        many(vm, &p, args::secs(&t, "timeout")?)
    });
}
