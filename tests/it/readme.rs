//! The README's walk-through, as a newcomer types it: its scripts are
//! taken from README.md itself, run, and their output compared with what
//! the README shows.

use crate::common::world::{stdout, World};

/// The README.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The first ```LANG block after `marker` in the README.
fn block_after(text: &str, marker: &str, lang: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} is not in the README"));
    let open = format!("```{lang}\n");
    let rest = &text[at..];
    let start = rest.find(&open).unwrap() + open.len();
    rest[start..][..rest[start..].find("```").unwrap()].to_string()
}

/// The lines of the README's console block that starts with `$ COMMAND`.
fn shown_output(text: &str, command: &str) -> Vec<String> {
    let at = text
        .find(&format!("$ {command}\n"))
        .unwrap_or_else(|| panic!("$ {command} is not in the README"));
    text[at..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("```") && !l.starts_with("$ "))
        .map(String::from)
        .collect()
}

#[test]
fn the_first_suite_of_the_readme_runs_as_it_shows() {
    let text = readme();
    let w = World::new();
    let first = text
        .split("```rhai\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    w.script("first.rhai", first);
    let o = w.run(&["run", "first.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("PASS first.rhai ("),
        "{}",
        stdout(&o)
    );

    for file in [
        "mysuite/lib/bare.rhai",
        "mysuite/pause.rhai",
        "mysuite/uname.rhai",
    ] {
        w.script(file, &block_after(&text, &format!("`{file}`"), "rhai"));
    }
    // The module's documentation.
    let o = w.run(&["doc", "--lib", "mysuite/lib", "bare"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("\nbare::start()\n    Launches a machine with no guest"),
        "{}",
        stdout(&o)
    );

    // A failure, as shown: the position, both sides, the test's log.
    let guest = crate::common::guest_dir();
    let o = w
        .command(&["run", "mysuite", "--", "os=FreeBSD"])
        .env("VMSCRIPT_GUEST", &guest)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let shown = shown_output(&text, "vmscript run mysuite -- os=FreeBSD");
    for line in &shown[..4] {
        let line = line.split(" (").next().unwrap();
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    assert!(out.contains("] uname -s says Linux\n"), "{out}");
    assert!(out.ends_with("1 passed, 1 failed, 0 skipped\n"), "{out}");

    // The artifacts of a passing test, kept.
    let o = w.run(&["run", "--artifacts", "out", "mysuite/pause.rhai"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let log = std::fs::read_to_string(w.path().join("out/mysuite_pause/script.log")).unwrap();
    let shown = shown_output(&text, "cat out/mysuite_pause/script.log");
    assert!(log.contains(&shown[1..].join("\n")), "{log}");

    // check: a missing `)` in pause.rhai's fifth line.
    let pause = std::fs::read_to_string(w.path().join("mysuite/pause.rhai")).unwrap();
    let broken: Vec<String> = pause
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 4 {
                l.replacen("\")", "\"", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    w.script("mysuite/pause.rhai", &(broken.join("\n") + "\n"));
    let o = w.run(&["check", "mysuite"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        shown_output(&text, "vmscript check mysuite")
    );
    w.script("t.rhai", &block_after(&text, "`t.rhai`:", "rhai"));
    let o = w.run(&["check", "t.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        shown_output(&text, "vmscript check t.rhai")
    );
}

#[test]
fn the_writing_tests_example_and_its_vmscript_toml_run() {
    let text = readme();
    let w = World::new();
    let section = &text[text.find("## Writing tests").unwrap()..];
    w.script("suite/cases.rhai", &block_after(section, "", "rhai"));
    w.script("suite/vmscript.toml", &block_after(section, "", "toml"));
    let o = w.run(&["run", "suite"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("PASS suite/cases.rhai::test_status ("),
        "{out}"
    );
    assert!(
        out.contains("SKIP suite/cases.rhai::test_not_yet: needs a newer QEMU\n"),
        "{out}"
    );
    let o = w.run(&["list", "suite"]);
    assert_eq!(
        stdout(&o),
        "suite/cases.rhai::test_not_yet\nsuite/cases.rhai::test_status\n"
    );
}

#[test]
fn the_docs_name_no_file_outside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![("README.md".to_string(), readme())];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            texts.push((name, std::fs::read_to_string(&p).unwrap()));
        }
    }
    let w = World::new();
    for args in [&["doc"][..], &["--help"], &["run", "--help"]] {
        let o = w.run(args);
        assert!(o.status.success(), "{args:?}");
        texts.push((format!("vmscript {}", args.join(" ")), stdout(&o)));
    }
    let link = regex::Regex::new(r"\]\(([^)#]+)(?:#[^)]*)?\)").unwrap();
    for (name, text) in &texts {
        for outside in ["API.md", "STYLE.md", "../shared"] {
            assert!(!text.contains(outside), "{name} mentions {outside}");
        }
        for c in link.captures_iter(text) {
            let target = &c[1];
            if target.contains("://") {
                continue;
            }
            let base = if name.starts_with("docs/") {
                root.join("docs")
            } else {
                root.to_path_buf()
            };
            assert!(
                base.join(target).exists(),
                "{name} links to {target}, which is not there"
            );
        }
    }
}
