//! Interactive front ends: `vmscript repl` (Rhai with the whole script API,
//! line by line) and `vmscript qmp` ([`qmp_shell`], a QMP shell for a QEMU
//! someone else started).
//!
//! This module is the REPL's terminal side: the line editor (history,
//! multi-line input, Tab completion through [`complete`]), Ctrl-C, the
//! `:commands`, QMP events printed above the prompt, and a line saying a
//! machine is booting while an input waits on it. What an input
//! does is [`session::Session`]'s business; how results look is
//! [`show`]'s; what it shares with the QMP shell at the terminal (lines
//! above the prompt, history, the signal thread) is [`terminal`]'s.
//! Start at [`run`].
//!
//! Ctrl-C while an input runs interrupts it, not the machines: a signal
//! thread calls [`Cancel::interrupt`], which ends the waits in progress
//! (QMP, console, `sleep`) and stops the Rhai code, and keeps doing so
//! until the input has returned, since a wait may start just after an
//! interrupt. SIGTERM and SIGHUP kill the session's machines and exit.

pub mod attach;
pub mod complete;
pub mod input;
pub mod qmp_shell;
pub mod schema;
pub mod session;
pub mod show;
pub mod terminal;

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};
use rhai::Engine;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Editor};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::qmp;
use crate::script::{Cancel, Reason, Run, Scene};
use input::Command;
use session::{Session, SessionOptions};
use terminal::{save_history, AbovePrompt};

const PROMPT: &str = "vmscript> ";
const CONTINUATION: &str = "     ...> ";

/// Options of `vmscript repl`.
#[derive(Debug, Clone, Default)]
pub struct ReplOptions {
    pub session: SessionOptions,
    /// The history file; none when `None`.
    pub history: Option<PathBuf>,
}

/// Where an interactive command keeps its history `name`:
/// `$XDG_STATE_HOME/vmscript/`, else `~/.local/state/vmscript/`.
pub fn history_path(name: &str) -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("vmscript").join(name))
}

/// The line editor's helper: completion, multi-line input.
struct Helper {
    session: Rc<RefCell<Session>>,
    /// Checks whether input is finished; needs no functions.
    syntax: Engine,
    files: FilenameCompleter,
    /// Whether the line being edited is empty (for Ctrl-C's message).
    empty: Cell<bool>,
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, what) = complete::context(&line[..pos]);
        if what == complete::Context::File {
            let (start, files) = self.files.complete(line, pos, ctx)?;
            return Ok((start, complete::bounded(files, complete::LIST_LIMIT)));
        }
        let Ok(session) = self.session.try_borrow() else {
            return Ok((pos, Vec::new()));
        };
        let all = complete::candidates(&what, &*session);
        Ok((start, complete::bounded(all, complete::LIST_LIMIT)))
    }
}

impl rustyline::hint::Hinter for Helper {
    type Hint = String;

    fn hint(&self, line: &str, _pos: usize, _ctx: &rustyline::Context<'_>) -> Option<String> {
        self.empty.set(line.is_empty());
        None
    }
}

impl rustyline::highlight::Highlighter for Helper {}

