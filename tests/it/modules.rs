//! `import`: where modules are found (the script's folder, then `--lib`,
//! then `$VMSCRIPT_PATH`, then the bundled stdlib), folder modules,
//! relative imports, refused names, the missing-module message, compiling
//! a module once per run, and `vmscript doc` with `docs/reference.md`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::world::{stdout, World, VMSCRIPT};

/// `vmscript ARGS` in the world, with `$VMSCRIPT_PATH` set to `env`.
fn run(w: &World, args: &[&str], env: Option<&str>) -> Output {
    let mut c = w.command(args);
    c.env_remove("VMSCRIPT_PATH");
    if let Some(e) = env {
        c.env("VMSCRIPT_PATH", e);
    }
    c.output().unwrap()
}

/// Every line the run printed with `print` (`--no-capture`), test lines
/// and the summary aside.
fn printed(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .filter(|l| !l.starts_with("PASS ") && !l.starts_with("FAIL ") && !l.contains(" passed, "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_script_folder_beats_lib_which_beats_vmscript_path_which_beats_the_stdlib() {
    let w = World::new();
    w.script(
        "t/t.rhai",
        "import \"retry\" as m;\nprint(m::poll(|| \"stdlib\", 1));\n",
    );
    for place in ["t", "lib", "env"] {
        w.script(
            &format!("{place}/retry.rhai"),
            &format!("fn poll(f, t) {{ \"{place}\" }}\n"),
        );
    }
    let args = ["run", "--no-capture", "--lib", "lib", "t/t.rhai"];
    let env = Some("/nonexistent:env");
    assert_eq!(printed(&run(&w, &args, env)), ["t"]);
    std::fs::remove_file(w.path().join("t/retry.rhai")).unwrap();
    assert_eq!(printed(&run(&w, &args, env)), ["lib"]);
    std::fs::remove_file(w.path().join("lib/retry.rhai")).unwrap();
    assert_eq!(printed(&run(&w, &args, env)), ["env"]);
    std::fs::remove_file(w.path().join("env/retry.rhai")).unwrap();
    assert_eq!(printed(&run(&w, &args, env)), ["stdlib"]);
}

#[test]
fn folder_modules_and_relative_imports_resolve_from_the_modules_own_folder() {
    let w = World::new();
    w.script(
        "t/t.rhai",
        "import \"pkg\" as p;\nimport \"sub/deep\" as d;\nprint(p::who());\nprint(d::who());\n",
    );
    // A folder module whose imports are found beside its mod.rhai, not
    // beside the script.
    w.script(
        "lib/pkg/mod.rhai",
        "import \"inner\" as i;\nfn who() { \"pkg+\" + i::who() }\n",
    );
    w.script("lib/pkg/inner.rhai", "fn who() { \"lib/pkg/inner\" }\n");
    w.script("t/inner.rhai", "fn who() { \"t/inner\" }\n");
    // ./ and ../ are relative to the importing module's folder.
    w.script(
        "t/sub/deep.rhai",
        "import \"../common\" as c;\nimport \"./near\" as n;\nfn who() { c::who() + \"+\" + n::who() }\n",
    );
    w.script("t/common.rhai", "fn who() { \"t/common\" }\n");
    w.script("t/sub/near.rhai", "fn who() { \"t/sub/near\" }\n");
    let o = run(
        &w,
        &["run", "--no-capture", "--lib", "lib", "t/t.rhai"],
        None,
    );
    assert_eq!(
        printed(&o),
        ["pkg+lib/pkg/inner", "t/common+t/sub/near"],
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_missing_module_lists_every_place_searched_in_order() {
    let w = World::new();
    w.script("t/t.rhai", "let x = 1;\nimport \"nothere\" as m;\n");
    let o = run(&w, &["run", "--lib", "lib", "t/t.rhai"], Some("env"));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let want = "    t/t.rhai:2:8: HostError: module \"nothere\" not found; searched, in order:\n\
                \x20     t/nothere.rhai\n\
                \x20     t/nothere/mod.rhai\n\
                \x20     lib/nothere.rhai\n\
                \x20     lib/nothere/mod.rhai\n\
                \x20     env/nothere.rhai\n\
                \x20     env/nothere/mod.rhai\n\
                \x20     the bundled stdlib (guest, hotplug, iotests, jobs, migration, net, retry)\n";
    assert!(out.contains(want), "{out}");
}

#[test]
fn names_cannot_escape_the_listed_folders() {
    let w = World::new();
    w.script("secret.rhai", "fn who() { \"secret\" }\n");
    w.script("t/x.rhai", "fn who() { \"x\" }\n");
    for (name, why) in [
        ("/etc/passwd", "absolute names are refused"),
        ("sub/../../secret", "`.` and `..` may only start a name"),
        ("a//b", "empty component"),
    ] {
        w.script("t/t.rhai", &format!("import {name:?} as m;\n"));
        let out = stdout(&run(&w, &["run", "t/t.rhai"], None));
        assert!(
            out.contains("HostError: invalid module name"),
            "{name}: {out}"
        );
        assert!(out.contains(why), "{name}: {out}");
    }
    // A module in a --lib folder asking for a plain name never gets the
    // script's parent folder; `../` names are looked up beside the
    // importer only, never in the other folders.
    w.script("lib/m.rhai", "import \"secret\" as s;\n");
    w.script("t/t.rhai", "import \"m\" as m;\n");
    let out = stdout(&run(&w, &["run", "--lib", "lib", "t/t.rhai"], None));
    assert!(out.contains("module \"secret\" not found"), "{out}");
    w.script("t/t.rhai", "import \"../x\" as m;\n");
    let out = stdout(&run(&w, &["run", "--lib", "t", "t/t.rhai"], None));
    assert!(out.contains("module \"../x\" not found"), "{out}");
    assert!(
        out.contains("t/../x.rhai") && !out.contains("stdlib"),
        "{out}"
    );
    // The importer's own relative path is honoured.
    w.script("t/t.rhai", "import \"../secret\" as s;\nprint(s::who());\n");
    let o = run(&w, &["run", "--no-capture", "t/t.rhai"], None);
    assert_eq!(printed(&o), ["secret"], "{}", stdout(&o));
}

#[test]
fn errors_inside_modules_point_at_the_test_and_say_where_they_were_raised() {
    let w = World::new();
    w.script("t.rhai", "import \"m\" as m;\nm::boom();\n");
    w.script("m.rhai", "fn boom() {\n    fail(\"inside\");\n}\n");
    let out = stdout(&run(&w, &["run", "t.rhai"], None));
    assert!(
        out.contains("    t.rhai:2:4: AssertionFailed: inside\n      |\n    1 | import \"m\" as m;\n    2 | m::boom();\n      |    ^^^^ AssertionFailed\n      raised at m.rhai:2:5\n"),
        "{out}"
    );
    assert!(
        out.contains("in function boom called at t.rhai:2:4"),
        "{out}"
    );
    let o = run(&w, &["run", "--format", "json", "t.rhai"], None);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["error"]["file"], "t.rhai", "{first}");
    assert_eq!(first["error"]["line"], 2, "{first}");

    w.script("m.rhai", "fn broken( {\n");
    let out = stdout(&run(&w, &["run", "t.rhai"], None));
    assert!(out.contains("t.rhai:1:8: SyntaxError"), "{out}");
    assert!(out.contains("raised at m.rhai:1:12"), "{out}");
    assert!(
        out.contains("in module m.rhai imported at t.rhai:1:8"),
        "{out}"
    );

    w.script("m.rhai", "import \"t2\" as t;\n");
    w.script("t2.rhai", "import \"m\" as m;\n");
    let out = stdout(&run(&w, &["run", "t.rhai"], None));
    assert!(
        out.contains("import cycle: m.rhai -> t2.rhai -> m.rhai"),
        "{out}"
    );
}

/// The runner runs tests on threads of their own (`-j`); the modules they
/// share are compiled once for all of them.
#[test]
fn a_module_imported_by_many_tests_at_once_is_compiled_once() {
    use vmscript::script::modules::{self, Folder, SearchPath};
    use vmscript::script::{self, Cancel, QemuBinary, RunConfig, Status};
    let w = World::new();
    w.script("lib/shared.rhai", "fn one() { 1 }\n");
    w.script(
        "lib/other.rhai",
        "import \"shared\" as s;\nfn two() { s::one() + 1 }\n",
    );
    let tests: Vec<_> = (0..8)
        .map(|t| {
            w.script(
                &format!("t/{t}.rhai"),
                "import \"shared\" as s;\nimport \"other\" as o;\nimport \"retry\" as r;\n\
                 assert_eq(s::one() + o::two(), 3);\n",
            )
        })
        .collect();
    let start = std::sync::Barrier::new(tests.len());
    let lib = w.path().join("lib");
    std::thread::scope(|s| {
        for path in &tests {
            let (start, lib) = (&start, &lib);
            s.spawn(move || {
                let artifacts = tempfile::tempdir().unwrap();
                start.wait();
                let outcome = script::run_file(
                    RunConfig {
                        script: path.clone(),
                        artifacts: artifacts.path().to_path_buf(),
                        timeout: Duration::from_secs(30),
                        qemu: QemuBinary::resolve(None),
                        params: Default::default(),
                        capture: true,
                        lib_dirs: vec![lib.clone()],
                        debugger: None,
                    },
                    Cancel::new(),
                );
                assert_eq!(outcome.status, Status::Passed, "{}", path.display());
            });
        }
    });
    let lib = Folder::Dir(lib);
    for name in ["shared", "other", "retry"] {
        let at = modules::locate(name, &lib, &SearchPath::default()).unwrap();
        assert_eq!(modules::compilations_of(&at), 1, "{name}");
    }
}

#[test]
fn doc_lists_the_stdlib_modules_and_documents_one() {
    let w = World::new();
    let out = stdout(&run(&w, &["doc"], None));
    for want in [
        "module guest (<stdlib>/guest.rhai)\n",
        "guest::run(vm, cmd, timeout)\n",
        "module net (<stdlib>/net.rhai)\n",
        "retry::poll(f, timeout, options)\n",
        "event_wait(vm: Machine, name: String) -> Map\n",
    ] {
        assert!(out.contains(want), "{want} missing");
    }
    let o = run(&w, &["doc", "jobs"], None);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.starts_with("module jobs (<stdlib>/jobs.rhai)\n    Run a block job"),
        "{out}"
    );
    assert!(!out.contains("event_wait"), "{out}");

    // A team's own module, found like an import, with its doc comments.
    w.script(
        "lib/team.rhai",
        "//! Our helpers.\n\n/// Doubles `x`.\nfn double(x) { x * 2 }\nprivate fn hidden() {}\n",
    );
    let out = stdout(&run(&w, &["doc", "--lib", "lib", "team"], None));
    assert_eq!(
        out,
        "module team (lib/team.rhai)\n    Our helpers.\n\nteam::double(x)\n    Doubles `x`.\n\n"
    );
    let o = run(&w, &["doc", "nope"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("module \"nope\" not found"));
}

#[test]
fn docs_reference_md_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(VMSCRIPT)
        .args(["doc", "--format", "markdown"])
        .env_remove("VMSCRIPT_PATH")
        .output()
        .unwrap();
    assert!(o.status.success());
    let generated = stdout(&o);
    let checked_in = std::fs::read_to_string(root.join("docs/reference.md")).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/reference.md is stale: run `cargo run -- doc --format markdown > docs/reference.md`"
    );
}
