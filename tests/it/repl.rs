//! `vmscript repl` and `vmscript qmp` in a real terminal: tmux runs them
//! in a pseudo-terminal, `send-keys` types, `capture-pane` reads the
//! screen, and the tests assert on what a person would see.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{pid_exists, QEMU};

/// How long the screen may take to show something (a debug build on a
/// busy machine).
const SHOW: Duration = Duration::from_secs(30);

/// A terminal of 160x50 on a tmux server of its own, killed when dropped.
pub(crate) struct Terminal {
    socket: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Terminal {
    /// Runs `argv` with `env` set under a shell that shows its exit status
    /// as `[exit N]` (catching Ctrl-C itself, so that only the program
    /// acts on it) and then keeps the pane open.
    pub(crate) fn start(argv: &[&str], env: &[(&str, &Path)]) -> Terminal {
        let socket = format!(
            "vmscript-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let t = Terminal { socket };
        let script = r#"trap : INT; "$@"; echo "[exit $?]"; exec sleep 3600"#;
        let mut args: Vec<String> = ["new-session", "-d", "-x", "160", "-y", "50", "env"]
            .map(String::from)
            .to_vec();
        args.extend(env.iter().map(|(k, v)| format!("{k}={}", v.display())));
        args.extend(["sh", "-c", script, "sh"].map(String::from));
        args.extend(argv.iter().map(|a| a.to_string()));
        t.tmux(&args);
        t
    }

    fn tmux<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` (no Enter) by pasting it, then waits until it shows.
    /// A bracketed paste, so that a newline in `text` is part of the line;
    /// [`Terminal::burst`] sends keys as typed.
    pub(crate) fn type_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let before = self.screen().trim_end().len();
        self.tmux(&["set-buffer", "-b", "typed", "--", text]);
        self.tmux(&["paste-buffer", "-p", "-d", "-b", "typed"]);
        let last = text.lines().last().unwrap_or("");
        let start = Instant::now();
        while !self.screen().trim_end().ends_with(last.trim_end())
            || self.screen().trim_end().len() <= before
        {
            assert!(
                start.elapsed() < SHOW,
                "{text:?} never showed:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Presses keys by tmux name: Enter, Tab, C-c, C-d.
    pub(crate) fn press(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    /// Types a line and presses Enter.
    pub(crate) fn line(&self, text: &str) {
        self.type_text(text);
        self.press("Enter");
    }

    /// The whole screen, scrollback included, with wrapped lines joined.
    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-"])
    }

    /// Waits until the screen shows `text` after the first `after` bytes;
    /// returns the screen from there.
    pub(crate) fn wait_for_after(&self, after: usize, text: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if let Some(rest) = s.get(after..).filter(|r| r.contains(text)) {
                return rest.to_string();
            }
            assert!(
                start.elapsed() < SHOW,
                "the screen never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `text`.
    pub(crate) fn wait_for(&self, text: &str) -> String {
        self.wait_for_after(0, text)
    }

    /// Types a line and waits for what it shows up to the next prompt.
    pub(crate) fn run(&self, text: &str, prompt: &str) -> String {
        let before = self.screen().trim_end().len();
        self.line(text);
        let out = self.wait_for_after(before, &format!("\n{prompt}"));
        let out = out.trim_end();
        out.strip_suffix(prompt.trim_end())
            .unwrap_or(out)
            .trim_end()
            .to_string()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

pub(crate) const PROMPT: &str = "vmscript> ";
const EXIT_OK: &str = "[exit 0]";

pub(crate) fn vmscript() -> &'static str {
    env!("CARGO_BIN_EXE_vmscript")
}

/// A REPL with its own history folder.
fn repl(state: &Path) -> Terminal {
    let t = Terminal::start(
        &[vmscript(), "repl", "--qemu", QEMU],
        &[("XDG_STATE_HOME", state)],
    );
    t.wait_for(PROMPT);
    t
}

fn wait_gone(pid: i32) {
    let start = Instant::now();
    while pid_exists(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "QEMU {pid} outlived the REPL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Enters `line`, presses Ctrl-C half a second later, and returns what
/// the REPL showed until its next prompt, which must come within 10 s.
fn ctrl_c_during(t: &Terminal, line: &str) -> String {
    let before = t.screen().trim_end().len();
    t.line(line);
    std::thread::sleep(Duration::from_millis(500));
    let pressed = Instant::now();
    t.press("C-c");
    let out = t.wait_for_after(before, &format!("\n{PROMPT}"));
    let took = pressed.elapsed();
    assert!(took < Duration::from_secs(10), "Ctrl-C took {took:?}");
    out
}

#[test]
fn repl_session_from_launch_to_quit() {
    let state = tempfile::tempdir().unwrap();
    let t = repl(state.path());
    t.run(
        r#"let vm = machine(#{args: ["-accel", "tcg", "-M", "none", "-nodefaults"]})"#,
        PROMPT,
    );
    assert_eq!(t.run("vm.launch()", PROMPT).lines().count(), 1);
    let pid: i32 = t
        .run("vm.get_pid()", PROMPT)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A QMP command and its reply, pretty-printed.
    let out = t.run(r#"vm.qmp("query-status")"#, PROMPT);
    assert!(
        out.contains("{\n  \"return\": {\n") && out.contains("    \"status\": \"running\""),
        "{out}"
    );

    // Tab completes a QMP command name from the live machine.
    let before = t.screen().trim_end().len();
    t.type_text(r#"vm.command("query-versi"#);
    t.press("Tab");
    t.wait_for_after(before, r#"vm.command("query-version""#);
    let out = t.run(").qemu.major", PROMPT);
    assert!(out.ends_with("\n7"), "{out}");

    // Events show as they arrive.
    let out = t.run(r#"vm.command("stop")"#, PROMPT);
    assert!(out.contains("[vm0] STOP"), "{out}");

    // ... unless hidden.
    t.run(":events off", PROMPT);
    let out = t.run(r#"vm.command("cont")"#, PROMPT);
    assert!(!out.contains("RESUME"), "{out}");
    t.run(":events on", PROMPT);
    t.run(r#"vm.command("stop")"#, PROMPT);

    // Ctrl-C ends a 60 s wait at once; the machine keeps running.
    let out = ctrl_c_during(&t, r#"vm.event_wait("NEVER", 60)"#);
    assert!(
        out.contains("Interrupted: interrupted while waiting for event NEVER"),
        "{out}"
    );
    assert!(t.run("vm.is_running()", PROMPT).ends_with("\ntrue"));
    let out = t.run(":vms", PROMPT);
    let row = out
        .lines()
        .find(|l| l.starts_with("vm0"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["vm0", &pid.to_string(), "paused"],
        "{out}"
    );
    assert!(pid_exists(pid));

    // An event that comes while the REPL sits at its prompt shows at once:
    // QEMU reports SIGTERM with SHUTDOWN, then exits.
    // From the start of the prompt's line: the event prints above it.
    let before = t.screen().trim_end().rfind('\n').unwrap();
    // SAFETY: a signal to the QEMU this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = t.wait_for_after(before, "[vm0] SHUTDOWN");
    assert!(out.contains("host-signal"), "{out}");
    wait_gone(pid);

    // Leaving shuts the machine down (here: finds it gone).
    t.line(":quit");
    t.wait_for(EXIT_OK);
    let history = std::fs::read_to_string(state.path().join("vmscript/repl_history")).unwrap();
    assert!(history.contains("vm.launch()"), "{history}");
}

#[test]
fn repl_lines_continue_errors_stay_one_line_and_save_writes_a_script() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = repl(state.path());

    // An open block continues on the next line; the function stays.
    t.line("fn twice(x) {");
    t.line("  x * 2");
    t.run("}", PROMPT);
    assert!(t.run("twice(21)", PROMPT).ends_with("\n42"));
    let out = t.run("#{b: [1, 2], a: \"text\"}", PROMPT);
    assert!(
        out.ends_with("{\n  \"a\": \"text\",\n  \"b\": [\n    1,\n    2\n  ]\n}"),
        "{out}"
    );
    assert!(t.run(r#""plain""#, PROMPT).ends_with("\nplain"));
    assert_eq!(t.run("let x = 1", PROMPT).lines().count(), 1);

    // An error is one line and the session goes on.
    let out = t.run(r#"assert_eq(twice(x), 3, "not three")"#, PROMPT);
    assert!(out.contains("\nAssertionFailed: not three\n"), "{out}");
    let out = t.run("undefined_thing", PROMPT);
    assert!(
        out.ends_with("\nScriptError: Variable not found: undefined_thing"),
        "{out}"
    );
    assert!(t.run("x + 1", PROMPT).ends_with("\n2"));

    // Ctrl-C at an empty prompt says how to leave.
    t.press("C-c");
    t.wait_for("(To leave, press Ctrl-D or type :quit)");

    // :doc, then :save writes what ran as a script that runs.
    let out = t.run(":doc event_wait", PROMPT);
    assert!(
        out.contains("event_wait(vm: Machine, name: String) -> Map"),
        "{out}"
    );
    let saved = dir.path().join("poked.rhai");
    let out = t.run(&format!(":save {}", saved.display()), PROMPT);
    assert!(out.contains("wrote 6 inputs"), "{out}");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("fn twice(x) {\n  x * 2\n}\ntwice(21);\n"),
        "{text}"
    );
    assert!(!text.contains("assert_eq") && !text.contains("undefined_thing"));
    let check = Command::new(vmscript())
        .args(["check", saved.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    t.press("C-d");
    t.wait_for(EXIT_OK);
}

/// A QEMU with a QMP server socket, as someone might start it by hand.
struct Qemu {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Qemu {
    fn start() -> Qemu {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let child = Command::new(QEMU)
            .args([
                "-accel",
                "tcg",
                "-M",
                "none",
                "-nodefaults",
                "-display",
                "none",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < SHOW, "QEMU made no QMP socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Qemu {
            child,
            socket,
            _dir: dir,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn qmp_shell_on_a_qemu_started_by_someone_else() {
    let state = tempfile::tempdir().unwrap();
    let mut qemu = Qemu::start();
    let socket = qemu.socket.to_str().unwrap().to_string();
    let prompt = "(QEMU) ";
    let t = Terminal::start(
        &[vmscript(), "qmp", &socket],
        &[("XDG_STATE_HOME", state.path())],
    );
    let out = t.wait_for(prompt);
    assert!(out.contains("Connected to QEMU 7."), "{out}");

    // Tab completes the command name, Enter shows the reply as JSON.
    t.type_text("query-stat");
    t.press("Tab");
    t.press("Tab");
    t.wait_for("query-stats-schemas");
    t.type_text("us");
    t.press("Tab");
    let before = t.screen().trim_end().len();
    t.press("Enter");
    let out = t.wait_for_after(before, &format!("\n{prompt}"));
    assert!(out.contains("\"status\": \"running\""), "{out}");

    // Argument names complete too; nested keys and JSON values parse.
    t.type_text("qom-list pa");
    t.press("Tab");
    t.wait_for("qom-list path=");
    let out = t.run("/machine", prompt);
    assert!(out.contains("\"name\": \"type\""), "{out}");

    // Enum values complete from the schema, for the variant chosen.
    t.type_text("blockdev-add driver=null-c");
    t.press("Tab");
    t.wait_for("blockdev-add driver=null-co");
    t.type_text(" node-name=n0 rea");
    t.press("Tab");
    t.wait_for("node-name=n0 read-");
    t.press("Tab");
    t.press("Tab");
    t.wait_for("read-zeroes=");
    let out = t.run("only=true", prompt);
    assert!(out.ends_with("{\n  \"return\": {}\n}"), "{out}");

    // An event shows as it arrives; an error reply is one line.
    let before = t.screen().trim_end().len();
    t.run("stop", prompt);
    t.wait_for_after(before, "\nevent STOP");
    let out = t.run("no-such-command", prompt);
    assert!(
        out.ends_with("\nerror: CommandNotFound: The command no-such-command has not been found"),
        "{out}"
    );

    t.press("C-d");
    t.wait_for(EXIT_OK);
    assert!(qemu.running(), "the shell must leave QEMU running");

    // -H: HMP commands through human-monitor-command.
    let t = Terminal::start(
        &[vmscript(), "qmp", "-H", &socket],
        &[("XDG_STATE_HOME", state.path())],
    );
    t.wait_for("(HMP) ");
    t.type_text("info statu");
    t.press("Tab");
    t.wait_for("info status");
    let out = t.run("", "(HMP) ");
    assert!(out.contains("VM status: paused"), "{out}");
    t.press("C-d");
    t.wait_for(EXIT_OK);
    assert!(qemu.running());
    let history = std::fs::read_to_string(state.path().join("vmscript/qmp_history")).unwrap();
    assert!(history.contains("query-status"), "{history}");
    let history = std::fs::read_to_string(state.path().join("vmscript/hmp_history")).unwrap();
    assert!(history.contains("info status"), "{history}");
}

impl Terminal {
    /// Sends `text` as keys in one write, as a terminal without bracketed
    /// paste delivers a pasted line (`\r` is Enter).
    pub(crate) fn burst(&self, text: &str) {
        self.tmux(&["send-keys", "-l", "--", text]);
    }

    /// The line the cursor is on.
    fn last_line(&self) -> String {
        self.screen()
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    }
}

/// A REPL with a running `-M none` machine in `vm`.
fn repl_with_machine(state: &Path) -> Terminal {
    let t = repl(state);
    t.run(
        r#"let vm = machine(#{args: ["-accel", "tcg", "-M", "none", "-nodefaults"]})"#,
        PROMPT,
    );
    t.run("vm.launch()", PROMPT);
    t
}

/// Clears the line being edited (Ctrl-U) and waits for a bare prompt.
fn clear_line(t: &Terminal) {
    t.press("C-e");
    t.press("C-u");
    let start = Instant::now();
    while t.last_line() != PROMPT.trim_end() {
        assert!(
            start.elapsed() < SHOW,
            "the line never cleared:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn repl_completes_modules_and_documents_them() {
    let state = tempfile::tempdir().unwrap();
    let t = repl(state.path());

    // A bundled module's functions, not the globals that share a prefix.
    t.type_text("guest::ru");
    t.press("Tab");
    t.wait_for("vmscript> guest::run");
    t.press("Tab");
    let list = t.wait_for("run_ok");
    assert!(!list.contains("run_host"), "{list}");
    clear_line(&t);

    // An imported module under its alias.
    // (A `;` ending a tmux argument would be taken by tmux.)
    t.run(r#"import "guest" as g"#, PROMPT);
    t.type_text("g::run_o");
    t.press("Tab");
    t.wait_for("vmscript> g::run_ok(");
    clear_line(&t);

    // :doc MODULE::f and :doc MODULE, as `vmscript doc MODULE` shows them.
    let out = t.run(":doc guest::run_ok", PROMPT);
    assert!(out.contains("\nguest::run_ok(vm, cmd)\n"), "{out}");
    let out = t.run(":doc guest", PROMPT);
    assert!(out.contains("module guest (<stdlib>/guest.rhai)"), "{out}");
    assert!(out.contains("\nguest::run_ok(vm, cmd)\n"), "{out}");
    let out = t.run(":doc g", PROMPT);
    assert!(out.contains("module guest (<stdlib>/guest.rhai)"), "{out}");
    let doc = Command::new(vmscript())
        .args(["doc", "guest"])
        .output()
        .unwrap();
    let first_fn = String::from_utf8_lossy(&doc.stdout)
        .lines()
        .find(|l| l.starts_with("guest::"))
        .unwrap()
        .to_string();
    assert!(out.contains(&first_fn), "{first_fn}\n{out}");

    t.press("C-d");
    t.wait_for(EXIT_OK);
}

#[test]
fn repl_qmp_keys_follow_the_union_variant_and_lists_are_bounded() {
    let state = tempfile::tempdir().unwrap();
    let t = repl_with_machine(state.path());

    // Enum values complete, quoted.
    t.type_text(r#"vm.command("blockdev-add", #{ driver: "null-c"#);
    t.press("Tab");
    t.wait_for(r#"#{ driver: "null-co""#);
    // The keys are the null-co variant's, not every driver's.
    t.type_text(", ");
    t.press("Tab");
    t.press("Tab");
    let list = t.wait_for("latency-ns");
    let list = &list[list.find(r#"driver: "null-co", "#).unwrap()..];
    assert!(list.contains("read-zeroes"), "{list}");
    assert!(!list.contains("filename"), "{list}");
    t.type_text("node_name: \"n0\", read_z");
    t.press("Tab");
    t.wait_for("read_zeroes: ");
    let out = t.run("true })", PROMPT);
    assert!(out.ends_with("{}"), "{out}");

    // A long list shows its head and how many more, and asks nothing:
    // the keys typed next go to the line.
    t.type_text(r#"vm.qmp("#);
    t.press("Tab");
    t.press("Tab");
    let list = t.wait_for(" more (type more to narrow)");
    assert!(!list.contains("Display all"), "{list}");
    t.type_text("query-statu");
    t.press("Tab");
    t.wait_for(r#"vmscript> vm.qmp("query-status""#);
    let out = t.run(")", PROMPT);
    assert!(out.contains("\"status\": \"running\""), "{out}");

    t.press("C-d");
    t.wait_for(EXIT_OK);
}

#[test]
fn repl_runs_pasted_lines_at_once() {
    let state = tempfile::tempdir().unwrap();
    let t = repl(state.path());
    t.run("let a = 1", PROMPT);
    // Keys and Enter in one write, as a paste without bracketed paste: the
    // whole line runs without another key.
    let before = t.screen().trim_end().len();
    t.burst("a + 41\r");
    let out = t.wait_for_after(before, &format!("\n{PROMPT}"));
    assert!(out.contains("a + 41\n42"), "{out}");
    // Two lines at once run one after the other.
    let before = t.screen().trim_end().len();
    t.burst("let b = a * 2\rb + 100\r");
    let out = t.wait_for_after(before, "\n102");
    assert!(out.contains("b + 100"), "{out}");
    // A paste from the terminal (tmux pastes bracketed when the program
    // asks for it): a line with its newline runs at once; a block spread
    // over lines runs when it is whole.
    let before = t.screen().trim_end().len();
    t.tmux(&[
        "set-buffer",
        "-b",
        "pasted",
        "--",
        "fn three() {\n  3\n}\nthree() + b\n",
    ]);
    t.tmux(&["paste-buffer", "-p", "-d", "-b", "pasted"]);
    let out = t.wait_for_after(before, "\n5\n");
    assert!(out.contains("three() + b"), "{out}");
    t.press("C-d");
    t.wait_for(EXIT_OK);
}

#[test]
fn repl_tab_on_a_stopped_qemu_does_not_freeze_the_prompt() {
    let state = tempfile::tempdir().unwrap();
    let t = repl(state.path());
    t.run(
        r#"let vm = machine(#{args: ["-accel", "tcg", "-M", "none", "-nodefaults"]})"#,
        PROMPT,
    );
    // Stopped before the REPL could ask it for its schema.
    let out = t.run(
        r#"vm.launch(); let pid = vm.get_pid(); run_host(["kill", "-STOP", `${pid}`]); pid"#,
        PROMPT,
    );
    let pid: i32 = out.lines().last().unwrap().trim().parse().unwrap();
    t.type_text(r#"vm.qmp("query-st"#);
    let pressed = Instant::now();
    t.press("Tab");
    clear_line(&t);
    let out = t.run("1 + 1", PROMPT);
    assert!(out.ends_with("\n2"), "{out}");
    let took = pressed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the prompt was held {took:?}"
    );
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Once QEMU answers, Tab completes from its schema.
    let start = Instant::now();
    loop {
        t.type_text(r#"vm.qmp("query-statu"#);
        t.press("Tab");
        std::thread::sleep(Duration::from_millis(500));
        if t.last_line().ends_with(r#"vm.qmp("query-status""#) {
            break;
        }
        assert!(start.elapsed() < SHOW, "never completed:\n{}", t.screen());
        clear_line(&t);
    }
    let out = t.run(")", PROMPT);
    assert!(out.contains("\"status\": \"running\""), "{out}");
    t.line(":quit");
    t.wait_for(EXIT_OK);
    wait_gone(pid);
}

#[test]
fn repl_says_a_machine_is_booting_and_ctrl_c_ends_a_guest_command() {
    let state = tempfile::tempdir().unwrap();
    let guest = crate::common::guest_dir();
    let t = Terminal::start(
        &[vmscript(), "repl", "--qemu", QEMU],
        &[
            ("XDG_STATE_HOME", state.path()),
            ("XDG_CACHE_HOME", state.path()),
            ("VMSCRIPT_GUEST", &guest),
        ],
    );
    t.wait_for(PROMPT);
    let before = t.screen().trim_end().len();
    t.line("let vm = guest::boot()");
    let booting = t.wait_for_after(before, "[vm0] booting…");
    assert!(!booting.contains(&format!("\n{PROMPT}")), "{booting}");
    t.wait_for_after(before, &format!("\n{PROMPT}"));
    let out = t.run(r#"guest::run_ok(vm, "echo up")"#, PROMPT);
    assert!(out.ends_with("\nup"), "{out}");

    // Ctrl-C ends a command on the agent's channel at once; the guest
    // finishes it, and the next command waits for that, then runs.
    let out = ctrl_c_during(&t, r#"guest::run(vm, "sleep 15; echo late", 60)"#);
    assert!(
        out.contains("Interrupted: interrupted while running `sleep 15; echo late` in the guest (it runs on there until its timeout, 60s)"),
        "{out}"
    );
    let out = t.run(r#"guest::run_ok(vm, "echo again")"#, PROMPT);
    assert!(out.ends_with("\nagain") && !out.contains("late"), "{out}");
    t.line(":quit");
    t.wait_for(EXIT_OK);
}

#[test]
fn qmp_shell_transactions_and_the_session_log() {
    let qemu = Qemu::start();
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("session.jsonl");
    let prompt = "(QEMU) ";
    let t = Terminal::start(
        &[
            vmscript(),
            "qmp",
            "-l",
            log.to_str().unwrap(),
            qemu.socket.to_str().unwrap(),
        ],
        &[("XDG_STATE_HOME", state.path())],
    );
    t.wait_for(prompt);
    // Every command name: the head of the list and how many more, no
    // question that would take the next keys.
    t.press("Tab");
    t.press("Tab");
    let list = t.wait_for(" more (type more to narrow)");
    assert!(!list.contains("Display all"), "{list}");
    t.run("blockdev-add driver=null-co node-name=n0", prompt);
    t.run("transaction(", "TRANS> ");
    t.run("block-dirty-bitmap-add node=n0 name=b0", "TRANS> ");
    t.run("block-dirty-bitmap-add node=n0 name=b1", "TRANS> ");
    let out = t.run(")", prompt);
    assert!(out.ends_with("{\n  \"return\": {}\n}"), "{out}");
    // Both bitmaps exist: removing them works, a third is unknown.
    t.run("block-dirty-bitmap-remove node=n0 name=b1", prompt);
    let out = t.run("block-dirty-bitmap-remove node=n0 name=b2", prompt);
    assert!(out.contains("error: GenericError"), "{out}");
    t.press("C-d");
    t.wait_for(EXIT_OK);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let transaction = lines
        .iter()
        .position(|m| m["execute"] == "transaction")
        .expect("the transaction is logged");
    assert_eq!(
        lines[transaction]["arguments"]["actions"][1],
        serde_json::json!({"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b1"}})
    );
    assert_eq!(lines[transaction + 1], serde_json::json!({"return": {}}));
    assert!(lines.last().unwrap()["error"]["class"] == "GenericError");
}

/// A QMP peer on a unix socket for protocol edge cases: sends `greeting`
/// (if any), then answers each message with what `answer` gives (or an
/// empty return). Its thread returns the messages it got.
struct FakePeer {
    socket: PathBuf,
    seen: Option<std::thread::JoinHandle<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
}

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;

impl FakePeer {
    fn start(
        greeting: Option<&'static str>,
        answer: impl Fn(&serde_json::Value) -> Option<String> + Send + 'static,
    ) -> FakePeer {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("peer.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let seen = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            if let Some(g) = greeting {
                write!(stream, "{g}\r\n").unwrap();
            }
            // Messages are JSON objects, with or without a newline after.
            let messages = serde_json::Deserializer::from_reader(stream.try_clone().unwrap())
                .into_iter::<serde_json::Value>();
            let mut seen = Vec::new();
            for msg in messages {
                let Ok(msg) = msg else { break };
                let reply = answer(&msg).unwrap_or_else(|| r#"{"return": {}}"#.into());
                // As QEMU and qemu-ga do, a reply carries its command's id.
                let reply = match (msg.get("id"), serde_json::from_str(&reply)) {
                    (Some(id), Ok(serde_json::Value::Object(mut r))) => {
                        r.insert("id".into(), id.clone());
                        serde_json::Value::Object(r).to_string()
                    }
                    _ => reply,
                };
                seen.push(msg);
                if write!(stream, "{reply}\r\n").is_err() {
                    break;
                }
            }
            seen
        });
        FakePeer {
            socket,
            seen: Some(seen),
            _dir: dir,
        }
    }

    /// Runs `vmscript qmp ARGS… SOCKET` with `input` on its stdin.
    fn shell(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(vmscript())
            .arg("qmp")
            .args(args)
            .arg(&self.socket)
            .env("XDG_STATE_HOME", self._dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn seen(mut self) -> Vec<serde_json::Value> {
        self.seen.take().unwrap().join().unwrap()
    }
}

fn executed(msg: &serde_json::Value) -> &str {
    msg["execute"].as_str().unwrap_or("")
}

#[test]
fn qmp_shell_survives_a_schema_whose_types_contain_themselves() {
    let peer = FakePeer::start(Some(GREETING), |m| {
        (executed(m) == "query-qmp-schema").then(|| {
            serde_json::json!({"return": [
                {"name": "loop-add", "meta-type": "command", "arg-type": "A"},
                {"name": "A", "meta-type": "object", "tag": "kind",
                 "members": [{"name": "kind", "type": "str"}, {"name": "next", "type": "B"}],
                 "variants": [{"case": "x", "type": "A"}, {"case": "y", "type": "B"}]},
                {"name": "B", "meta-type": "alternate", "members": [{"type": "B"}, {"type": "A"}]}
            ]})
            .to_string()
        })
    });
    let out = peer.shell(&[], "loop-add kind=x\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("Connected to QEMU 7.2.0"), "{stdout}");
    assert!(peer.seen().iter().any(|m| executed(m) == "loop-add"));
}

#[test]
fn qmp_shell_without_negotiation_talks_to_a_peer_without_greeting() {
    // As qemu-ga: no greeting, no qmp_capabilities.
    let peer = FakePeer::start(None, |m| match executed(m) {
        "guest-ping" => None,
        "guest-info" => Some(r#"{"return": {"version": "7.2.0"}}"#.into()),
        other => Some(format!(
            r#"{{"error": {{"class": "CommandNotFound", "desc": "The command {other} has not been found"}}}}"#
        )),
    });
    let out = peer.shell(&["-N"], "guest-ping\nguest-info\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("\"version\": \"7.2.0\""), "{stdout}");
    let seen = peer.seen();
    assert!(
        !seen.iter().any(|m| executed(m) == "qmp_capabilities"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| executed(m) == "guest-ping"));
}

#[test]
fn qmp_shell_reports_a_broken_connection_and_exits_non_zero() {
    let peer = FakePeer::start(Some(GREETING), |m| {
        (executed(m) == "query-status").then(|| r#"{"neither": "reply nor event"}"#.into())
    });
    let out = peer.shell(&[], "query-status\nquery-status\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("the connection is lost"), "{stderr}");
    assert!(
        stderr.contains("not a reply, event or greeting"),
        "{stderr}"
    );
}
