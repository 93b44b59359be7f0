//! How errors look to a script, and how an uncaught one looks to a person.
//!
//! Everything a binding throws is a Rhai runtime error whose value is a map
//! `#{ kind, message, … }` (the kinds and fields of the API contract), so
//! `try { … } catch (e) { if e.kind == "Timeout" { … } }` works for machine
//! errors and host helpers alike. [`machine_error`] renders a
//! [`machine::Error`] that way; [`throw`] makes the others.
//!
//! Two endings are not catchable, because a script must not swallow them:
//! `skip(reason)` ([`skipped`]) and the run being cancelled by its timeout
//! or a signal ([`terminated`]). Both use Rhai's `ErrorTerminated`, which
//! no script can raise itself: that is how a skip is told from a thrown
//! `#{kind: "Skipped"}`, which is an error like any other.
//!
//! [`Failure::from_eval`] (`failure.rs`) turns whatever ended a script
//! into the report `FILE:LINE:COL: KIND: message`; [`compile_catching`]
//! (`catching.rs`) gives caught errors their `kind`.

mod catching;
mod failure;

use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map, Position};

use super::cancel::{Cancel, Reason};
use super::convert;
use crate::machine::{self, ConsoleError};

pub use catching::compile_catching;
pub use failure::{thrown_kind_and_message, Failure};

/// What every binding returns.
pub type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// The kind of the value `skip()` ends a script with.
pub const SKIPPED: &str = "Skipped";
/// The kind for Rhai's own errors and for thrown values that are not maps.
pub const SCRIPT_ERROR: &str = "ScriptError";

/// A thrown map `#{ kind, message }` plus `fields`.
pub fn error_map(kind: &str, message: impl Into<String>, fields: Vec<(&str, Dynamic)>) -> Map {
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("message".into(), message.into().into());
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    m
}

/// A catchable error of `kind`.
pub fn throw(kind: &str, message: impl Into<String>) -> Box<EvalAltResult> {
    throw_map(error_map(kind, message, Vec::new()))
}

/// A catchable error whose value is `map`.
pub fn throw_map(map: Map) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(map.into(), Position::NONE).into()
}

/// `QEMUMachineError`: misuse of a machine.
pub fn misuse(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("QEMUMachineError", message)
}

/// `HostError`: a host operation failed.
pub fn host(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("HostError", message)
}

/// `AssertionFailed`.
pub fn assertion(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("AssertionFailed", message)
}

/// `Timeout` naming what was awaited.
pub fn timeout(what: &str, after: Duration) -> Box<EvalAltResult> {
    throw_map(error_map(
        "Timeout",
        format!(
            "timed out after {}s waiting for {what}",
            after.as_secs_f64()
        ),
        vec![("what", what.into()), ("after", after.as_secs_f64().into())],
    ))
}

/// A wrong argument type, as Rhai reports its own.
pub fn bad_type(what: &str, expected: &str, got: &Dynamic) -> Box<EvalAltResult> {
    EvalAltResult::ErrorMismatchDataType(
        format!("{expected} for {what}"),
        got.type_name().to_string(),
        Position::NONE,
    )
    .into()
}

/// Ends the script as skipped; not catchable.
pub fn skipped(reason: &str) -> Box<EvalAltResult> {
    terminated(SKIPPED, reason)
}

/// Ends the script with `kind`; not catchable.
pub fn terminated(kind: &str, message: impl Into<String>) -> Box<EvalAltResult> {
    if kind != SKIPPED {
        note_stopped_here();
    }
    EvalAltResult::ErrorTerminated(error_map(kind, message, Vec::new()).into(), Position::NONE)
        .into()
}

/// Records where this thread's run was stopped ([`Cancel::stopped_at`]),
/// as Rhai will not keep it.
fn note_stopped_here() {
    RUN.with(|r| {
        if let Some(c) = r.borrow().as_ref() {
            c.note_stopped_here();
        }
    });
}

thread_local! {
    /// The cancellation token of the run whose script this thread runs.
    static RUN: std::cell::RefCell<Option<Cancel>> = const { std::cell::RefCell::new(None) };
}

