//! QMP on a `Machine`: commands (`qmp`, `command`/`cmd`, `hmp`) and the
//! events QEMU sends (`get_qmp_event(s)`, `event_wait`, `events_wait`,
//! `clear_events`), with the conversions of their arguments.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, Map, NativeCallContext};
use serde_json::Value;

use crate::machine::{EventWait, DEFAULT_WAIT};
use crate::script::args;
use crate::script::convert;
use crate::script::docs::func;
use crate::script::errors::{self, ScriptResult};
use crate::script::run::Run;

use super::{json_or_unit, MachineRef};

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
pub(super) fn json(v: &Dynamic, what: &str) -> ScriptResult<Value> {
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

pub(super) fn register_qmp(e: &mut Engine) {
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

pub(super) fn register_events(e: &mut Engine) {
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
        let _doing = Run::of(ctx)?.doing(ctx, format!("waiting for event {name}"));
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