impl Validator for Helper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if input::is_incomplete(&self.syntax, ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl rustyline::Helper for Helper {}

/// Runs the REPL until Ctrl-D or `:quit`, then shuts down every machine
/// of the session. Errors are setup failures.
pub fn run(opts: ReplOptions) -> Result<(), String> {
    let own_artifacts = opts.session.artifacts.is_none();
    let session = Session::new(opts.session).map_err(|e| format!("starting the session: {e}"))?;
    // What a signal that ends the REPL removes: only what the session made.
    let mut cleanup = vec![session.run().temp_dir().to_path_buf()];
    if own_artifacts {
        cleanup.push(session.run().artifacts().to_path_buf());
    }
    println!(
        "vmscript repl: Rhai with the vmscript API. :help for help, Tab completes, Ctrl-D leaves."
    );
    interact(session, opts.history.as_deref(), cleanup, |session| {
        let running: Vec<String> = session
            .vms()
            .into_iter()
            .filter(|v| v.pid.is_some())
            .map(|v| v.name)
            .collect();
        if !running.is_empty() {
            println!("Shutting down {}", running.join(", "));
        }
        let report = session.finish();
        for p in report.problems {
            eprintln!("vmscript: {p}");
        }
    })
}

/// Reads and runs inputs on `session` until Ctrl-D or `:quit`, then calls
/// `at_end` (while a signal still ends the process cleanly). A signal that
/// ends the REPL removes the folders of `cleanup`.
fn interact(
    session: Session,
    history: Option<&std::path::Path>,
    cleanup: Vec<PathBuf>,
    at_end: impl FnOnce(&Session),
) -> Result<(), String> {
    let cancel = session.cancel();
    let session = Rc::new(RefCell::new(session));
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(10_000)
        .map_err(|e| e.to_string())?
        .history_ignore_dups(true)
        .map_err(|e| e.to_string())?
        .completion_type(CompletionType::List)
        // Lists are bounded (complete::bounded): never ask before one.
        .completion_prompt_limit(usize::MAX)
        // A paste arrives as typed keys, so a pasted line runs at its
        // newline, and pasted lines run one by one (an open block goes on
        // to the next), as at a shell; bracketed, it would wait for Enter.
        .bracketed_paste(false)
        .build();
    let mut editor: Editor<Helper, FileHistory> =
        Editor::with_config(config).map_err(|e| format!("starting the line editor: {e}"))?;
    editor.set_helper(Some(Helper {
        session: session.clone(),
        syntax: Engine::new_raw(),
        files: FilenameCompleter::new(),
        empty: Cell::new(true),
    }));
    if let Some(h) = history {
        let _ = editor.load_history(h);
    }

    let events_on = Arc::new(AtomicBool::new(true));
    let evaluating = Arc::new(AtomicBool::new(false));
    let events = start_event_printer(
        &mut editor,
        &session.borrow(),
        events_on.clone(),
        evaluating.clone(),
    );
    let signals = watch_signals(cancel.clone(), evaluating.clone(), cleanup)
        .map_err(|e| format!("installing the signal handler: {e}"))?;

    let mut ctx = Loop {
        session: &session,
        cancel: &cancel,
        evaluating: &evaluating,
        events_on: &events_on,
        events: &events,
    };
    loop {
        if let Some(h) = editor.helper() {
            h.empty.set(true);
        }
        let mut text = match editor.readline(PROMPT) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                if editor.helper().is_none_or(|h| h.empty.get()) {
                    println!("(To leave, press Ctrl-D or type :quit)");
                }
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("vmscript: reading input: {e}");
                break;
            }
        };
        // Without a terminal there is no validator: gather the lines here.
        let syntax = Engine::new_raw();
        while input::is_incomplete(&syntax, &text) {
            match editor.readline(CONTINUATION) {
                Ok(more) => {
                    text.push('\n');
                    text.push_str(&more);
                }
                Err(_) => break,
            }
        }
        if let Some(h) = history {
            save_history(editor.history_mut(), h);
        }
        match input::parse_command(&text) {
            Some(Ok(Command::Quit)) => break,
            Some(Ok(c)) => ctx.command(c),
            Some(Err(e)) => println!("{e}"),
            None if text.trim().is_empty() => {}
            None => ctx.eval(|s| s.eval(&text)),
        }
    }

    events_on.store(false, Ordering::SeqCst);
    at_end(&session.borrow());
    signals.close();
    Ok(())
}

/// Whether `--debug-on-fail` can open a REPL here: it needs a terminal
/// on stdin and stdout.
pub fn debug_available() -> Result<(), String> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return Ok(());
    }
    Err("--debug-on-fail opens a REPL when a test fails, which needs a terminal on stdin and stdout; run it from one (not in CI)".into())
}

/// The REPL in a failed test (`--debug-on-fail`): says what failed and
/// where, what the session holds (the test's variables, its machines and
/// their QEMU command lines), and runs until Ctrl-D or `:quit`. The test's
/// cleanup is the runner's, after this returns.
pub fn debug(scene: Scene) {
    let run = scene.run.clone();
    let what = if scene.timed_out {
        "timed out; its script was stopped"
    } else {
        "failed"
    };
    println!();
    println!(
        "DEBUG {}: the test {what}; its machines are kept running",
        scene.test
    );
    eprintln!("{}", scene.failure);
    let mut about = String::from(
        "This REPL is in the test's scope: its top-level variables, its functions and imports, the whole API.",
    );
    if scene.has_setup_value {
        about.push_str(&format!(
            "\nsetup()'s value is in `{}`.",
            crate::script::debug::SETUP_VALUE
        ));
    }
    println!("{about}");
    println!("{}", machines_banner(&run));
    println!(
        "temp dir: {}\nartifacts: {}",
        run.temp_dir().display(),
        run.artifacts().display()
    );
    println!(
        "vms() and :vms list the machines, :console NAME attaches to one, :help for more; \
         Ctrl-D or :quit ends debugging, cleans the test up and goes on with the run."
    );
    let session = Session::for_scene(scene);
    let cleanup = vec![run.temp_dir().to_path_buf()];
    let history = history_path("repl_history");
    if let Err(e) = interact(session, history.as_deref(), cleanup, |_| {}) {
        eprintln!("vmscript: debugging: {e}");
    }
    println!("[debugging over: cleaning up and going on]");
}

