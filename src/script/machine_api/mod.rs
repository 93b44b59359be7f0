//! The `Machine` script type and the global functions that make machines
//! (`machine`, `qtest_machine`), match events and pass descriptors: one
//! registration per API entry, each a one-liner over [`crate::machine`].
//! The console, on `Machine` and as its own type, is in
//! [`super::console_api`], which builds on this module's [`MachineRef`].
//!
//! A script's `Machine` is a [`MachineRef`], a shared handle: copies in a
//! script name the same QEMU. Every machine is made through the
//! [`Run`](super::run::Run), so it gets the run's defaults and is shut down
//! when the script ends; a binding finds the run in the call's context
//! ([`Run::of`](super::run::Run::of)).
//!
//! This file holds the handle, the `Machine` properties and [`register`],
//! which lists the registrations of the files beside it, one per concern:
//! making machines (`constructors`), what is set before launch
//! (`configuration`), starting and stopping QEMU (`lifecycle`), QMP
//! commands and events (`qmp`), and the display and keyboard (`display`).

use std::path::Path;

use rhai::{Array, Dynamic, Engine, FuncRegistration, Map, INT};
use serde_json::Value;

use crate::machine::{self, KillHandle, Machine};

use super::args;
use super::convert;
use super::docs::{func, getter};
use super::errors::{self, ScriptResult};
use super::run::{lock, SharedMachine};

mod configuration;
mod constructors;
mod display;
mod lifecycle;
mod qmp;

use configuration::register_configuration;
use constructors::register_constructors;
pub(crate) use constructors::MACHINE_OPTIONS;
use display::register_display;
use lifecycle::register_lifecycle;
use qmp::{register_events, register_qmp};

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

/// `()` for "none", or a string.
pub(super) fn opt_string(v: &Dynamic, what: &str) -> ScriptResult<Option<String>> {
    if v.is_unit() {
        Ok(None)
    } else {
        args::string(v, what).map(Some)
    }
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
