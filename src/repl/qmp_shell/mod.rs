//! `vmscript qmp ADDRESS`: an interactive QMP shell for a QEMU that
//! someone else started, in the spirit of QEMU's `qmp-shell`.
//!
//! A line is `command-name key=value …` (values are JSON where they parse
//! as JSON, strings otherwise; `a.b=1` nests), or raw JSON sent as is.
//! With `-H` lines are HMP commands sent through `human-monitor-command`.
//! Command and argument names complete from `query-qmp-schema`; events
//! are printed above the prompt as they arrive. Start at [`run`]; what a
//! line means is in `line.rs`, completion in `complete.rs`.

mod complete;
mod line;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::schema::Schema;
use super::terminal::{self, save_history, AbovePrompt};
use crate::qmp::{self, Address, Client};
use complete::ShellHelper;
pub use complete::{complete_line, HmpCommands};
use line::hmp_message;
pub use line::{parse_line, parse_value, step, Line};

/// Options of `vmscript qmp`.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    pub address: Address,
    pub hmp: bool,
    pub history: Option<std::path::PathBuf>,
    pub timeout: Duration,
    /// Where to write every message sent and every reply, one JSON per line.
    pub log: Option<std::path::PathBuf>,
    /// Send no `qmp_capabilities` and wait for no greeting (qemu-ga).
    pub no_negotiation: bool,
}

/// How a shell session ended.
#[derive(Debug)]
pub enum Ended {
    /// End of input, or the peer hung up after `quit`.
    Normally,
    /// The connection broke: the peer hung up or sent what is not QMP.
    Lost(qmp::Error),
}

