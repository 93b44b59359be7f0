//! Bad input from scripts: every registered function called with wrong
//! argument types (found in the engine's own metadata, so a new function
//! is covered without touching this file), unknown option keys, and
//! malformed scripts. Each must give one clear error with a position, and
//! nothing may panic.

mod common;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use common::world::*;
use rhai::{Engine, Scope};
use vmscript::script::{self, Cancel, Failure, QemuBinary, Run, RunConfig};

/// One overload as the metadata describes it.
#[derive(Debug)]
struct Overload {
    name: String,
    /// (name, declared type) of each parameter.
    params: Vec<(String, String)>,
}

fn overloads(engine: &Engine) -> Vec<Overload> {
    let json: serde_json::Value =
        serde_json::from_str(&engine.gen_fn_metadata_to_json(false).unwrap()).unwrap();
    json["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Overload {
            name: f["name"].as_str().unwrap().to_string(),
            params: f["params"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
                            (text("name"), text("type"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// A value of the declared type (what a correct call would pass).
fn valid(ty: &str) -> &'static str {
    match ty {
        "String" => "\"x\"",
        "int" | "INT" => "1",
        "float" | "FLOAT" => "1.0",
        "bool" => "true",
        "Map" => "#{}",
        "Array" => "[]",
        "Machine" => "vm",
        "Console" => "con",
        "FnPtr" => "|| true",
        "secs" | "bool|secs" => "1",
        "String|Map" => "\"x\"",
        "Blob" => "blob()",
        "Range" => "0..1",
        "RangeInclusive" => "0..=1",
        _ => "()",
    }
}

/// A value of another type, or `None` for `any`.
fn wrong(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "String" | "Machine" | "String|Map" | "Blob" => "42",
        "int" | "INT" | "float" | "FLOAT" | "bool" | "secs" | "bool|secs" => "\"soon\"",
        "Map" | "Array" | "Console" | "FnPtr" | "Range" | "RangeInclusive" => "42",
        "any" => return None,
        other => panic!("a parameter of type {other:?}: add it to valid() and wrong()"),
    })
}

/// An engine with the whole API, and a scope holding a launched machine
/// `vm` with its console `con`.
fn world() -> (Arc<Run>, Engine, Scope<'static>, tempfile::TempDir) {
    let art = tempfile::tempdir().unwrap();
    let run = Arc::new(
        Run::new(
            RunConfig {
                script: "bad.rhai".into(),
                artifacts: art.path().to_path_buf(),
                timeout: Duration::from_secs(120),
                qemu: QemuBinary::resolve(None),
                params: Default::default(),
                capture: true,
                lib_dirs: Vec::new(),
            },
            Cancel::new(),
        )
        .unwrap(),
    );
    let engine = script::engine(&run);
    let mut scope = Scope::new();
    engine
        .run_with_scope(
            &mut scope,
            "let vm = machine(); vm.add_args(\"-M\", \"none\"); vm.set_console(); vm.launch(); \
             let con = vm.console_socket();",
        )
        .unwrap();
    (run, engine, scope, art)
}

/// Evaluates `call`; panics if it panicked; returns its failure, if any.
fn try_call(engine: &Engine, scope: &mut Scope, call: &str) -> Option<Failure> {
    let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine.eval_with_scope::<rhai::Dynamic>(scope, call)
    }));
    match res {
        Err(_) => panic!("{call} panicked"),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(Failure::from_eval(&e, "bad.rhai")),
    }
}

/// A failure as the report shows it must say where and what.
fn assert_clear(call: &str, f: &Failure) {
    assert!(
        f.line.is_some() && f.column.is_some(),
        "{call}: no position: {f}"
    );
    assert!(!f.message.trim().is_empty(), "{call}: no message: {f}");
    assert!(!f.kind.is_empty(), "{call}: no kind: {f}");
    let shown = f.to_string();
    assert!(shown.starts_with("bad.rhai:1:"), "{call}: {shown}");
}

/// Functions whose wrong-typed call may succeed, by design. Everything
/// else must refuse a wrong type.
const LENIENT: &[&str] = &[
    // Message arguments take any value and show it.
    "assert",
    "assert_eq",
    "assert_match",
    // Another overload (Rhai's own, or ours for `any`) takes the value.
    "to_string",
    "to_debug",
    "to_json",
    // Matching compares any two values as JSON.
    "event_match",
];

