//! The display and keyboard of a `Machine`: `screenshot` into the test's
//! artifacts, `send_key` and `type_text`.

use rhai::Engine;

use crate::script::docs::func;
use crate::script::errors::ScriptResult;
use crate::script::run::screenshot_path;

use super::MachineRef;

pub(super) fn register_display(e: &mut Engine) {
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
