//! The one place where Rhai values and JSON values are converted into each
//! other; knows nothing of machines.
//!
//! Integers stay integers both ways, exactly: Rhai's INT is an `i64`, so a
//! JSON integer above `i64::MAX` (QEMU's uint64 properties, whose "unset"
//! is often 18446744073709551615) becomes a [`U64`], a value that prints
//! as its number, compares equal to the same [`U64`], and is written back
//! to JSON as the same integer (a FLOAT would round it, and QEMU refuses a
//! float where it expects a uint64); `x.to_float()` gives its approximate
//! FLOAT for arithmetic. Floats stay floats, `()` is `null`, and arrays and maps convert element by
//! element. Rhai object maps keep their keys sorted, so a map coming from
//! JSON is in key order, not in the order of the text. Values with no JSON
//! form (a `Machine`, a function pointer, NaN) are an error naming the type.
//!
//! Start with [`to_json`] and [`from_json`]; [`json_eq`] is the equality
//! the assertions use.

use rhai::{Array, Blob, Dynamic, Engine, ImmutableString, Map, INT};

use serde_json::{Number, Value};

use crate::machine;

/// A JSON integer above `i64::MAX`, kept exact (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct U64(pub u64);

/// Registers the [`U64`] type: printing, equality, `to_float`.
pub fn register(engine: &mut Engine) {
    use super::docs::func;
    engine.register_type_with_name::<U64>("U64");
    const EXACT: &str = "A JSON integer above the largest INT (QEMU's uint64), kept exact";
    func(
        "to_string(x: U64) -> String",
        &format!("{EXACT}: its number."),
    )
    .register_into_engine(engine, |x: &mut U64| x.0.to_string());
    func(
        "to_debug(x: U64) -> String",
        &format!("{EXACT}: its number."),
    )
    .register_into_engine(engine, |x: &mut U64| x.0.to_string());
    func(
        "to_float(x: U64) -> float",
        &format!("{EXACT}: the nearest FLOAT, for arithmetic."),
    )
    .register_into_engine(engine, |x: &mut U64| x.0 as f64);
    func(
        "==(a: U64, b: U64) -> bool",
        &format!("{EXACT}: the same integer."),
    )
    .register_into_engine(engine, |a: U64, b: U64| a == b);
    func(
        "!=(a: U64, b: U64) -> bool",
        &format!("{EXACT}: not the same integer."),
    )
    .register_into_engine(engine, |a: U64, b: U64| a != b);
}

/// A Rhai value as JSON, or a message naming what has no JSON form.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    if value.is_shared() {
        return to_json(&value.flatten_clone());
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(i.into()));
    }
    if let Some(u) = value.read_lock::<U64>() {
        return Ok(Value::Number(u.0.into()));
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the float {f} has no JSON form"));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(a) = value.read_lock::<Array>() {
        return a
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if let Some(m) = value.read_lock::<Map>() {
        return map_to_json(&m).map(Value::Object);
    }
    if let Some(b) = value.read_lock::<Blob>() {
        return Ok(Value::Array(b.iter().map(|&x| Value::from(x)).collect()));
    }
    Err(format!("a {} has no JSON form", value.type_name()))
}

/// A Rhai object map as a JSON object.
pub fn map_to_json(map: &Map) -> Result<serde_json::Map<String, Value>, String> {
    map.iter()
        .map(|(k, v)| to_json(v).map(|v| (k.to_string(), v)))
        .collect()
}

/// A JSON value as a Rhai value.
pub fn from_json(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => (i as INT).into(),
            (None, Some(u)) => Dynamic::from(U64(u)),
            _ => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(from_json).collect()),
        Value::Object(m) => Dynamic::from_map(json_map_to_rhai(m)),
    }
}

/// A JSON object as a Rhai object map.
pub fn json_map_to_rhai(map: &serde_json::Map<String, Value>) -> Map {
    map.iter()
        .map(|(k, v)| (k.as_str().into(), from_json(v)))
        .collect()
}

/// An `i32` that may be absent (an exit code, a pid) as INT or `()`.
pub fn opt_int(v: Option<i32>) -> Dynamic {
    v.map_or(Dynamic::UNIT, |v| Dynamic::from_int(v.into()))
}

/// Strings as a Rhai array of strings.
pub fn string_array(v: &[String]) -> Array {
    v.iter().map(|s| s.clone().into()).collect()
}

