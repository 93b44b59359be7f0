//! The session's machines as the REPL commands see them: the `:vms`
//! listing ([`VmInfo`], [`vms_table`]), the machine `:console` attaches
//! to, and the machine Tab asks for a QMP schema.

use serde_json::Value;

use super::Session;
use crate::machine::{Console, Machine};
use crate::script;
use crate::script::machine_api::MachineRef;
use crate::script::run::SharedMachine;

/// A machine of the session, for `:vms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub pid: Option<i32>,
    /// `running`, `paused`, … (QEMU's run state), `exited (N)` or `not launched`.
    pub status: String,
}

impl Session {
    /// The session's machines, oldest first.
    pub fn vms(&self) -> Vec<VmInfo> {
        self.run
            .machines()
            .iter()
            .map(|m| match m.try_lock() {
                Ok(mut m) => info(&mut m),
                Err(_) => VmInfo {
                    name: "?".into(),
                    pid: None,
                    status: "busy".into(),
                },
            })
            .collect()
    }

    /// The serial console of the machine named `name` (or held by the
    /// variable `name`), for `:console`. Waits for a machine that is busy
    /// fetching its schema (for at most
    /// [`SCHEMA_DEADLINE`](super::sources::SCHEMA_DEADLINE)): no input
    /// runs while a command does.
    pub fn console(&self, name: &str) -> Result<(String, Console), String> {
        let by_name = self
            .run
            .machines()
            .into_iter()
            .find(|m| script::run::lock(m).name() == name);
        let by_variable = || {
            let v = self.scope.get(name)?;
            v.read_lock::<MachineRef>().map(|m| m.machine().clone())
        };
        let Some(machine) = by_name.or_else(by_variable) else {
            let names: Vec<String> = self.vms().into_iter().map(|v| v.name).collect();
            return Err(match names.is_empty() {
                true => format!("no machine {name}: the session has none yet"),
                false => format!("no machine {name}; the machines are {}", names.join(", ")),
            });
        };
        let m = script::run::lock(&machine);
        if !m.is_running() {
            return Err(format!("machine {} is not running", m.name()));
        }
        m.console_socket()
            .map(|c| (m.name().to_string(), c))
            .map_err(|e| format!("machine {}: {e}", m.name()))
    }

    /// The machine held by variable `name`, else the latest running one.
    pub(super) fn machine_for(&self, name: Option<&str>) -> Option<SharedMachine> {
        if let Some(v) = name.and_then(|n| self.scope.get(n)) {
            if let Some(m) = v.read_lock::<MachineRef>() {
                return Some(m.machine().clone());
            }
        }
        self.run
            .machines()
            .into_iter()
            .rev()
            .find(|m| m.try_lock().is_ok_and(|m| m.is_running()))
    }
}

fn info(m: &mut Machine) -> VmInfo {
    let status = if m.is_running() {
        m.command("query-status", None, true)
            .ok()
            .and_then(|s| s.get("status").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "running".into())
    } else if let Some(code) = m.exitcode() {
        format!("exited ({code})")
    } else {
        "not launched".into()
    };
    VmInfo {
        name: m.name().to_string(),
        pid: m.get_pid(),
        status,
    }
}

/// `:vms` as a table.
pub fn vms_table(vms: &[VmInfo]) -> String {
    if vms.is_empty() {
        return "no machines yet: let vm = machine(); vm.launch();".into();
    }
    let width = vms.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:>8}  STATUS", "NAME", "PID");
    for v in vms {
        let pid = v.pid.map_or("-".to_string(), |p| p.to_string());
        out.push_str(&format!("\n{:width$}  {pid:>8}  {}", v.name, v.status));
    }
    out
}
