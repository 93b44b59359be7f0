//! `vmscript qmp ADDRESS`: an interactive QMP shell for a QEMU that
//! someone else started, in the spirit of QEMU's `qmp-shell`.
//!
//! A line is `command-name key=value …` (values are JSON where they parse
//! as JSON, strings otherwise; `a.b=1` nests), or raw JSON sent as is.
//! With `-H` lines are HMP commands sent through `human-monitor-command`.
//! Command and argument names complete from `query-qmp-schema`; events
//! are printed above the prompt as they arrive. Start at [`run`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

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

/// Command names and their argument names, from `query-qmp-schema`.
#[derive(Debug, Default, Clone)]
pub struct Schema {
    pub commands: BTreeMap<String, Vec<String>>,
    pub events: Vec<String>,
}

impl Schema {
    /// Reads the schema from a live monitor; falls back to
    /// `query-commands` (names only) when the schema is unavailable.
    pub fn load(client: &Client, timeout: Duration) -> Schema {
        let mut schema = Schema::default();
        if let Ok(Value::Array(entries)) = client.command("query-qmp-schema", None, timeout) {
            schema = Schema::from_entries(&entries);
        }
        if schema.commands.is_empty() {
            if let Ok(Value::Array(cmds)) = client.command("query-commands", None, timeout) {
                for c in cmds {
                    if let Some(n) = c.get("name").and_then(Value::as_str) {
                        schema.commands.insert(n.to_string(), Vec::new());
                    }
                }
            }
        }
        schema
    }

    /// Builds the index from `query-qmp-schema` entries.
    pub fn from_entries(entries: &[Value]) -> Schema {
        let by_name: BTreeMap<&str, &Value> = entries
            .iter()
            .filter_map(|e| Some((e.get("name")?.as_str()?, e)))
            .collect();
        let members = |type_name: Option<&str>| -> Vec<String> {
            type_name
                .and_then(|t| by_name.get(t))
                .and_then(|t| t.get("members"))
                .and_then(Value::as_array)
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| m.get("name")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut schema = Schema::default();
        for e in entries {
            let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
            match e.get("meta-type").and_then(Value::as_str) {
                Some("command") => {
                    let args = members(e.get("arg-type").and_then(Value::as_str));
                    schema.commands.insert(name.to_string(), args);
                }
                Some("event") => schema.events.push(name.to_string()),
                _ => {}
            }
        }
        schema.events.sort();
        schema
    }

    /// Completions for the word ending at the end of `line`: a command
    /// name first, then `arg=` names of that command.
    pub fn complete(&self, line: &str) -> (usize, Vec<String>) {
        let start = line.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &line[start..];
        if start == 0 {
            let c = self
                .commands
                .keys()
                .filter(|c| c.starts_with(word))
                .cloned()
                .collect();
            return (0, c);
        }
        if word.contains('=') {
            return (start, Vec::new());
        }
        let cmd = line.split_whitespace().next().unwrap_or_default();
        let used: Vec<&str> = line[..start]
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .collect();
        let c = self
            .commands
            .get(cmd)
            .map(|args| {
                args.iter()
                    .filter(|a| a.starts_with(word) && !used.contains(&a.as_str()))
                    .map(|a| format!("{a}="))
                    .collect()
            })
            .unwrap_or_default();
        (start, c)
    }
}

struct ShellHelper {
    schema: Schema,
    hmp: bool,
}

impl rustyline::completion::Completer for ShellHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        if self.hmp {
            return Ok((pos, Vec::new()));
        }
        Ok(self.schema.complete(&line[..pos]))
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
}

/// Runs the shell until end of input. Errors are connection failures.
pub fn run(opts: &ShellOptions) -> Result<(), qmp::Error> {
    let mut client = Client::connect(&opts.address, opts.timeout)?;
    client.negotiate(opts.timeout)?;
    let greeting = client.greeting();
    let version = greeting
        .pointer("/QMP/version/qemu")
        .map(|v| format!("{}.{}.{}", v["major"], v["minor"], v["micro"]))
        .unwrap_or_else(|| "?".into());
    let schema = if opts.hmp {
        Schema::default()
    } else {
        Schema::load(&client, opts.timeout)
    };
    println!(
        "Connected to QEMU {version} at {}. {} commands; Tab completes, Ctrl-D leaves.",
        opts.address,
        schema.commands.len()
    );
    let client = Arc::new(client);
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor: rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::with_config(config).map_err(|e| qmp::Error::Io {
            what: "starting the line editor".into(),
            message: e.to_string(),
        })?;
    editor.set_helper(Some(ShellHelper {
        schema,
        hmp: opts.hmp,
    }));
    if let Some(h) = &opts.history {
        let _ = editor.load_history(h);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let events = spawn_event_printer(&mut editor, client.clone(), stop.clone());
    let prompt = if opts.hmp { "(HMP) " } else { "(QEMU) " };
    loop {
        match editor.readline(prompt) {
            Ok(line) => {
                if let Err(e) = execute_line(&client, &line, opts.hmp, opts.timeout) {
                    println!("error: {e}");
                    if matches!(e, ShellError::Qmp(qmp::Error::Closed { .. })) {
                        break;
                    }
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {
                println!("(Ctrl-D leaves)");
            }
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = &opts.history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    drop(events);
    Ok(())
}

/// What one line can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Qmp(#[from] qmp::Error),
}

/// Sends one line and prints the reply.
fn execute_line(
    client: &Client,
    line: &str,
    hmp: bool,
    timeout: Duration,
) -> Result<(), ShellError> {
    if hmp {
        if line.trim().is_empty() {
            return Ok(());
        }
        let mut args = Map::new();
        args.insert("command-line".into(), Value::from(line));
        let out = client.command("human-monitor-command", Some(&args), timeout)?;
        print!("{}", out.as_str().unwrap_or_default());
        return Ok(());
    }
    let reply = match parse_line(line).map_err(ShellError::Parse)? {
        Line::Empty => return Ok(()),
        Line::Command { name, args } => {
            client.execute(&name, (!args.is_empty()).then_some(&args), timeout)?
        }
        Line::Raw(v) => {
            let bytes = serde_json::to_vec(&v).expect("a Value always serializes");
            client.execute_raw(&bytes, "the message", timeout)?
        }
    };
    println!("{}", pretty(&reply));
    Ok(())
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
    use rustyline::ExternalPrinter;
    let mut printer = editor.create_external_printer().ok()?;
    std::thread::Builder::new()
        .name("qmp-shell-events".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match client.take_event(Duration::from_millis(500), |_| true) {
                    Ok(Some(ev)) => {
                        let _ = printer.print(format!("event: {}\n", pretty(&ev)));
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
            s.complete("blockdev-"),
            (0, vec!["blockdev-add".into(), "blockdev-del".into()])
        );
        assert_eq!(
            s.complete("blockdev-add no"),
            (13, vec!["node-name=".into()])
        );
        assert_eq!(
            s.complete("blockdev-add driver=x "),
            (22, vec!["node-name=".into()])
        );
        assert_eq!(s.complete("query-status x=").1, Vec::<String>::new());
    }
}
