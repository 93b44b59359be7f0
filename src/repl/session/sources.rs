//! What Tab completion sees of a session (its [`Sources`]): functions,
//! variables, map keys, modules and the QMP schema of a machine, which is
//! fetched on a thread of its own so that completion never waits on QEMU
//! for long.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::complete::{Function, Sources};
use super::super::schema::Schema;
use super::Session;
use crate::machine::{InterruptHandle, Machine};
use crate::script;
use crate::script::run::SharedMachine;

/// A QMP schema being fetched, or fetched.
pub(super) enum SchemaSlot {
    Pending(mpsc::Receiver<Schema>),
    Ready(Rc<Schema>),
}

/// How long Tab waits for a schema being fetched before it offers nothing
/// (the next Tab looks again).
const SCHEMA_WAIT: Duration = Duration::from_secs(1);

/// How long fetching a schema may keep the machine's monitor busy.
pub(super) const SCHEMA_DEADLINE: Duration = Duration::from_secs(3);

impl Session {
    /// Starts fetching the QMP schema of every running machine that has
    /// none yet, so that it is there by the time Tab asks.
    pub fn prefetch_schemas(&self) {
        for m in self.run.machines() {
            let _ = self.start_schema(&m);
        }
    }

    /// Starts fetching the schema of `machine` unless it is in or coming;
    /// returns its key, `None` when the machine is not running (or busy
    /// with no schema asked for yet).
    fn start_schema(&self, machine: &SharedMachine) -> Option<usize> {
        let key = Arc::as_ptr(machine) as usize;
        let mut schemas = self.schemas.borrow_mut();
        // Busy: fetching its schema, say; what was asked for stands.
        let Ok(m) = machine.try_lock() else {
            return schemas.contains_key(&key).then_some(key);
        };
        let pid = m.get_pid().filter(|_| m.is_running())?;
        if schemas.get(&key).is_some_and(|(p, _)| *p == pid) {
            return Some(key);
        }
        let slot = SchemaSlot::Pending(fetch_schema(machine.clone(), m.interrupt_handle()));
        schemas.insert(key, (pid, slot));
        Some(key)
    }
}

impl Sources for Session {
    fn functions(&self) -> Vec<Function> {
        let mut out = self.builtins.clone();
        out.extend(self.functions.iter_functions().map(|f| Function {
            name: f.name.to_string(),
            receiver: None,
            property: false,
        }));
        out
    }

    fn variables(&self) -> Vec<(String, String)> {
        self.scope
            .iter_raw()
            .map(|(name, _, v)| {
                let ty = if v.is_shared() {
                    v.flatten_clone().type_name()
                } else {
                    v.type_name()
                };
                (name.to_string(), self.engine.map_type_name(ty).to_string())
            })
            .collect()
    }

    fn map_keys(&self, variable: &str) -> Vec<String> {
        self.scope
            .get(variable)
            .and_then(|v| {
                v.read_lock::<rhai::Map>()
                    .map(|m| m.keys().map(|k| k.to_string()).collect())
            })
            .unwrap_or_default()
    }

    /// Never waits on QEMU for long: the schema is fetched on a thread of
    /// its own, which a stopped QEMU cannot hold past [`SCHEMA_DEADLINE`];
    /// until it is in, Tab offers nothing.
    fn schema(&self, receiver: Option<&str>) -> Option<Rc<Schema>> {
        let machine = self.machine_for(receiver)?;
        let key = self.start_schema(&machine)?;
        let mut schemas = self.schemas.borrow_mut();
        let (_, slot) = schemas.get_mut(&key)?;
        if let SchemaSlot::Pending(rx) = slot {
            match rx.recv_timeout(SCHEMA_WAIT) {
                // Nothing came (a QEMU that did not answer in time): ask
                // again at the next Tab.
                Ok(s) if s.commands.is_empty() => {
                    schemas.remove(&key);
                    return None;
                }
                Ok(s) => *slot = SchemaSlot::Ready(Rc::new(s)),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                // The fetch found no machine to ask: ask again next time.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    schemas.remove(&key);
                    return None;
                }
            }
        }
        match slot {
            SchemaSlot::Ready(s) => Some(s.clone()),
            SchemaSlot::Pending(_) => None,
        }
    }

    fn modules(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    fn module_functions(&self, name: &str) -> Vec<String> {
        self.modules
            .get(name)
            .map(|m| m.functions.clone())
            .unwrap_or_default()
    }
}

/// Asks `machine` for its QMP schema on a thread of its own. A QEMU that
/// does not answer (stopped with SIGSTOP, say) is given up on after
/// [`SCHEMA_DEADLINE`]: the wait is interrupted, which frees the machine
/// for the next input; its schema then stays empty for the session.
fn fetch_schema(machine: SharedMachine, interrupt: InterruptHandle) -> mpsc::Receiver<Schema> {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::new(AtomicBool::new(false));
    let (finished, giving_up) = (done.clone(), gave_up.clone());
    let _ = std::thread::Builder::new()
        .name("repl-schema-deadline".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed() < SCHEMA_DEADLINE {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !finished.load(Ordering::SeqCst) {
                giving_up.store(true, Ordering::SeqCst);
                interrupt.interrupt();
            }
        });
    let _ = std::thread::Builder::new()
        .name("repl-schema".into())
        .spawn(move || {
            let schema = {
                let mut m = script::run::lock(&machine);
                schema_of(&mut m, &gave_up)
            };
            done.store(true, Ordering::SeqCst);
            let _ = tx.send(schema);
        });
    rx
}

/// The schema of a running machine, from `query-qmp-schema`, else from
/// `query-commands` and `query-events` (names only); what it has when
/// `gave_up` is set.
fn schema_of(m: &mut Machine, gave_up: &AtomicBool) -> Schema {
    let mut schema = match m.command("query-qmp-schema", None, true) {
        Ok(Value::Array(entries)) => Schema::from_entries(&entries),
        _ => Schema::default(),
    };
    if gave_up.load(Ordering::SeqCst) {
        return Schema::default();
    }
    if schema.commands.is_empty() {
        if let Ok(Value::Array(cmds)) = m.command("query-commands", None, true) {
            schema.add_command_names(&cmds);
        }
    }
    if schema.events.is_empty() && !gave_up.load(Ordering::SeqCst) {
        if let Ok(Value::Array(evs)) = m.command("query-events", None, true) {
            schema.events = evs
                .iter()
                .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            schema.events.sort();
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::super::super::complete;
    use super::super::tests::{session, show};
    use super::*;

    #[test]
    fn completion_sees_the_sessions_variables_and_functions() {
        let mut s = session();
        show(&mut s, "let st = #{status: \"running\"}; fn helper() {}");
        let (_, ctx) = complete::context("st.sta");
        let c = complete::candidates(&ctx, &s);
        assert_eq!(
            c.iter().map(|p| p.replacement.as_str()).collect::<Vec<_>>(),
            ["status"]
        );
        let (_, ctx) = complete::context("hel");
        let c = complete::candidates(&ctx, &s);
        assert_eq!(c[0].replacement, "helper(");
        let vars = s.variables();
        assert_eq!(vars, [("st".to_string(), "map".to_string())]);
        assert!(s
            .functions()
            .iter()
            .any(|f| f.name == "event_wait" && f.receiver.as_deref() == Some("Machine")));
        assert!(s.schema(None).is_none());
    }
}
