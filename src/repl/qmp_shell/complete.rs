//! Tab completion in the shell: QMP command and argument names and values
//! from the schema ([`complete_line`]), HMP commands and `info` topics
//! from the monitor's `help` ([`HmpCommands`]).

use std::time::Duration;

use rustyline::completion::Pair;
use serde_json::{Map, Value};

use super::line::{parse_line, Line};
use crate::qmp::Client;
use crate::repl::complete::{bounded, LIST_LIMIT};
use crate::repl::schema::Schema;

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

pub(super) struct ShellHelper {
    pub(super) schema: Schema,
    pub(super) hmp: Option<HmpCommands>,
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
