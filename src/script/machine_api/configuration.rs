//! What a machine takes before launch: `add_args`, `set_machine`,
//! `set_console`, `set_qmp_monitor`, `add_monitor_null` and `add_fd`.

use rhai::{Array, Dynamic, Engine, ImmutableString, INT};

use crate::machine::Machine;
use crate::script::args;
use crate::script::docs::func;
use crate::script::errors;

use super::{opt_string, MachineRef};

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

pub(super) fn register_configuration(e: &mut Engine) {
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
