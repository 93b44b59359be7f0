//! How the REPL shows things: a result, an error, an event. Pure text;
//! the caller decides where it goes.

use rhai::Dynamic;
use serde_json::Value;

use crate::script::console_api::ConsoleRef;
use crate::script::machine_api::MachineRef;
use crate::script::{convert, Failure};

/// A result as the REPL prints it: maps and arrays as pretty JSON, strings
/// as they are, `()` not at all.
pub fn value(v: &Dynamic) -> Option<String> {
    if v.is_shared() {
        return value(&v.flatten_clone());
    }
    if v.is_unit() {
        return None;
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return Some(s.to_string());
    }
    if v.is_map() || v.is_array() {
        // A map holding a Machine has no JSON form: Rhai's own then, but
        // an array (`vms()`) shows each item as the REPL would.
        return Some(match (convert::to_json(v), v.read_lock::<rhai::Array>()) {
            (Ok(j), _) => pretty(&j),
            (Err(_), Some(items)) => {
                let shown: Vec<String> = items
                    .iter()
                    .map(|i| value(i).unwrap_or_else(|| "()".into()))
                    .collect();
                format!("[{}]", shown.join(", "))
            }
            (Err(_), None) => format!("{v:?}"),
        });
    }
    if let Some(m) = v.read_lock::<MachineRef>() {
        return Some(match m.machine().try_lock() {
            Ok(m) => format!("Machine({})", m.name()),
            Err(_) => "Machine".into(),
        });
    }
    if v.is::<ConsoleRef>() {
        return Some("Console".into());
    }
    Some(v.to_string())
}

/// JSON, indented.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("a Value always serializes")
}

/// An error: `Kind: message` on one line; a message that has more lines
/// (both sides of an assertion, QEMU's last output) continues indented,
/// then where it passed through.
pub fn failure(f: &Failure) -> String {
    let mut lines = f.message.lines();
    let first = lines.next().unwrap_or("");
    let mut out = format!("{}: {first}", f.kind);
    if f.kind == "SyntaxError" {
        if let (Some(l), Some(c)) = (f.line, f.column) {
            out.push_str(&format!(" (line {l}, column {c})"));
        }
    }
    for l in lines {
        out.push_str("\n    ");
        out.push_str(l.trim_start());
    }
    for c in &f.context {
        out.push_str("\n  ");
        out.push_str(c);
    }
    out
}

/// A QMP message as one line if it is an event: `[vm0] STOP {…data…}`.
pub fn event(machine: &str, msg: &Value) -> Option<String> {
    let name = msg.get("event")?.as_str()?;
    let mut out = format!("[{machine}] {name}");
    if let Some(data) = msg.get("data").filter(|d| !is_empty(d)) {
        out.push(' ');
        out.push_str(&data.to_string());
    }
    Some(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_show_as_json_text_or_nothing() {
        assert_eq!(value(&Dynamic::UNIT), None);
        assert_eq!(value(&"plain text".into()).as_deref(), Some("plain text"));
        assert_eq!(value(&Dynamic::from_int(42)).as_deref(), Some("42"));
        assert_eq!(value(&true.into()).as_deref(), Some("true"));
        let m = convert::from_json(&json!({"status": "running", "running": true}));
        assert_eq!(
            value(&m).unwrap(),
            "{\n  \"running\": true,\n  \"status\": \"running\"\n}"
        );
        let a = convert::from_json(&json!([1, "two"]));
        assert_eq!(value(&a).unwrap(), "[\n  1,\n  \"two\"\n]");
    }

    #[test]
    fn errors_are_one_line_then_details_indented() {
        let f = Failure::plain(
            "<repl>",
            "Timeout",
            "timed out after 1s waiting for event X",
        );
        assert_eq!(
            failure(&f),
            "Timeout: timed out after 1s waiting for event X"
        );
        let mut f = Failure::plain("<repl>", "AssertionFailed", "differ\n  left: 1\n right: 2");
        f.context.push("in function f called at <repl>:1:1".into());
        assert_eq!(
            failure(&f),
            "AssertionFailed: differ\n    left: 1\n    right: 2\n  in function f called at <repl>:1:1"
        );
    }

    #[test]
    fn events_are_one_line_with_their_data() {
        let ev = json!({"event": "STOP", "data": {}, "timestamp": {"seconds": 1}});
        assert_eq!(event("vm0", &ev).unwrap(), "[vm0] STOP");
        let ev = json!({"event": "BLOCK_JOB_READY", "data": {"device": "j"}});
        assert_eq!(
            event("vm1", &ev).unwrap(),
            "[vm1] BLOCK_JOB_READY {\"device\":\"j\"}"
        );
        assert_eq!(event("vm0", &json!({"return": {}})), None);
    }
}
