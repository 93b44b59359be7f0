//! Documentation of the script API, attached where each function is
//! registered and printed from the engine's own metadata, so `vmscript doc`
//! lists exactly what a script can call.
//!
//! Bindings register through [`func`] (or [`getter`]) with a signature
//! such as `"event_wait(vm: Machine, name: String, timeout: secs) -> Map"`
//! and a one-line doc; [`reference`] reads the engine's metadata back and
//! groups the overloads of each name.

use std::collections::BTreeMap;

use rhai::{Engine, FuncRegistration};

/// A registration carrying `signature`'s parameter names and types and
/// `doc` as its doc comment. The signature is `name(p: T, …) -> R`; the
/// `-> R` is left out for functions returning nothing.
pub fn func(signature: &str, doc: &str) -> FuncRegistration {
    let (name, params) = split_signature(signature);
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([format!("/// {doc}")])
        .with_volatility(true)
}

/// A property getter `vm.prop`, documented like [`func`].
pub fn getter(this: &str, prop: &str, ret: &str, doc: &str) -> FuncRegistration {
    FuncRegistration::new_getter(prop)
        .with_params_info([format!("{}: {this}", this.to_lowercase()), ret.to_string()])
        .with_comments([format!("/// {doc}")])
        .with_volatility(true)
}

/// `("name", ["a: T", …, "R"])` from `"name(a: T, …) -> R"`.
fn split_signature(signature: &str) -> (&str, Vec<String>) {
    let Some((name, rest)) = signature.split_once('(') else {
        return (signature.trim(), Vec::new());
    };
    let (params, ret) = match rest.rsplit_once(')') {
        Some((p, r)) => (p, r.trim().strip_prefix("->").map(str::trim)),
        None => (rest, None),
    };
    let mut info: Vec<String> = params
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    info.extend(ret.map(str::to_string));
    (name.trim(), info)
}

/// One documented name and its overloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// How a script writes it: `event_wait` or `Machine.name` for a property.
    pub name: String,
    /// Every overload's signature.
    pub signatures: Vec<String>,
    /// The doc lines, without `///`, each distinct one once.
    pub docs: Vec<String>,
}

/// Every function registered on `engine` (Rhai's standard library aside),
/// sorted by name.
pub fn reference(engine: &Engine) -> Vec<Entry> {
    let json = engine.gen_fn_metadata_to_json(false).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
    let functions = value
        .get("functions")
        .and_then(|f| f.as_array())
        .cloned()
        .unwrap_or_default();
    for f in functions {
        let text = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let raw = text("name");
        let mut signature = text("signature");
        let name = match raw.strip_prefix("get$") {
            Some(prop) => {
                let this = f
                    .pointer("/params/0/type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string();
                signature = format!("{this}.{prop} -> {}", text("returnType"));
                format!("{this}.{prop}")
            }
            None => raw,
        };
        let docs: Vec<String> = f
            .get("docComments")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .flat_map(|d| {
                d.lines()
                    .map(|l| l.trim_start_matches('/').trim().to_string())
            })
            .collect();
        let e = by_name.entry(name.clone()).or_insert_with(|| Entry {
            name,
            signatures: Vec::new(),
            docs: Vec::new(),
        });
        e.signatures.push(signature);
        for d in docs {
            if !e.docs.contains(&d) {
                e.docs.push(d);
            }
        }
    }
    let mut entries: Vec<Entry> = by_name.into_values().collect();
    for e in &mut entries {
        e.signatures
            .sort_by_key(|s| (s.matches(',').count(), s.clone()));
    }
    entries
}

/// What the reference says before the functions.
const PREAMBLE: &str = "\
The vmscript script API. Types: `secs` is seconds as int or float; `any` is
any value; a Map is an object map #{...}; `()` stands for an absent value.
Errors are thrown as maps #{kind, message, ...}; see API.md for the kinds.

";

/// The reference as text: each signature, then its doc indented.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from(PREAMBLE);
    for e in entries {
        for s in &e.signatures {
            out.push_str(s);
            out.push('\n');
        }
        for d in &e.docs {
            out.push_str("    ");
            out.push_str(d);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_split_into_names_params_and_return() {
        let (n, p) = split_signature("event_wait(vm: Machine, name: String) -> Map");
        assert_eq!(n, "event_wait");
        assert_eq!(p, ["vm: Machine", "name: String", "Map"]);
        let (n, p) = split_signature("now() -> FLOAT");
        assert_eq!((n, p), ("now", vec!["FLOAT".to_string()]));
        let (n, p) = split_signature("sleep(secs: secs)");
        assert_eq!((n, p), ("sleep", vec!["secs: secs".to_string()]));
    }

    #[test]
    fn the_reference_lists_what_is_registered() {
        let mut engine = Engine::new_raw();
        func("twice(x: INT) -> INT", "Doubles x.")
            .register_into_engine(&mut engine, |x: i64| x * 2);
        func("twice(x: FLOAT) -> FLOAT", "Doubles x.")
            .register_into_engine(&mut engine, |x: f64| x * 2.0);
        let r = reference(&engine);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "twice");
        assert_eq!(r[0].signatures.len(), 2);
        assert!(r[0].signatures[0].starts_with("twice(x: "), "{:?}", r[0]);
        assert_eq!(r[0].docs, ["Doubles x."]);
        assert!(render(&r).contains("    Doubles x.\n"));
    }
}