#[test]
fn every_function_refuses_wrong_argument_types_with_a_clear_error() {
    let (run, engine, mut scope, _art) = world();
    let all = overloads(&engine);
    assert!(all.len() > 60, "only {} overloads found", all.len());
    let mut calls = 0;
    let mut lenient = BTreeSet::new();
    for o in &all {
        // Properties are read as `x.prop`; a wrong `x` has none.
        if let Some(prop) = o.name.strip_prefix("get$") {
            let call = format!("let x = 42; x.{prop}");
            let f =
                try_call(&engine, &mut scope, &call).unwrap_or_else(|| panic!("{call} succeeded"));
            assert_clear(&call, &f);
            calls += 1;
            continue;
        }
        // A call with no arguments: one of a wrong type too many.
        let mut cases: Vec<Vec<&str>> = Vec::new();
        if o.params.is_empty() {
            cases.push(vec!["vm"]);
        }
        // One wrong argument at a time, the others right; then all wrong.
        for (i, (_, ty)) in o.params.iter().enumerate() {
            let Some(bad) = wrong(ty) else { continue };
            let mut args: Vec<&str> = o.params.iter().map(|(_, t)| valid(t)).collect();
            args[i] = bad;
            cases.push(args);
        }
        if o.params.iter().all(|(_, t)| wrong(t).is_some()) && o.params.len() > 1 {
            cases.push(o.params.iter().filter_map(|(_, t)| wrong(t)).collect());
        }
        for args in cases {
            let call = format!("{}({})", o.name, args.join(", "));
            calls += 1;
            match try_call(&engine, &mut scope, &call) {
                Some(f) => assert_clear(&call, &f),
                None => {
                    lenient.insert(o.name.clone());
                }
            }
        }
    }
    let unexpected: Vec<_> = lenient
        .iter()
        .filter(|n| !LENIENT.contains(&n.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "these accepted a wrong argument type: {unexpected:?}"
    );
    assert!(calls > 150, "only {calls} calls");
    eprintln!("{} overloads, {calls} wrong calls", all.len());
    // None of that disturbed the machine.
    let st: rhai::Map = engine
        .eval_with_scope(&mut scope, "vm.command(\"query-status\")")
        .unwrap();
    assert_eq!(st["status"].to_string(), "running");
    let report = run.finish();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn every_options_map_names_an_unknown_key_and_lists_the_valid_ones() {
    let (run, engine, mut scope, _art) = world();
    let mut checked = Vec::new();
    for o in overloads(&engine) {
        if !o.params.iter().any(|(n, t)| n == "options" && t == "Map") {
            continue;
        }
        let args: Vec<&str> = o
            .params
            .iter()
            .map(|(n, t)| {
                if n == "options" {
                    "#{ bogus_key: 1 }"
                } else if n == "argv" {
                    "[\"true\"]"
                } else {
                    valid(t)
                }
            })
            .collect();
        let call = format!("{}({})", o.name, args.join(", "));
        let f = try_call(&engine, &mut scope, &call)
            .unwrap_or_else(|| panic!("{call} accepted an unknown option"));
        assert_clear(&call, &f);
        assert!(
            f.message
                .contains("unknown option bogus_key; valid options are: "),
            "{call}: {f}"
        );
        checked.push(o.name);
    }
    checked.sort();
    checked.dedup();
    for name in [
        "machine",
        "qtest_machine",
        "run_host",
        "shutdown",
        "send_fd_scm",
    ] {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} not checked: {checked:?}"
        );
    }
    run.finish();
}

/// Scripts that do not compile, each with the line and column `check`
/// must report.
const MALFORMED: &[(&str, &str, &str)] = &[
    ("string", "let s = \"abc;\n", "1:9"),
    ("brace", "fn f() {\n    1\n", "3:1"),
    ("operator", "let x = 1;\nlet y = x +* 2;\n", "2:12"),
    ("let", "let = 5;\n", "1:5"),
    ("interpolation", "let s = `${1`;\n", "1:"),
    ("params", "fn f(a, a) { a }\n", "1:9"),
    ("keys", "let m = #{ a: 1, a: 2 };\n", "1:18"),
    ("nul", "let x = 1;\0\n", "1:"),
    ("closing", "let x = (1 + 2));\n", "1:"),
];

#[test]
fn malformed_scripts_give_one_clear_error_each_with_its_position() {
    let w = World::new();
    w.script("t/empty.rhai", "");
    let mut deep = "(".repeat(200);
    deep.push('1');
    deep.push_str(&")".repeat(200));
    w.script("t/deep.rhai", &format!("let x = {deep};\n"));
    for (name, text, _) in MALFORMED {
        w.script(&format!("t/{name}.rhai"), text);
    }
    let o = w.run(&["check", "t"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    for (name, _, at) in MALFORMED.iter().chain(&[("deep", "", "1:")]) {
        let head = format!("t/{name}.rhai:");
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(&head)).collect();
        assert_eq!(lines.len(), 1, "{name}: {out}");
        assert!(
            lines[0].starts_with(&format!("{head}{at}")) && lines[0].contains(": SyntaxError: "),
            "{name}: {}",
            lines[0]
        );
    }
    assert!(!out.contains("empty.rhai"), "{out}");
    assert!(out.contains("1 ok, 10 with errors"), "{out}");
    // `run` reports them the same way, and runs the rest.
    let o = w.run(&["run", "-j", "1", "t"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("PASS t/empty.rhai"), "{out}");
    assert_eq!(out.matches(": SyntaxError: ").count(), 10, "{out}");
    w.assert_clean();
}

#[test]
fn a_script_that_is_not_utf8_is_one_clear_error() {
    let w = World::new();
    std::fs::write(w.path().join("bin.rhai"), b"let x = \"\xff\xfe\";\n").unwrap();
    let o = w.run(&["check", "bin.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = line_with(&out, "bin.rhai");
    assert!(
        line.contains("HostError: reading the script: ") && line.contains("UTF-8"),
        "{line}"
    );
}