/// Each machine of `run` with its state and QEMU's whole command line.
fn machines_banner(run: &Run) -> String {
    let machines = run.machines();
    if machines.is_empty() {
        return "machines: none".into();
    }
    let mut out = String::from("machines:");
    for m in machines {
        let Ok(m) = m.try_lock() else {
            out.push_str("\n  (one is busy)");
            continue;
        };
        let state = match (m.get_pid(), m.exitcode()) {
            (Some(pid), _) if m.is_running() => format!("running, pid {pid}"),
            (_, Some(code)) => format!("exited ({code})"),
            _ => "not launched".into(),
        };
        out.push_str(&format!("\n  {} ({state})", m.name()));
        if m.is_running() {
            out.push_str(&format!("\n    {}", shell_words(m.full_args())));
        }
        if let Some(p) = m.second_qmp_path() {
            out.push_str(&format!(
                "\n    from another terminal: vmscript qmp {}",
                shell_words(&[p.display().to_string()])
            ));
        }
    }
    out
}

/// `args` as one shell command line, quoted where a shell would need it.
fn shell_words(args: &[String]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=+,./:@%^".contains(c);
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(plain) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the loop's commands need.
struct Loop<'a> {
    session: &'a Rc<RefCell<Session>>,
    cancel: &'a Cancel,
    evaluating: &'a Arc<AtomicBool>,
    events_on: &'a Arc<AtomicBool>,
    events: &'a mpsc::Sender<Printed>,
}

impl Loop<'_> {
    /// Runs `f` on the session as one interruptible evaluation and prints
    /// its result.
    fn eval(
        &mut self,
        f: impl FnOnce(&mut Session) -> Result<rhai::Dynamic, Box<crate::script::Failure>>,
    ) {
        self.cancel.clear_interrupt();
        self.evaluating.store(true, Ordering::SeqCst);
        let result = f(&mut self.session.borrow_mut());
        self.evaluating.store(false, Ordering::SeqCst);
        self.session.borrow().prefetch_schemas();
        self.cancel.clear_interrupt();
        // The events that came before the result are shown before it.
        let (done, flushed) = mpsc::sync_channel(1);
        if self.events.send(Printed::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(Duration::from_secs(1));
        }
        match result {
            Ok(v) => {
                if let Some(text) = show::value(&v) {
                    println!("{text}");
                }
            }
            Err(f) => eprintln!("{}", show::failure(&f)),
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Help => println!("{}", help()),
            Command::Quit => {}
            Command::Vms => println!("{}", session::vms_table(&self.session.borrow().vms())),
            Command::Console(name) => {
                let found = self.session.borrow().console(&name);
                match found.and_then(|(name, console)| attach::attach(&console, &name)) {
                    Ok(_) => {}
                    Err(e) => eprintln!("{e}"),
                }
            }
            Command::Doc(name) => match self.session.borrow().doc(&name) {
                Some(d) => print!("{d}"),
                None => println!("no function or module {name} (Tab after :doc lists them)"),
            },
            Command::Load(path) => self.eval(|s| s.load(&path)),
            Command::Save(path) => match self.session.borrow().save(&path) {
                Ok(n) => println!("wrote {n} inputs to {}", path.display()),
                Err(e) => eprintln!("HostError: writing {}: {e}", path.display()),
            },
            Command::Events(on) => {
                if let Some(on) = on {
                    self.events_on.store(on, Ordering::SeqCst);
                }
                let on = self.events_on.load(Ordering::SeqCst);
                println!("events are {}", if on { "shown" } else { "hidden" });
            }
        }
    }
}

fn help() -> String {
    let mut out = String::from(
        "Type Rhai statements; variables and functions stay for the next ones.\n\
         A statement left open (a block, a call, `let x =`) continues on the next line.\n\
         Results print as pretty JSON (maps, arrays) or text; errors as KIND: message.\n\n",
    );
    for (c, what) in input::COMMANDS {
        out.push_str(&format!("  {c:16} {what}\n"));
    }
    out.push_str(
        "\nKeys: Tab completes functions, methods, variables, module functions (guest::),\n\
         QMP commands in qmp(\"…\") and command(\"…\") with their argument keys and\n\
         values, and events in event_wait(\"…\"); Ctrl-R searches the history;\n\
         Ctrl-C interrupts a running wait (the machines keep running); Ctrl-D leaves.\n\
         vms() returns the session's machines; under :console, keys go to the guest\n\
         and Ctrl-] comes back. Every machine is shut down when the session ends\n\
         (in `vmscript run --debug-on-fail`, the failed test is cleaned up and the\n\
         run goes on). The bundled modules (guest, retry, …) need no import.\n\
         `vmscript doc` lists the API.",
    );
    out
}

