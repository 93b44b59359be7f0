//! Bad input from scripts: every registered function called with wrong
//! argument types (found in the engine's own metadata, so a new function
//! is covered without touching this file), unknown option keys, and
//! malformed scripts. Each must give one clear error with a position, and
//! nothing may panic.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::world::*;
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
        "Range" => "0..1",
        "RangeInclusive" => "0..=1",
        "char" => "'x'",
        "Blob" => "blob(1)",
        "U64" => "parse_json(\"18446744073709551615\")",
        _ => "()",
    }
}

/// A value of another type, or `None` for `any`.
fn wrong(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "String" | "Machine" | "String|Map" => "42",
        // Not a number: to_float also takes an INT.
        "int" | "INT" | "float" | "FLOAT" | "bool" | "secs" | "bool|secs" | "U64" => "\"soon\"",
        "Map" | "Array" | "Console" | "FnPtr" | "Range" | "RangeInclusive" | "char" | "Blob" => {
            "42"
        }
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
                debugger: None,
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

/// Runs `cmd`, SIGKILLing it if it has not ended after `limit`; None then.
fn output_within(mut cmd: std::process::Command, limit: Duration) -> Option<std::process::Output> {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => Some(o),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            let _ = rx.recv();
            None
        }
    }
}

#[test]
fn a_script_starting_with_a_byte_order_mark_runs_and_checks() {
    let w = World::new();
    w.script("t/lib/m.rhai", "\u{feff}fn three() { 3 }\n");
    w.script(
        "t/a.rhai",
        "\u{feff}import \"lib/m\" as m;\nassert_eq(m::three(), 3);\nlet x = ;\n",
    );
    w.script(
        "t/b.rhai",
        "\u{feff}import \"lib/m\" as m;\nassert_eq(m::three(), 3);\n",
    );
    let o = w.run(&["check", "t/b.rhai", "t/a.rhai"]);
    // The mark is not a character of line 1: a later error keeps its position.
    assert_eq!(
        stdout(&o),
        "t/a.rhai:3:9: SyntaxError: Unexpected ';'\n1 ok, 1 with errors\n",
        "{}",
        stderr(&o)
    );
    let o = w.run(&["run", "t/b.rhai"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_fifo_named_like_a_script_is_refused_not_waited_on() {
    let w = World::new();
    let fifo = w.dir("t").join("pipe.rhai");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo on a path in this test's folder.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    w.script("t/ok.rhai", "assert(true);\n");
    let expected = "t/pipe.rhai: HostError: reading the script: not a regular file (a FIFO)";
    for args in [&["check", "t"][..], &["run", "t"][..]] {
        let o = output_within(w.command(args), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("vmscript {args:?} blocked on the FIFO"));
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {out}{}", stderr(&o));
        assert_eq!(line_with(&out, "t/pipe.rhai:"), expected, "{out}");
    }
}

#[test]
fn an_empty_tmpdir_is_taken_as_unset_not_as_the_current_folder() {
    let w = World::new();
    w.script(
        "t.rhai",
        "print(`dir ${temp_dir()}`);\nlet vm = machine();\nvm.add_args(\"-M\", \"none\");\nvm.launch();\nprint(`dir ${vm.temp_dir}`);\nvm.shutdown();\n",
    );
    let o = w
        .command(&["run", "--no-capture", "t.rhai"])
        .env("TMPDIR", "")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let here = w.path().canonicalize().unwrap();
    let dirs: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("dir ")).collect();
    assert_eq!(dirs.len(), 2, "{out}");
    for d in dirs {
        let d = Path::new(d);
        assert!(d.is_absolute() && !d.starts_with(&here), "{}", d.display());
        assert!(d.starts_with("/tmp"), "{}", d.display());
    }
    let here: Vec<String> = std::fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vmscript-"))
        .collect();
    assert_eq!(here, Vec::<String>::new(), "made in the current folder");
}

#[test]
fn to_json_refuses_what_parse_json_cannot_read_back() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
fn nested(n) { let d = 1; for i in 0..n { d = [d]; } d }
let ok = nested(127);
assert_eq(to_json(parse_json(to_json(ok))), to_json(ok));
try {
    to_json(nested(128));
    fail("to_json wrote JSON that parse_json refuses");
} catch (e) {
    assert_eq(e.kind, "HostError");
    assert_match(e.message, "128 levels deep.*127 levels");
}
"#,
    );
    let o = w.run(&["run", "t.rhai"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn one_call_asking_for_a_huge_size_is_refused_before_it_allocates() {
    let w = World::new();
    w.script(
        "t.rhai",
        r#"
for f in [|| { let s = "x"; s.pad(1 << 40, 'x'); }, || { let s = "x"; s.pad(1 << 40, "ab"); },
          || { let a = []; a.pad(1 << 40, 0); }, || { let b = blob(1); b.pad(1 << 40, 0); },
          || blob(1 << 40), || blob(1 << 40, 7)] {
    try {
        f.call();
        fail("no error");
    } catch (e) {
        assert_eq(e.kind, "HostError", e.message);
        assert_match(e.message, "limit of 256 MiB");
    }
}
let s = "ab";
s.pad(5, 'x');
assert_eq(s, "abxxx");
s.pad(9, "12");
assert_eq(s, "abxxx1212");
"#,
    );
    let start = std::time::Instant::now();
    let o = w
        .command(&["run", "t.rhai"])
        .env("VMSCRIPT_MAX_MEMORY_MB", "256")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_caught_rhai_error_has_a_kind() {
    let w = World::new();
    w.script(
        "t/lib/m.rhai",
        "fn kind_of_bad_index() {\n    let a = [1];\n    let k = ();\n    try { a[5]; } catch (e) { k = e.kind; }\n    k\n}\n",
    );
    w.script(
        "t/a.rhai",
        r#"import "lib/m" as m;
try { 1 - "a" } catch (e) { assert_eq(e.kind, "ScriptError", e); }
try { sleep("soon") } catch (e) {
    assert_eq(e.kind, "ScriptError", e);
    assert(e.message != (), e);
}
try { fail("x") } catch (e) { assert_eq(e.kind, "AssertionFailed"); }
assert_eq(m::kind_of_bad_index(), "ScriptError");
try { undefined_function() } catch (e) { throw e; }
"#,
    );
    let o = w.run(&["run", "t/a.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // The rethrown one is reported with its kind, at the throw's true column.
    assert!(
        line_with(&out, "t/a.rhai:9:")
            .starts_with("t/a.rhai:9:42: ScriptError: Function not found"),
        "{out}"
    );
}
