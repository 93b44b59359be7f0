//! What `vmscript run` (and `doc`, `check`, `repl`) writes, and where,
//! when the world is unkind: stdout that cannot be written, an unwritable
//! `--junit` path, two runs sharing an `--artifacts` folder, a run killed
//! with SIGKILL, test output and file names holding terminal control
//! sequences or newlines; and colours, on a terminal only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::{signal, stderr, stdout, World};

/// A stdout that cannot be written: `/dev/full` (ENOSPC), or a pipe whose
/// reader has gone (EPIPE).
fn broken_stdouts() -> Vec<(&'static str, Stdio)> {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    vec![
        ("/dev/full", Stdio::from(full)),
        ("a closed pipe", Stdio::from(writer)),
    ]
}

fn assert_clear_stdout_error(what: &str, o: &Output) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        err.contains("vmscript: error: writing") && err.contains("stdout"),
        "{what}: {err}"
    );
}

#[test]
fn doc_check_repl_and_run_fail_clearly_when_stdout_cannot_be_written() {
    let w = World::new();
    w.script("t.rhai", "print(\"hello\");\n");
    let cases: [(&str, &[&str]); 4] = [
        ("doc", &["doc"]),
        ("check", &["check", "t.rhai"]),
        ("repl", &["repl"]),
        ("run", &["run", "t.rhai"]),
    ];
    for (name, args) in cases {
        for (how, out) in broken_stdouts() {
            let mut c = w.command(args);
            c.stdout(out).stderr(Stdio::piped());
            let o = if name == "repl" {
                use std::io::Write;
                let mut child = c.stdin(Stdio::piped()).spawn().unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let _ = stdin.write_all(b"1 + 1\nprint(\"x\");\n");
                drop(stdin);
                child.wait_with_output().unwrap()
            } else {
                c.output().unwrap()
            };
            assert_clear_stdout_error(&format!("{name} with {how}"), &o);
        }
    }
    w.assert_clean();
}

#[test]
fn an_unwritable_junit_path_stops_the_run_before_any_test() {
    let w = World::new();
    w.script("t.rhai", "sleep(30);\nthrow \"never reached\";\n");
    for junit in ["no/such/folder/junit.xml", "."] {
        let started = Instant::now();
        let o = w.run(&["run", "t.rhai", "--junit", junit]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("vmscript: error: --junit {junit}: ")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "the test ran");
        assert!(!stdout(&o).contains("t.rhai"), "{}", stdout(&o));
    }
    // A writable one is written, after the run.
    std::fs::create_dir(w.path().join("out")).unwrap();
    w.script("t.rhai", "print(1);\n");
    let o = w.run(&["run", "t.rhai", "--junit", "out/j.xml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.path().join("out/j.xml").is_file());
}

/// Waits up to 20 s for `path` to exist.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_run_into_the_same_artifacts_folder_stops_and_loses_no_log() {
    let w = World::new();
    w.script("slow.rhai", "print(\"first run\");\nsleep(3);\n");
    let first = w.spawn(&["run", "slow.rhai", "--artifacts", "art"]);
    let log = w.path().join("art/slow/script.log");
    wait_for(&log);
    let o = w.run(&["run", "slow.rhai", "--artifacts", "art"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("art is in use by another vmscript run (pid "),
        "{err}"
    );
    assert!(!stdout(&o).contains("slow.rhai"), "{}", stdout(&o));
    let (code, out, err) = first.finish();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("first run"),
        "the first run's log was replaced"
    );
    // Once the first is done, the folder takes the next run.
    let o = w.run(&["run", "slow.rhai", "--artifacts", "art"]);
    assert!(o.status.success(), "{}", stderr(&o));
    w.assert_clean();
}

/// The `vmscript-artifacts-*` folders in `dir`.
fn artifact_roots(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmscript-artifacts-")
        })
        .collect()
}