/// Tells the binding errors of this thread which run they belong to. The
/// engine calls it before every operation, so a `parallel` branch's thread
/// is covered too; it costs a comparison when nothing changed.
pub fn enter_run(cancel: &Cancel) {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        if !r.as_ref().is_some_and(|c| c.same(cancel)) {
            *r = Some(cancel.clone());
        }
    });
}

/// A machine error as the thrown map the API contract describes; when the
/// run was cancelled (its timeout, a signal), the cancellation instead,
/// not catchable: a wait that failed because its machine was killed by
/// the cancellation must not run the script's `catch` block, and the
/// report then points at the wait and names what it awaited.
pub fn machine_error(err: machine::Error) -> Box<EvalAltResult> {
    let map = machine_error_map(&err);
    // `stopping`: a timeout first stops the script with an interrupt,
    // before any cancellation; the wait it ended is the timeout's too.
    let reason = RUN.with(|r| r.borrow().as_ref().and_then(Cancel::stopping));
    match reason {
        Some(r) => cancelled(&r, map, err.kind() != "Interrupted"),
        None => throw_map(map),
    }
}

/// The cancellation `reason`, with what the failed call `saw` (its error
/// map: what it awaited, and, when `show`, the error itself: an
/// interrupt that the stop itself caused says nothing more).
fn cancelled(reason: &Reason, saw: Map, show: bool) -> Box<EvalAltResult> {
    note_stopped_here();
    let mut fields = Vec::new();
    if let Some(what) = saw.get("what") {
        fields.push(("what", what.clone()));
    }
    if show {
        fields.push(("saw", saw.into()));
    }
    EvalAltResult::ErrorTerminated(
        error_map(reason.kind(), reason.message(), fields).into(),
        Position::NONE,
    )
    .into()
}

/// The fields of each error kind, as named by the API contract.
pub fn machine_error_map(err: &machine::Error) -> Map {
    use machine::Error as E;
    let secs = |d: &Duration| Dynamic::from_float(d.as_secs_f64());
    let fields: Vec<(&str, Dynamic)> = match err {
        E::LaunchFailure {
            cause,
            exitcode,
            command,
            output,
        } => vec![
            ("exitcode", convert::opt_int(*exitcode)),
            ("command", convert::string_array(command).into()),
            ("output", output.clone().into()),
            ("cause", cause.clone().into()),
        ],
        E::AbnormalShutdown { cause } => vec![("cause", cause.clone().into())],
        E::MonitorResponse {
            command,
            class,
            desc,
            reply,
        } => vec![
            ("command", command.clone().into()),
            ("class", class.clone().into()),
            ("desc", desc.clone().into()),
            ("reply", convert::from_json(reply)),
        ],
        E::Exited {
            what,
            code,
            log_tail,
        } => vec![
            ("what", what.clone().into()),
            ("exitcode", convert::opt_int(*code)),
            ("output", log_tail.clone().into()),
        ],
        E::Timeout { what, after, seen } => vec![
            ("what", what.clone().into()),
            ("after", secs(after)),
            ("seen", convert::string_array(seen).into()),
        ],
        E::Console(c) => console_fields(c),
        E::Host { what, .. } | E::NotRunning { what, .. } => vec![("what", what.clone().into())],
        E::Interrupted { what } => vec![("what", what.clone().into())],
        _ => Vec::new(),
    };
    error_map(err.kind(), err.to_string(), fields)
}

fn console_fields(err: &ConsoleError) -> Vec<(&'static str, Dynamic)> {
    if let ConsoleError::Timeout { what, after, tail } = err {
        vec![
            ("what", what.clone().into()),
            ("after", after.as_secs_f64().into()),
            ("tail", tail.clone().into()),
        ]
    } else if let ConsoleError::Closed { what, tail } = err {
        vec![("what", what.clone().into()), ("tail", tail.clone().into())]
    } else if let ConsoleError::Interrupted { what } = err {
        vec![("what", what.clone().into())]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
