//! What a script can make vmscript do to the host besides what it asks
//! for: nothing goes through a shell, and every folder holding sockets or
//! temp files is private (0700) with an unpredictable name.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::world::*;

/// Strings a shell would expand or split.
const NASTY: &[&str] = &[
    "$(id)", "`id`", "a; id", "a | id", "a && id", "$HOME", "*", "'quoted'", "\"dq\"", "a\nb",
    "--help", "${IFS}id",
];

#[test]
fn run_host_passes_argv_literally_never_through_a_shell() {
    let w = World::new();
    let list = NASTY
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    w.script(
        "t.rhai",
        &format!(
            "let nasty = [{list}];\n{}",
            r#"
let r = run_host(["echo", "$(id)"]);
assert_eq(r.stdout, "$(id)\n");
assert_eq(r.status, 0);
for s in nasty {
    let r = run_host(["printf", "%s", s]);
    assert_eq(r.stdout, s);
    let r = run_host(["printenv", "X"], #{ env: #{ X: s } });
    assert_eq(r.stdout, s + "\n");
}
// A program name is looked up, not interpreted.
try {
    run_host(["echo hi"]);
    fail("a program named 'echo hi' ran");
} catch (e) {
    assert_eq(e.kind, "HostError", e.message);
}
"#
        ),
    );
    let o = w.run(&["run", "t.rhai"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    w.assert_clean();
}

#[test]
fn qemu_arguments_reach_qemu_literally() {
    let w = World::new();
    let marker = w.path().join("pwned");
    let name = format!("$(touch {})", marker.display());
    w.script(
        "t.rhai",
        &format!(
            "let name = {};\n{}",
            serde_json::to_string(&name).unwrap(),
            r#"
let vm = machine();
vm.add_args("-M", "none", "-name", name);
vm.launch();
assert_eq(vm.command("query-name").name, name);
assert(vm.full_args.contains(name));
vm.shutdown();
"#
        ),
    );
    let o = w.run(&["run", "t.rhai"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!marker.exists(), "a shell ran the argument");
    w.assert_clean();
}

#[test]
fn no_source_file_runs_a_shell() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut checked = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // Unit tests may use a shell as a fake peer; the code may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            if p.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            for shell in [
                "\"sh\"",
                "\"bash\"",
                "\"/bin/sh\"",
                "\"/bin/bash\"",
                "\"-c\"",
            ] {
                assert!(
                    !code.contains(shell),
                    "{} mentions {shell}: commands must be argv, never a shell line",
                    p.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} files checked");
}

#[test]
fn temp_and_socket_folders_are_private_and_unpredictable() {
    let w = World::new();
    let tmp = w.tmp();
    w.script(
        "t.rhai",
        r#"
fn mode(p) {
    let s = run_host(["stat", "-c", "%a", p]).stdout;
    s.trim();
    s
}
let vm = machine((), #{ monitor_address: "qmp.sock" });
vm.add_args("-M", "none");
vm.set_console();
vm.launch();
let other = machine();
other.add_args("-M", "none");
other.launch();
let q = qtest_machine((), #{ args: ["-M", "none"] });
q.launch();
for dir in [temp_dir(), vm.temp_dir, vm.sock_dir, other.temp_dir, q.temp_dir, q.sock_dir] {
    assert_eq(mode(dir), "700", dir);
    print(`dir ${dir}`);
}
assert_ne(vm.temp_dir, other.temp_dir);
// The artifacts folder vmscript made for this test (checked below).
print(`logs ${vm.log_dir}`);
// Socket files live only inside those folders.
let socks = run_host(["find", temp_dir(), "-type", "s"]).stdout;
print(`sockets ${socks}`);
for s in socks.split("\n") {
    if s != "" {
        assert(s.starts_with(vm.sock_dir) || s.starts_with(q.sock_dir), s);
    }
}
"#,
    );
    let o = w.run(&["run", "--no-capture", "--keep-artifacts", "t.rhai"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let dirs: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("dir ")).collect();
    assert_eq!(dirs.len(), 6, "{out}");
    // The logs are in a private folder below $TMPDIR.
    let logs = Path::new(line_with(&out, "logs ").strip_prefix("logs ").unwrap());
    assert!(logs.starts_with(&tmp), "{}", logs.display());
    assert!(
        logs.ancestors()
            .take_while(|a| *a != tmp)
            .any(|a| std::fs::metadata(a).unwrap().permissions().mode() & 0o077 == 0),
        "no folder between $TMPDIR and {} is private",
        logs.display()
    );
    for d in &dirs {
        let p = Path::new(d);
        assert!(p.starts_with(&tmp), "{d} is not below $TMPDIR");
        // tempfile's names end in 6 random characters.
        let name = p
            .components()
            .skip(tmp.components().count())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        for part in name {
            let (_, random) = part.rsplit_once('-').unwrap();
            assert!(random.len() >= 6, "{d}: {part} has no random part");
        }
    }
    // A second run gets other folders.
    let again = stdout(&w.run(&["run", "--no-capture", "t.rhai"]));
    for d in &dirs {
        assert!(!again.contains(&format!("dir {d}\n")), "{d} came again");
    }
    w.assert_clean();
}

#[test]
fn a_script_cannot_forge_a_skip_by_throwing_its_kind() {
    let w = World::new();
    w.script(
        "t/forged.rhai",
        "throw #{kind: \"Skipped\", message: \"not really\"};\n",
    );
    w.script(
        "t/rethrown.rhai",
        "fn f() { throw #{kind: \"Skipped\", message: \"deep\"}; }\ntry { f(); } catch (e) { throw e; }\n",
    );
    w.script(
        "t/skip_in_try.rhai",
        "try { skip(\"caught?\"); } catch (e) { }\nfail(\"skip was caught\");\n",
    );
    w.script("t/real.rhai", "skip(\"a real skip\");\n");
    let o = w.run(&["run", "t"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(
        line_with(&out, "t/forged.rhai:1:").contains("ScriptError"),
        "{out}"
    );
    assert!(
        line_with(&out, "t/rethrown.rhai:2:").contains("ScriptError"),
        "{out}"
    );
    // skip() inside try is not caught; it skips the test.
    assert!(out.contains("SKIP t/skip_in_try.rhai: caught?"), "{out}");
    assert!(out.contains("SKIP t/real.rhai: a real skip"), "{out}");
    assert!(out.contains("0 passed, 2 failed, 2 skipped"), "{out}");
}