#[test]
fn the_artifacts_of_a_killed_run_are_named_once_by_the_next_run() {
    let w = World::new();
    w.script("slow.rhai", "print(\"was running\");\nsleep(60);\n");
    w.script("quick.rhai", "print(1);\n");
    let mut run = w.spawn(&["run", "slow.rhai"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The log is created before the script runs: wait for its line, so
    // the kill lands while the test is sleeping.
    let root = loop {
        let roots = artifact_roots(&w.tmp());
        let printed = |r: &&PathBuf| {
            std::fs::read_to_string(r.join("slow/script.log"))
                .is_ok_and(|log| log.contains("was running"))
        };
        if let Some(r) = roots.iter().find(printed) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no artifacts folder");
        std::thread::sleep(Duration::from_millis(50));
    };
    signal(run.child.id() as i32, libc::SIGKILL);
    run.child.wait().unwrap();
    let o = w.run(&["run", "quick.rhai"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "vmscript: a run that was killed left the logs of its last tests in {}",
            root.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read_to_string(root.join("slow/script.log"))
        .unwrap()
        .contains("was running"));
    // Named once; and the passing run's own folder went.
    let o = w.run(&["run", "quick.rhai"]);
    assert!(!stderr(&o).contains("was killed"), "{}", stderr(&o));
    assert_eq!(artifact_roots(&w.tmp()), vec![root.clone()]);
    std::fs::remove_dir_all(&root).unwrap();
    w.assert_clean();
}

#[test]
fn a_newline_in_a_file_name_adds_no_tap_line() {
    let w = World::new();
    w.script("a\nok 2 - injected.rhai", "print(1);\n");
    let o = w.run(&["run", ".", "--format", "tap"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let points: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .collect();
    assert_eq!(points, vec!["ok 1 - a\\nok 2 - injected.rhai"], "{out}");
}

/// A failing test whose output, error and name hold control sequences.
fn hostile(w: &World) {
    w.script(
        "esc\x1b[2J.rhai",
        "print(\"clear\\x1b[2J\\x1b[H title\\x1b]0;owned\\x07 bell\\x07 cr\\rback\");\n\
         throw \"bad\\x1b[31m red \\x1b[1A up\";\n",
    );
}

#[test]
fn control_sequences_from_a_test_do_not_reach_the_terminal() {
    let w = World::new();
    hostile(&w);
    for colour in [false, true] {
        let mut c = w.command(&["run", "."]);
        if colour {
            c.env("CLICOLOR_FORCE", "1");
        }
        let o = c.output().unwrap();
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        for bad in ["\x1b[2J", "\x1b[H", "\x1b]", "\x07", "\r", "\x1b[1A"] {
            assert!(!out.contains(bad), "{bad:?} in {out:?}");
        }
        assert!(out.contains("clear title bell cr"), "{out:?}");
        assert!(out.contains("bad red  up"), "{out:?}");
        assert!(out.contains("esc.rhai:2:1: ScriptError"), "{out:?}");
    }
}

#[test]
fn colours_on_a_terminal_or_when_forced_and_never_when_piped_or_with_no_color() {
    let w = World::new();
    w.script("pass.rhai", "print(1);\n");
    w.script("fail.rhai", "throw \"boom\";\n");
    w.script("skip.rhai", "skip(\"not today\");\n");
    let green_pass = "\x1b[32mPASS\x1b[0m pass.rhai";
    let red_fail = "\x1b[1m\x1b[31mFAIL\x1b[0m fail.rhai";
    let yellow_skip = "\x1b[33mSKIP\x1b[0m skip.rhai";
    let run = |env: &[(&str, &str)]| {
        let mut c = w.command(&["run", "-j", "1", "."]);
        c.envs(env.iter().copied());
        stdout(&c.output().unwrap())
    };
    // Piped: plain text.
    let out = run(&[]);
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("PASS pass.rhai"), "{out:?}");
    // Forced.
    let out = run(&[("CLICOLOR_FORCE", "1")]);
    for s in [green_pass, red_fail, yellow_skip, "\x1b[31m    fail.rhai:"] {
        assert!(out.contains(s), "{s:?} not in {out:?}");
    }
    // NO_COLOR wins over CLICOLOR_FORCE.
    let out = run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!out.contains('\x1b'), "{out:?}");
    // A terminal, through script(1) from util-linux.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no script(1): skipping the terminal half");
        return;
    }
    let on_terminal = |env: &[(&str, &str)]| {
        let cmd = format!("{} run -j 1 .", crate::common::world::VMSCRIPT);
        let o = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .current_dir(w.path())
            .env("TMPDIR", w.tmp())
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        stdout(&o)
    };
    let screen = on_terminal(&[]);
    assert!(screen.contains(green_pass), "{screen:?}");
    assert!(screen.contains(red_fail), "{screen:?}");
    // The live line's counts too.
    assert!(screen.contains("\x1b[32m1 passed\x1b[0m"), "{screen:?}");
    for env in [("NO_COLOR", "1"), ("CLICOLOR", "0")] {
        let screen = on_terminal(&[env]);
        assert!(!screen.contains("\x1b[3"), "{env:?}: {screen:?}");
        assert!(screen.contains("PASS pass.rhai"), "{env:?}: {screen:?}");
    }
}