/// Runs the shell until end of input. Errors are setup failures.
pub fn run(opts: &ShellOptions) -> Result<Ended, ShellError> {
    let mut log = match &opts.log {
        Some(path) => Some(SessionLog::create(path)?),
        None => None,
    };
    let client = if opts.no_negotiation {
        Client::without_greeting(Client::dial(&opts.address, opts.timeout)?)?
    } else {
        let mut c = Client::connect(&opts.address, opts.timeout)?;
        c.negotiate(opts.timeout)?;
        c
    };
    let greeting = client.greeting();
    let version = greeting
        .pointer("/QMP/version/qemu")
        .map(|v| format!("{}.{}.{}", v["major"], v["minor"], v["micro"]))
        .unwrap_or_else(|| "?".into());
    let (schema, hmp) = if opts.hmp {
        (
            Schema::default(),
            Some(HmpCommands::load(&client, opts.timeout)),
        )
    } else {
        (Schema::load(&client, opts.timeout), None)
    };
    let count = hmp
        .as_ref()
        .map_or(schema.commands.len(), |h| h.commands.len());
    if opts.no_negotiation {
        println!(
            "Connected to {} without negotiation. {count} commands known; Tab completes, Ctrl-C interrupts, Ctrl-D leaves.",
            opts.address
        );
    } else {
        println!(
            "Connected to QEMU {version} at {}. {count} {}commands; Tab completes, Ctrl-C interrupts, Ctrl-D leaves.",
            opts.address,
            if opts.hmp { "HMP " } else { "" },
        );
    }
    let client = Arc::new(client);
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .completion_type(rustyline::CompletionType::List)
        .completion_prompt_limit(usize::MAX)
        // Pasted commands run one per line, as typed.
        .bracketed_paste(false)
        .build();
    let mut editor: rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::with_config(config).map_err(|e| qmp::Error::Io {
            what: "starting the line editor".into(),
            message: e.to_string(),
        })?;
    editor.set_helper(Some(ShellHelper { schema, hmp }));
    if let Some(h) = &opts.history {
        let _ = editor.load_history(h);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let events = spawn_event_printer(&mut editor, client.clone(), stop.clone());
    let executing = Arc::new(AtomicBool::new(false));
    let signals = watch_interrupts(client.interrupter(), executing.clone())?;
    let mut transaction: Option<Vec<Value>> = None;
    let mut quit_sent = false;
    let ended = loop {
        let prompt = match (opts.hmp, &transaction) {
            (true, _) => "(HMP) ",
            (false, Some(_)) => "TRANS> ",
            (false, None) => "(QEMU) ",
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if let Some(h) = &opts.history {
                    save_history(editor.history_mut(), h);
                }
                let message = if opts.hmp {
                    hmp_message(&line)
                } else {
                    step(&mut transaction, &line)
                };
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => {
                        println!("error: {e}");
                        continue;
                    }
                };
                quit_sent |= message.get("execute").and_then(Value::as_str) == Some("quit");
                executing.store(true, Ordering::SeqCst);
                let result = send(&client, &message, opts.timeout, log.as_mut());
                executing.store(false, Ordering::SeqCst);
                match result {
                    Ok(reply) => show_reply(&reply, opts.hmp),
                    Err(e) => println!("error: {e}"),
                }
                if let Some(e) = client.ended() {
                    break lost(e, quit_sent);
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {
                if transaction.take().is_some() {
                    println!("(transaction abandoned)");
                } else {
                    println!("(Ctrl-D leaves)");
                }
            }
            Err(_) => {
                break client
                    .ended()
                    .map_or(Ended::Normally, |e| lost(e, quit_sent))
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    signals.close();
    drop(events);
    Ok(ended)
}

/// How a connection that ended ends the session: normally after `quit`.
fn lost(e: qmp::Error, quit_sent: bool) -> Ended {
    match e {
        qmp::Error::Closed { .. } if quit_sent => Ended::Normally,
        e => Ended::Lost(e),
    }
}

/// `-l FILE`: every message sent and every reply, one JSON per line.
struct SessionLog {
    file: std::fs::File,
    path: std::path::PathBuf,
    /// Set once writing failed (said once, then the log stops).
    failed: bool,
}

impl SessionLog {
    fn create(path: &std::path::Path) -> Result<SessionLog, ShellError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ShellError::Log {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(SessionLog {
            file,
            path: path.to_path_buf(),
            failed: false,
        })
    }

    fn write(&mut self, message: &Value) {
        use std::io::Write;
        if self.failed {
            return;
        }
        let line = format!("{message}\n");
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            self.failed = true;
            eprintln!(
                "vmscript: writing {}: {e}; the log stops",
                self.path.display()
            );
        }
    }
}

/// Ctrl-C while a command runs interrupts the wait for its reply (the
/// reply is dropped when it comes); at the prompt the line editor sees it.
fn watch_interrupts(
    interrupter: qmp::Interrupter,
    executing: Arc<AtomicBool>,
) -> Result<signal_hook::iterator::Handle, qmp::Error> {
    let io = |e: std::io::Error| qmp::Error::Io {
        what: "installing the Ctrl-C handler".into(),
        message: e.to_string(),
    };
    terminal::watch_signals(
        &[signal_hook::consts::SIGINT],
        "qmp-shell-signals",
        move |mut signals| {
            for _ in signals.forever() {
                if executing.load(Ordering::SeqCst) {
                    interrupter.interrupt();
                }
            }
        },
    )
    .map_err(io)
}

/// What one line can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Qmp(#[from] qmp::Error),
    #[error("opening the log {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Sends one message and returns its reply, both logged.
fn send(
    client: &Client,
    message: &Value,
    timeout: Duration,
    mut log: Option<&mut SessionLog>,
) -> Result<Value, ShellError> {
    if let Some(l) = log.as_deref_mut() {
        l.write(message);
    }
    let what = message
        .get("execute")
        .and_then(Value::as_str)
        .unwrap_or("the message")
        .to_string();
    let bytes = serde_json::to_vec(message).expect("a Value always serializes");
    let reply = client.execute_raw(&bytes, &what, timeout)?;
    if let Some(l) = log {
        l.write(&reply);
    }
    if let Some(err) = reply.get("error") {
        return Err(qmp::response_error(&reply, err).into());
    }
    Ok(reply)
}

fn show_reply(reply: &Value, hmp: bool) {
    if hmp {
        print!(
            "{}",
            reply
                .get("return")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
    } else {
        println!("{}", pretty(reply));
    }
}

/// An event on one line: `event STOP {"data"…}`.
fn event_line(ev: &Value) -> String {
    let name = ev.get("event").and_then(Value::as_str).unwrap_or("?");
    match ev.get("data") {
        Some(d) if d.as_object().is_some_and(|m| !m.is_empty()) => format!("event {name} {d}"),
        _ => format!("event {name}"),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("a Value always serializes")
}

/// Prints events above the prompt as they arrive.
fn spawn_event_printer(
    editor: &mut rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory>,
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    // Without a terminal the shell's output is its replies alone.
    let mut printer = AbovePrompt::new(editor);
    if !printer.is_live() {
        return None;
    }
    std::thread::Builder::new()
        .name("qmp-shell-events".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match client.take_event(Duration::from_millis(500), |_| true) {
                    Ok(Some(ev)) => {
                        printer.print(event_line(&ev));
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        })
        .ok()
}

#[cfg(test)]
mod tests;