/// How long an input may wait on a machine it started before the REPL
/// says that it is booting.
const BOOTING_AFTER: Duration = Duration::from_secs(1);

/// What the event printer thread is handed.
enum Printed {
    /// An event, as a line.
    Line(String),
    /// Machine `name` has started (its QMP greeting came).
    Started(String),
    /// Answer once everything sent before is printed.
    Flush(mpsc::SyncSender<()>),
}

/// Shows each machine's QMP events above the prompt while `on`, and that
/// a machine is booting when the input that started it keeps waiting
/// (`guest::boot()`); returns the printer thread's queue.
fn start_event_printer(
    editor: &mut Editor<Helper, FileHistory>,
    session: &Session,
    on: Arc<AtomicBool>,
    evaluating: Arc<AtomicBool>,
) -> mpsc::Sender<Printed> {
    let (tx, rx) = mpsc::channel::<Printed>();
    let queue = tx.clone();
    session.run().observe_machines(move |name| {
        let tx = tx.clone();
        let on = on.clone();
        let name = name.to_string();
        Arc::new(move |dir: qmp::Direction, bytes: &[u8]| {
            if dir != qmp::Direction::Received {
                return;
            }
            let Ok(msg) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                return;
            };
            if msg.get("QMP").is_some() {
                let _ = tx.send(Printed::Started(name.clone()));
                return;
            }
            if !on.load(Ordering::Relaxed) {
                return;
            }
            if let Some(line) = show::event(&name, &msg) {
                let _ = tx.send(Printed::Line(line));
            }
        }) as qmp::Observer
    });
    // The threads reading QMP must never block on the terminal: they hand the
    // lines to this thread.
    let mut printer = AbovePrompt::new(editor);
    let _ = std::thread::Builder::new()
        .name("repl-events".into())
        .spawn(move || {
            let mut print = |line: String| printer.print(line);
            // Machines started by the input running, and since when.
            let mut starting: Vec<(String, std::time::Instant)> = Vec::new();
            loop {
                let msg = match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                match msg {
                    Some(Printed::Line(line)) => print(line),
                    Some(Printed::Started(name)) => {
                        starting.push((name, std::time::Instant::now()));
                    }
                    Some(Printed::Flush(done)) => {
                        let _ = done.send(());
                    }
                    None => {}
                }
                if !evaluating.load(Ordering::SeqCst) {
                    starting.clear();
                    continue;
                }
                starting.retain(|(name, since)| {
                    if since.elapsed() < BOOTING_AFTER {
                        return true;
                    }
                    print(format!(
                        "[{name}] booting… (the input waits on it; Ctrl-C stops waiting)"
                    ));
                    false
                });
            }
        });
    queue
}

/// The terminal settings at start, put back when a signal ends the REPL
/// while the line editor has the terminal in raw mode.
fn saved_terminal() -> Option<Termios> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    termios::tcgetattr(stdin).ok()
}

/// Receives SIGINT, SIGTERM and SIGHUP; see the module documentation.
fn watch_signals(
    cancel: Cancel,
    evaluating: Arc<AtomicBool>,
    cleanup: Vec<PathBuf>,
) -> std::io::Result<signal_hook::iterator::Handle> {
    let terminal = saved_terminal();
    terminal::watch_signals(
        &[SIGINT, SIGTERM, SIGHUP],
        "repl-signals",
        move |mut signals| {
            let mut interrupting = false;
            loop {
                let batch: Vec<i32> = if interrupting {
                    std::thread::sleep(Duration::from_millis(50));
                    signals.pending().collect()
                } else {
                    signals.wait().collect()
                };
                if signals.is_closed() {
                    break;
                }
                for sig in batch {
                    if sig == SIGINT {
                        if evaluating.load(Ordering::SeqCst) {
                            cancel.interrupt();
                        }
                        continue;
                    }
                    cancel.cancel(Reason::Signal(sig));
                    if let Some(t) = &terminal {
                        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
                    }
                    for dir in &cleanup {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    eprintln!("\nvmscript: received signal {sig}; the machines were killed");
                    std::process::exit(128 + sig);
                }
                interrupting = evaluating.load(Ordering::SeqCst) && cancel.is_interrupted();
                if interrupting {
                    cancel.interrupt();
                }
            }
        },
    )
}
