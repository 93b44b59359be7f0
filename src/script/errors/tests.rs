//! Error maps by kind, and failures' file, line, column and context.

use super::*;

fn field(m: &Map, k: &str) -> String {
    m.get(k).map(|v| v.to_string()).unwrap_or_default()
}

#[test]
fn monitor_errors_carry_class_desc_and_reply() {
    let reply = serde_json::json!({"error": {"class": "CommandNotFound", "desc": "no"}});
    let m = machine_error_map(&machine::Error::MonitorResponse {
        command: "nope".into(),
        class: "CommandNotFound".into(),
        desc: "no".into(),
        reply: Box::new(reply),
    });
    assert_eq!(field(&m, "kind"), "MonitorResponseError");
    assert_eq!(field(&m, "class"), "CommandNotFound");
    assert_eq!(field(&m, "desc"), "no");
    assert!(m["reply"].is_map());
}

#[test]
fn launch_failures_carry_exitcode_command_and_output() {
    let m = machine_error_map(&machine::Error::LaunchFailure {
        cause: "exited".into(),
        exitcode: Some(1),
        command: vec!["qemu".into(), "-bad".into()],
        output: "qemu: -bad: invalid option".into(),
    });
    assert_eq!(field(&m, "kind"), "VMLaunchFailure");
    assert_eq!(m["exitcode"].as_int().unwrap(), 1);
    assert_eq!(m["command"].clone().into_array().unwrap().len(), 2);
    assert!(field(&m, "output").contains("invalid option"));
}

#[test]
fn timeouts_name_what_and_what_was_seen() {
    let m = machine_error_map(&machine::Error::Timeout {
        what: "event STOP".into(),
        after: Duration::from_millis(1500),
        seen: vec!["RESUME".into()],
    });
    assert_eq!(field(&m, "kind"), "Timeout");
    assert_eq!(m["after"].as_float().unwrap(), 1.5);
    assert!(field(&m, "message").contains("RESUME"));
}

#[test]
fn thrown_maps_and_strings_have_kinds() {
    let v: Dynamic = error_map("HostError", "disk full", Vec::new()).into();
    let (k, msg, _) = thrown_kind_and_message(&v);
    assert_eq!((k.as_str(), msg.as_str()), ("HostError", "disk full"));
    let (k, msg, _) = thrown_kind_and_message(&Dynamic::from("boom"));
    assert_eq!((k.as_str(), msg.as_str()), (SCRIPT_ERROR, "boom"));
}

#[test]
fn only_skip_skips_a_thrown_skipped_map_is_an_error() {
    let engine = rhai::Engine::new();
    let err = engine
        .run("throw #{kind: \"Skipped\", message: \"forged\"};")
        .unwrap_err();
    let f = Failure::from_eval(&err, "t.rhai");
    assert_eq!(f.kind, SCRIPT_ERROR);
    assert!(f.message.contains("forged") && f.message.contains("skip(reason)"));
    let f = Failure::from_eval(&skipped("real"), "t.rhai");
    assert_eq!((f.kind.as_str(), f.message.as_str()), (SKIPPED, "real"));
}

#[test]
fn caught_rhai_errors_have_a_kind_and_keep_their_lines() {
    let engine = rhai::Engine::new();
    let text = "let k = [];\ntry { [1][5] } catch (e) { k.push(e.kind); k.push(e.error) }\n\
                try { throw #{kind: \"Timeout\"} } catch (e) {\n  k.push(e.kind);\n}\n\
                try { throw \"text\" } catch (err) { k.push(err) }\n\
                fn f() { try { 1 + \"a\" - 1 } catch (x) { return x.kind; } }\nk.push(f());\n\
                try { let x = 1; } catch { }\nk.push(\"{\");\nk";
    let ast = compile_catching(&engine, text, "t.rhai").unwrap();
    let k: rhai::Array = engine.eval_ast(&ast).unwrap();
    let k: Vec<String> = k.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        k,
        [
            SCRIPT_ERROR,
            "ErrorArrayBounds",
            "Timeout",
            "text",
            SCRIPT_ERROR,
            "{"
        ]
    );
    let err = engine
        .eval_ast::<()>(
            &compile_catching(&engine, "try { 1 } catch (e) { }\n  x", "u.rhai").unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.position().line(), Some(2));
    assert_eq!(err.position().position(), Some(3));
    let src = "try { 1 } catch (e) { throw e; }";
    let ast = compile_catching(&engine, "try { 1 + () } catch (e) { throw e; }", "v.rhai").unwrap();
    let f = Failure::from_eval(&engine.eval_ast::<()>(&ast).unwrap_err(), "v.rhai");
    assert_eq!(f.location(), "v.rhai:1:28", "{src}");
}

