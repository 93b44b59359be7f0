//! `vmscript qmp ADDRESS`: an interactive QMP shell for a QEMU that
//! someone else started, in the spirit of QEMU's `qmp-shell`.
//!
//! A line is `command-name key=value …` (values are JSON where they parse
//! as JSON, strings otherwise; `a.b=1` nests), or raw JSON sent as is.
//! With `-H` lines are HMP commands sent through `human-monitor-command`.
//! Command and argument names complete from `query-qmp-schema`; events
//! are printed above the prompt as they arrive. Start at [`run`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use rustyline::completion::Pair;

use super::complete::{bounded, LIST_LIMIT};
use super::schema::Schema;
use super::terminal::{self, save_history, AbovePrompt};
use crate::qmp::{self, Address, Client};

/// One parsed input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Nothing to send.
    Empty,
    /// `name key=value …`.
    Command {
        name: String,
        args: Map<String, Value>,
    },
    /// A whole JSON message, sent as is.
    Raw(Value),
}

/// Parses a shell line.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        if !v.is_object() {
            return Err("a raw message must be a JSON object".into());
        }
        return Ok(Line::Raw(v));
    }
    let words = split_words(line)?;
    let (name, rest) = words
        .split_first()
        .expect("a non-empty line has a first word");
    let mut args = Map::new();
    for word in rest {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {word:?}"))?;
        if key.is_empty() {
            return Err(format!("empty key in {word:?}"));
        }
        insert_dotted(&mut args, key, parse_value(value))?;
    }
    Ok(Line::Command {
        name: name.clone(),
        args,
    })
}

/// JSON when it parses as JSON, else the text itself as a string.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(unquote(text)))
}

fn unquote(text: &str) -> String {
    for q in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    text.to_string()
}

/// `a.b.c` = v → `{"a": {"b": {"c": v}}}`, merged into `map`.
fn insert_dotted(map: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    match key.split_once('.') {
        None => {
            map.insert(key.to_string(), value);
            Ok(())
        }
        Some((head, rest)) => {
            let slot = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match slot {
                Value::Object(inner) => insert_dotted(inner, rest, value),
                _ => Err(format!("{head} is both a value and a map")),
            }
        }
    }
}

/// Splits on white space outside quotes, brackets and braces, so
/// `a={"x": 1} b='two words'` is two words.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            '{' | '[' => {
                depth += 1;
                cur.push(c);
            }
            '}' | ']' => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// Completions for the word ending at the end of `line`: a command name
/// first, then `arg=` names of that command (nested ones after a dot, those
/// of the union variant chosen), or the values of an enum or bool argument
/// after `=`.
pub fn complete_line(schema: &Schema, line: &str) -> (usize, Vec<String>) {
    let start = line.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &line[start..];
    if start == 0 {
        let c = schema
            .commands
            .keys()
            .filter(|c| c.starts_with(word))
            .cloned()
            .collect();
        return (0, c);
    }
    let cmd = line.split_whitespace().next().unwrap_or_default();
    let given = match parse_line(&line[..start]) {
        Ok(Line::Command { args, .. }) => args,
        _ => Map::new(),
    };
    if let Some((key, value)) = word.split_once('=') {
        let path: Vec<&str> = key.split('.').collect();
        let c = schema
            .values(cmd, &path, &given)
            .into_iter()
            .filter(|v| v.starts_with(value))
            .map(|v| format!("{key}={v}"))
            .collect();
        return (start, c);
    }
    let (parent, partial) = match word.rsplit_once('.') {
        Some((p, rest)) => (Some(p), rest),
        None => (None, word),
    };
    let path: Vec<&str> = parent.map(|p| p.split('.').collect()).unwrap_or_default();
    let prefix = parent.map(|p| format!("{p}.")).unwrap_or_default();
    let c = schema
        .keys(cmd, &path, &given)
        .into_iter()
        .filter(|n| n.starts_with(partial))
        .map(|n| format!("{prefix}{n}="))
        .collect();
    (start, c)
}

/// HMP command names from `help`, and `info` topics from `help info`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HmpCommands {
    pub commands: Vec<String>,
    pub info: Vec<String>,
}