/// Equality as a test author means it: like `==` on JSON values, except
/// that an INT and a FLOAT of the same value are equal (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => machine::numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| json_eq(xv, yv)))
        }
        _ => a == b,
    }
}

/// A value for a person to read in a failure message: pretty JSON for
/// what has a JSON form (strings quoted, so whitespace shows), else Rhai's
/// debug form.
pub fn show(value: &Dynamic) -> String {
    match to_json(value) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
        Err(_) => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: Value) -> Value {
        to_json(&from_json(&v)).unwrap()
    }

    #[test]
    fn integers_stay_integers() {
        let d = from_json(&json!(42));
        assert_eq!(d.as_int().unwrap(), 42);
        assert_eq!(to_json(&Dynamic::from_int(-7)).unwrap(), json!(-7));
        assert!(round_trip(json!(i64::MAX)).is_i64());
        assert!(round_trip(json!(i64::MIN)).is_i64());
    }

    #[test]
    fn integers_beyond_i64_stay_exact_both_ways() {
        for n in [u64::MAX, i64::MAX as u64 + 1, 18_000_000_000_000_000_123] {
            let d = from_json(&json!(n));
            assert!(d.is::<U64>(), "{n}");
            let back = to_json(&d).unwrap();
            assert_eq!(back.as_u64(), Some(n));
            assert_eq!(back.to_string(), n.to_string());
        }
        // Inside a reply, as QEMU sends it.
        let reply = json!({"return": {"size": u64::MAX, "small": 5}});
        assert_eq!(round_trip(reply.clone()), reply);
        assert!(round_trip(json!(i64::MAX)).is_i64());
    }

    #[test]
    fn a_u64_prints_compares_and_converts_in_a_script() {
        let mut engine = Engine::new();
        register(&mut engine);
        let mut scope = rhai::Scope::new();
        scope.push("big", from_json(&json!(u64::MAX)));
        scope.push("same", from_json(&json!(u64::MAX)));
        scope.push("other", from_json(&json!(u64::MAX - 1)));
        let text: String = engine.eval_with_scope(&mut scope, "`${big}`").unwrap();
        assert_eq!(text, "18446744073709551615");
        assert!(engine
            .eval_with_scope::<bool>(&mut scope, "big == same")
            .unwrap());
        assert!(engine
            .eval_with_scope::<bool>(&mut scope, "big != other")
            .unwrap());
        let f: f64 = engine
            .eval_with_scope(&mut scope, "big.to_float()")
            .unwrap();
        assert_eq!(f, u64::MAX as f64);
        let m: Dynamic = engine
            .eval_with_scope(&mut scope, "#{ value: big }")
            .unwrap();
        assert_eq!(to_json(&m).unwrap(), json!({"value": u64::MAX}));
    }

    #[test]
    fn floats_bools_strings_and_null_convert() {
        assert_eq!(from_json(&json!(1.5)).as_float().unwrap(), 1.5);
        assert_eq!(round_trip(json!(2.0)), json!(2.0));
        assert!(round_trip(json!(2.0)).is_f64());
        assert_eq!(round_trip(json!(true)), json!(true));
        assert_eq!(round_trip(json!("héllo")), json!("héllo"));
        assert!(from_json(&Value::Null).is_unit());
        assert_eq!(to_json(&Dynamic::UNIT).unwrap(), Value::Null);
    }

    #[test]
    fn nested_arrays_and_maps_convert() {
        let v = json!({"b": [1, {"c": null}], "a": {"x": "y", "n": 1.25}});
        assert_eq!(round_trip(v.clone()), v);
        let d = from_json(&v);
        let m = d.read_lock::<Map>().unwrap();
        let keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn chars_and_blobs_have_json_forms() {
        assert_eq!(to_json(&Dynamic::from_char('x')).unwrap(), json!("x"));
        let blob: Blob = vec![1, 2, 255];
        assert_eq!(
            to_json(&Dynamic::from_blob(blob)).unwrap(),
            json!([1, 2, 255])
        );
    }

    #[test]
    fn values_without_json_form_are_named() {
        let err = to_json(&Dynamic::from_float(f64::NAN)).unwrap_err();
        assert!(err.contains("NaN"), "{err}");
        #[derive(Clone)]
        struct Opaque;
        let err = to_json(&Dynamic::from(Opaque)).unwrap_err();
        assert!(err.contains("Opaque"), "{err}");
    }

    #[test]
    fn shared_values_convert() {
        let d = Dynamic::from_int(3).into_shared();
        assert_eq!(to_json(&d).unwrap(), json!(3));
    }

    #[test]
    fn equality_treats_int_and_float_alike() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!("1"), &json!(1)));
    }

    #[test]
    fn show_pretty_prints_maps_and_quotes_strings() {
        let d = from_json(&json!({"a": 1}));
        assert_eq!(show(&d), "{\n  \"a\": 1\n}");
        assert_eq!(show(&Dynamic::from("x ")), "\"x \"");
    }

    mod props {
        //! Property tests: arbitrary JSON and Rhai values convert without
        //! a panic and round-trip where the module says they do. Cases:
        //! `$VMSCRIPT_FUZZ_CASES` (256 by default, as in CI).
        use super::*;
        use proptest::prelude::*;

        fn cases() -> u32 {
            std::env::var("VMSCRIPT_FUZZ_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(256)
        }

        /// JSON whose every number is an i64 or a finite float.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "\\PC{0,16}".prop_map(Value::String),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    proptest::collection::btree_map("\\PC{0,8}", inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Rhai values, some with no JSON form (NaN, infinities, a type
        /// of ours) or a lossy one (chars, blobs).
        fn rhai_value() -> impl Strategy<Value = Dynamic> {
            #[derive(Clone)]
            struct Opaque;
            let leaf = prop_oneof![
                Just(Dynamic::UNIT),
                any::<bool>().prop_map(Dynamic::from_bool),
                any::<INT>().prop_map(Dynamic::from_int),
                any::<f64>().prop_map(Dynamic::from_float),
                any::<char>().prop_map(Dynamic::from_char),
                "\\PC{0,16}".prop_map(Dynamic::from),
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(Dynamic::from_blob),
                Just(Dynamic::from(Opaque)),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Dynamic::from_array),
                    proptest::collection::btree_map("\\PC{0,8}", inner.clone(), 0..8).prop_map(
                        |m| Dynamic::from_map(m.into_iter().map(|(k, v)| (k.into(), v)).collect())
                    ),
                    inner.prop_map(Dynamic::into_shared),
                ]
            })
        }

        /// Whether a Rhai value has an exact JSON form.
        fn exact(v: &Dynamic) -> bool {
            let v = v.flatten_clone();
            if let Ok(f) = v.as_float() {
                return f.is_finite();
            }
            if let Some(a) = v.read_lock::<Array>() {
                return a.iter().all(exact);
            }
            if let Some(m) = v.read_lock::<Map>() {
                return m.values().all(exact);
            }
            v.is_unit() || v.is_bool() || v.is_int() || v.is_string()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            #[test]
            fn json_round_trips_through_rhai(v in json()) {
                let back = to_json(&from_json(&v)).unwrap();
                prop_assert_eq!(&back, &v);
                // Integers stay integers, floats stay floats.
                prop_assert!(json_eq(&back, &v));
            }

            #[test]
            fn any_json_text_converts_without_panic(text in "\\PC{0,64}") {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    let d = from_json(&v);
                    let _ = to_json(&d);
                    let _ = show(&d);
                }
            }

            #[test]
            fn every_u64_round_trips_exactly(n in any::<u64>()) {
                let d = from_json(&Value::from(n));
                match i64::try_from(n) {
                    Ok(i) => prop_assert_eq!(d.as_int().unwrap(), i),
                    Err(_) => prop_assert_eq!(d.read_lock::<U64>().map(|u| u.0), Some(n)),
                }
                prop_assert_eq!(to_json(&d).unwrap().as_u64(), Some(n));
            }

            #[test]
            fn rhai_values_convert_or_name_what_cannot(v in rhai_value()) {
                let _ = show(&v);
                match to_json(&v) {
                    Ok(j) => {
                        if exact(&v) {
                            // Back to Rhai and to JSON again: the same value.
                            prop_assert_eq!(to_json(&from_json(&j)).unwrap(), j);
                        }
                    }
                    Err(e) => {
                        prop_assert!(!exact(&v), "{e}");
                        prop_assert!(e.contains("no JSON form"), "{e}");
                    }
                }
            }
        }
    }
}
