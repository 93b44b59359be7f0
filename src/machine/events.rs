//! Event matching as `QEMUMachine.event_match` defines it.

use serde_json::{Number, Value};

/// True when `pattern` is a subset of `event`, recursively: every key of
/// a map pattern must be in the event with a matching value, a `null` in
/// the pattern matches anything, and other values must be equal.
pub fn event_match(event: &Value, pattern: &Value) -> bool {
    match (pattern, event) {
        (Value::Null, _) => true,
        (Value::Object(p), Value::Object(e)) => p
            .iter()
            .all(|(k, pv)| e.get(k).is_some_and(|ev| event_match(ev, pv))),
        (Value::Object(_), _) => false,
        (Value::Number(p), Value::Number(e)) => numbers_equal(p, e),
        _ => pattern == event,
    }
}

/// Integers and floats of the same value are equal (a script may write
/// 1.0 where QEMU sends 1).
pub fn numbers_equal(a: &Number, b: &Number) -> bool {
    a == b || a.as_f64() == b.as_f64()
}

/// True when `event` is named like one pair and matches its filter.
pub(super) fn matches_any(event: &Value, pairs: &[(String, Option<Value>)]) -> bool {
    let name = event.get("event").and_then(Value::as_str);
    pairs.iter().any(|(n, filter)| {
        name == Some(n.as_str()) && filter.as_ref().is_none_or(|f| event_match(event, f))
    })
}

/// "STOP", "STOP matching {…}", or "one of A, B".
pub(super) fn describe(pairs: &[(String, Option<Value>)]) -> String {
    let one = |(n, f): &(String, Option<Value>)| match f {
        Some(f) if !f.is_null() => format!("event {n} matching {f}"),
        _ => format!("event {n}"),
    };
    match pairs {
        [p] => one(p),
        ps => format!(
            "one of: {}",
            ps.iter().map(one).collect::<Vec<_>>().join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matches_recursively() {
        let ev = json!({"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "ready"}});
        assert!(event_match(&ev, &json!({"data": {"status": "ready"}})));
        assert!(!event_match(&ev, &json!({"data": {"status": "running"}})));
        assert!(!event_match(&ev, &json!({"data": {"missing": 1}})));
    }

    #[test]
    fn null_matches_anything() {
        let ev = json!({"event": "X", "data": {"a": [1, 2]}});
        assert!(event_match(&ev, &json!(null)));
        assert!(event_match(&ev, &json!({"data": {"a": null}})));
        assert!(event_match(&ev, &json!({"data": null})));
    }

    #[test]
    fn scalars_and_arrays_compare_by_value() {
        assert!(event_match(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(!event_match(&json!({"n": 1}), &json!({"n": 2})));
        assert!(event_match(&json!({"a": [1, 2]}), &json!({"a": [1, 2]})));
        assert!(!event_match(&json!({"a": [1, 2]}), &json!({"a": [2]})));
        assert!(!event_match(&json!({"a": 1}), &json!({"a": {"b": 1}})));
    }

    #[test]
    fn names_and_filters_select() {
        let pairs = vec![
            ("STOP".to_string(), None),
            ("RESUME".to_string(), Some(json!({"data": {"x": 1}}))),
        ];
        assert!(matches_any(&json!({"event": "STOP"}), &pairs));
        assert!(!matches_any(
            &json!({"event": "RESUME", "data": {}}),
            &pairs
        ));
        assert!(matches_any(
            &json!({"event": "RESUME", "data": {"x": 1}}),
            &pairs
        ));
        assert_eq!(describe(&pairs[..1]), "event STOP");
    }
}