impl HmpCommands {
    /// Asks the monitor; empty when it cannot.
    pub fn load(client: &Client, timeout: Duration) -> HmpCommands {
        let help = |line: &str| {
            let mut args = Map::new();
            args.insert("command-line".into(), Value::from(line));
            client
                .command("human-monitor-command", Some(&args), timeout)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        HmpCommands::from_help(&help("help"), &help("help info"))
    }

    /// Reads `help` output (`name args -- what`, one per line; `name|alias`).
    pub fn from_help(help: &str, info: &str) -> HmpCommands {
        let words = |text: &str, nth: usize| {
            let mut v: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_whitespace().nth(nth))
                .flat_map(|w| w.split('|').map(str::to_string).collect::<Vec<_>>())
                .filter(|w| {
                    w.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        HmpCommands {
            commands: words(help, 0),
            info: words(info, 1),
        }
    }

    /// Completions for the end of `line`: a command, or an `info` topic.
    pub fn complete(&self, line: &str) -> (usize, Vec<String>) {
        let start = line.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &line[start..];
        let earlier: Vec<&str> = line[..start].split_whitespace().collect();
        let names = match earlier.as_slice() {
            [] => &self.commands,
            ["info" | "i"] => &self.info,
            _ => return (start, Vec::new()),
        };
        let c = names
            .iter()
            .filter(|n| n.starts_with(word))
            .cloned()
            .collect();
        (start, c)
    }
}

struct ShellHelper {
    schema: Schema,
    hmp: Option<HmpCommands>,
}

impl rustyline::completion::Completer for ShellHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, names) = match &self.hmp {
            Some(h) => h.complete(&line[..pos]),
            None => complete_line(&self.schema, &line[..pos]),
        };
        let pairs = names
            .into_iter()
            .map(|n| Pair {
                display: n.clone(),
                replacement: n,
            })
            .collect();
        Ok((start, bounded(pairs, LIST_LIMIT)))
    }
}
impl rustyline::hint::Hinter for ShellHelper {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for ShellHelper {}
impl rustyline::validate::Validator for ShellHelper {}
impl rustyline::Helper for ShellHelper {}

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

/// The message a line of the shell sends, if any, in qmp-shell's
/// transaction syntax too: `transaction(` starts one, each following line
/// is an action (`type key=value …`), and `)` (alone, or ending the last
/// action) sends them as one `transaction` command.
pub fn step(transaction: &mut Option<Vec<Value>>, line: &str) -> Result<Option<Value>, String> {
    let starts = line.trim_start().starts_with("transaction(");
    if transaction.is_none() && !starts {
        return Ok(match parse_line(line)? {
            Line::Empty => None,
            Line::Command { name, args } => Some(execute_message(&name, args)),
            Line::Raw(v) => Some(v),
        });
    }
    let mut words = split_words(line.trim())?;
    if starts && transaction.is_none() {
        let first = words.remove(0);
        if first != "transaction(" {
            // `transaction(x=1`: the rest belongs to the first action.
            words.insert(0, first["transaction(".len()..].to_string());
        }
        *transaction = Some(Vec::new());
    }
    let Some(actions) = transaction.as_mut() else {
        unreachable!("a transaction was started above");
    };
    if words.first().is_some_and(|w| w.starts_with('#')) || words.is_empty() {
        return Ok(None);
    }
    if words[0] == ")" {
        if words.len() > 1 {
            return Err("unexpected input after the ) that ends the transaction".into());
        }
        let actions = transaction.take().unwrap_or_default();
        let mut args = Map::new();
        args.insert("actions".into(), Value::Array(actions));
        return Ok(Some(execute_message("transaction", args)));
    }
    let finish = words.last().is_some_and(|w| w == ")");
    if finish {
        words.pop();
    }
    let (kind, rest) = words.split_first().expect("an action has a first word");
    let mut data = Map::new();
    for word in rest {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {word:?}"))?;
        insert_dotted(&mut data, key, parse_value(value))?;
    }
    let mut action = Map::new();
    action.insert("type".into(), Value::from(kind.as_str()));
    action.insert("data".into(), Value::Object(data));
    actions.push(Value::Object(action));
    if finish {
        return step(transaction, ")");
    }
    Ok(None)
}

/// `{"execute": name, "arguments": args}`, without empty arguments.
fn execute_message(name: &str, args: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("execute".into(), Value::from(name));
    if !args.is_empty() {
        m.insert("arguments".into(), Value::Object(args));
    }
    Value::Object(m)
}

/// An HMP line as `human-monitor-command`.
fn hmp_message(line: &str) -> Result<Option<Value>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut args = Map::new();
    args.insert("command-line".into(), Value::from(line));
    Ok(Some(execute_message("human-monitor-command", args)))
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
mod tests {
    use super::*;
    use crate::repl::schema::tests::block_schema;
    use serde_json::json;