#[test]
fn failures_render_file_line_column_kind_message() {
    let engine = rhai::Engine::new();
    let err = engine
        .run("let x = 1;\n  throw #{kind: \"Timeout\", message: \"late\"};")
        .unwrap_err();
    let f = Failure::from_eval(&err, "t.rhai");
    assert_eq!(f.to_string(), "t.rhai:2:3: Timeout: late");
}

#[test]
fn failures_inside_functions_point_into_the_function() {
    let engine = rhai::Engine::new();
    let err = engine
        .run("fn f() {\n    throw \"deep\";\n}\nf();")
        .unwrap_err();
    let f = Failure::from_eval(&err, "t.rhai");
    assert_eq!(f.location(), "t.rhai:2:5");
    assert_eq!(f.kind, SCRIPT_ERROR);
    assert_eq!(f.message, "deep");
    assert_eq!(f.context, vec!["in function f called at t.rhai:4:1"]);
}

#[test]
fn errors_raised_in_a_module_point_at_the_tests_own_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("util.rhai"),
        "fn check(x) {\n    if x > 1 {\n        throw \"too big\";\n    }\n}\n",
    )
    .unwrap();
    let mut engine = rhai::Engine::new();
    let mut resolver = rhai::module_resolvers::FileModuleResolver::new_with_path(dir.path());
    resolver.enable_cache(false);
    engine.set_module_resolver(resolver);
    let text = "import \"util\" as u;\nfn helper(v) {\n    u::check(v)\n}\nhelper(5);";
    let mut ast = compile_catching(&engine, text, "t.rhai").unwrap();
    ast.set_source("t.rhai");
    let err = engine.run_ast(&ast).unwrap_err();
    let f = Failure::from_eval(&err, "t.rhai");
    assert_eq!(f.location(), "t.rhai:3:8", "{f}");
    assert_eq!(f.context[0], "raised at util:3:9", "{f}");
    assert_eq!(
        f.context[1..],
        [
            "in function check called at t.rhai:3:8",
            "in function helper called at t.rhai:5:1"
        ]
    );
}

#[test]
fn a_closure_called_from_a_module_is_placed_in_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.rhai"), "fn each(f) {\n    f.call()\n}\n").unwrap();
    let mut engine = rhai::Engine::new();
    engine.set_module_resolver(rhai::module_resolvers::FileModuleResolver::new_with_path(
        dir.path(),
    ));
    let text = "import \"m\" as m;\nfn bad() { throw \"inner\"; }\nm::each(|| {\n    bad()\n});";
    let mut ast = compile_catching(&engine, text, "c.rhai").unwrap();
    ast.set_source("c.rhai");
    let err = engine.run_ast(&ast).unwrap_err();
    let f = Failure::from_eval(&err, "c.rhai");
    assert_eq!(f.location(), "c.rhai:2:12", "{f}");
    assert_eq!(f.context[0], "in function bad called at c.rhai:4:5", "{f}");
}

#[test]
fn rhai_errors_lose_their_position_suffix() {
    let engine = rhai::Engine::new();
    let err = engine.run("let a = [1];\na[5]").unwrap_err();
    let f = Failure::from_eval(&err, "t.rhai");
    assert_eq!(f.kind, SCRIPT_ERROR);
    assert!(!f.message.contains("line"), "{}", f.message);
    assert_eq!(f.line, Some(2));
}