    fn cmd(line: &str) -> (String, Value) {
        match parse_line(line).unwrap() {
            Line::Command { name, args } => (name, Value::Object(args)),
            l => panic!("{l:?}"),
        }
    }

    #[test]
    fn key_values_parse_as_json_or_strings() {
        let (name, args) = cmd("blockdev-add driver=null-co node-name=n0 size=1024 read-only=true");
        assert_eq!(name, "blockdev-add");
        assert_eq!(
            args,
            json!({"driver": "null-co", "node-name": "n0", "size": 1024, "read-only": true})
        );
    }

    #[test]
    fn dotted_keys_nest() {
        let (_, args) =
            cmd("blockdev-add driver=qcow2 node-name=q file.driver=file file.filename=/tmp/a");
        assert_eq!(
            args,
            json!({"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "filename": "/tmp/a"}})
        );
    }

    #[test]
    fn json_values_may_hold_spaces_and_quotes_strip() {
        let (_, args) = cmd(r#"x a={"b": [1, 2]} c='two words' d="q""#);
        assert_eq!(
            args,
            json!({"a": {"b": [1, 2]}, "c": "two words", "d": "q"})
        );
    }

    #[test]
    fn raw_json_and_blank_lines() {
        assert_eq!(
            parse_line(r#"{"execute": "query-status"}"#).unwrap(),
            Line::Raw(json!({"execute": "query-status"}))
        );
        assert_eq!(parse_line("   ").unwrap(), Line::Empty);
        assert_eq!(parse_line("# note").unwrap(), Line::Empty);
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(parse_line("cmd novalue").unwrap_err().contains("key=value"));
        assert!(parse_line("cmd a='open").unwrap_err().contains("quote"));
        assert!(parse_line("cmd a={").unwrap_err().contains("brackets"));
        assert!(parse_line("cmd a=1 a.b=2").unwrap_err().contains("both"));
    }

    #[test]
    fn completion_of_commands_and_arguments() {
        let entries = vec![
            json!({"name": "blockdev-del", "meta-type": "command", "arg-type": "1"}),
            json!({"name": "blockdev-add", "meta-type": "command", "arg-type": "2"}),
            json!({"name": "query-status", "meta-type": "command", "arg-type": "0"}),
            json!({"name": "1", "meta-type": "object", "members": [{"name": "node-name"}]}),
            json!({"name": "2", "meta-type": "object", "members": [{"name": "driver"}, {"name": "node-name"}]}),
            json!({"name": "0", "meta-type": "object", "members": []}),
            json!({"name": "STOP", "meta-type": "event", "arg-type": "0"}),
        ];
        let s = Schema::from_entries(&entries);
        assert_eq!(s.events, ["STOP"]);
        assert_eq!(
            complete_line(&s, "blockdev-"),
            (0, vec!["blockdev-add".into(), "blockdev-del".into()])
        );
        assert_eq!(
            complete_line(&s, "blockdev-add no"),
            (13, vec!["node-name=".into()])
        );
        assert_eq!(
            complete_line(&s, "blockdev-add driver=x "),
            (22, vec!["node-name=".into()])
        );
        assert_eq!(complete_line(&s, "query-status x=").1, Vec::<String>::new());
    }

    #[test]
    fn enum_and_bool_values_complete_after_the_equals_sign() {
        let s = block_schema();
        assert_eq!(
            complete_line(&s, "blockdev-add driver="),
            (13, vec!["driver=file".into(), "driver=qcow2".into()])
        );
        assert_eq!(
            complete_line(&s, "blockdev-add driver=q").1,
            ["driver=qcow2"]
        );
        assert_eq!(
            complete_line(&s, "blockdev-add read-only=").1,
            ["read-only=true", "read-only=false"]
        );
        assert_eq!(
            complete_line(&s, "blockdev-add node-name=").1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_chosen_variant_and_nested_keys_complete() {
        let s = block_schema();
        // Before a driver is chosen, every variant's members are offered.
        assert!(complete_line(&s, "blockdev-add ")
            .1
            .contains(&"filename=".to_string()));
        let (_, c) = complete_line(&s, "blockdev-add driver=qcow2 ");
        assert_eq!(c, ["node-name=", "read-only=", "file=", "lazy-refcounts="]);
        let (start, c) = complete_line(&s, "blockdev-add driver=qcow2 file.");
        assert_eq!(start, 26);
        assert!(c.contains(&"file.driver=".to_string()), "{c:?}");
        let (_, c) = complete_line(&s, "blockdev-add driver=qcow2 file.driver=file file.f");
        assert_eq!(c, ["file.filename="]);
        assert_eq!(
            complete_line(&s, "blockdev-add driver=qcow2 file.driver=").1,
            ["file.driver=file", "file.driver=qcow2"]
        );
    }

    #[test]
    fn transaction_blocks_send_one_command_with_every_action() {
        let mut t = None;
        assert_eq!(step(&mut t, "transaction(").unwrap(), None);
        assert!(t.is_some());
        assert_eq!(
            step(&mut t, "block-dirty-bitmap-add node=d0 name=b1").unwrap(),
            None
        );
        assert!(step(&mut t, "abort novalue")
            .unwrap_err()
            .contains("key=value"));
        assert_eq!(step(&mut t, "abort").unwrap(), None);
        let sent = step(&mut t, ")").unwrap().unwrap();
        assert_eq!(
            sent,
            json!({"execute": "transaction", "arguments": {"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "d0", "name": "b1"}},
                {"type": "abort", "data": {}}
            ]}})
        );
        assert!(t.is_none());
        // The first action on the opening line, `)` ending the last one.
        let sent = step(&mut t, "transaction( abort").unwrap();
        assert_eq!(sent, None);
        let sent = step(&mut t, "abort )").unwrap().unwrap();
        assert_eq!(sent["arguments"]["actions"].as_array().unwrap().len(), 2);
        assert!(t.is_none());
        // Outside a transaction a line is a command as before.
        assert_eq!(
            step(&mut t, "query-status").unwrap(),
            Some(json!({"execute": "query-status"}))
        );
        step(&mut t, "transaction(").unwrap();
        assert!(step(&mut t, ") x").unwrap_err().contains("after the )"));
    }

    #[test]
    fn hmp_commands_and_info_topics_come_from_help() {
        let help = "announce_self [interfaces] [id] -- Trigger GARP/RARP announcements\n\
                    c|cont  -- resume emulation\n\
                    info [subcommand] -- show various information about the system state\n";
        let info = "info balloon  -- show balloon information\ninfo status  -- show the current VM status\n";
        let h = HmpCommands::from_help(help, info);
        assert_eq!(h.commands, ["announce_self", "c", "cont", "info"]);
        assert_eq!(h.complete("co"), (0, vec!["cont".into()]));
        assert_eq!(h.complete("info st"), (5, vec!["status".into()]));
        assert_eq!(h.complete("cont x").1, Vec::<String>::new());
    }

    #[test]
    fn events_show_on_one_line() {
        assert_eq!(
            event_line(&json!({"event": "STOP", "data": {}})),
            "event STOP"
        );
        assert_eq!(
            event_line(&json!({"event": "RESET", "data": {"guest": false}})),
            "event RESET {\"guest\":false}"
        );
    }
}
