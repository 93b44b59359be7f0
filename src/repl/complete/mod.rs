//! Tab completion in the REPL: what is being typed at the cursor
//! ([`context`]) and what may go there ([`candidates`]).
//!
//! The contexts: a QMP command name as the first argument of `qmp(` or
//! `command(`, an argument key or enum value in the map that follows it
//! (read by `map_literal.rs` so that nested maps and a union's tag count), an
//! event name in `event_wait(` or `events_wait(`, a module's function after
//! `module::`, a method, property or map key after `value.`, a plain word
//! (variables, functions, modules, keywords), and the REPL's own
//! `:commands`. The answers come from a [`Sources`]: the session in the
//! REPL, a fixed list in the tests. [`bounded`] keeps a list short enough
//! that showing it never asks anything. `context.rs` reads the text before
//! the cursor; this file answers from the sources.

mod context;
mod map_literal;

use std::rc::Rc;

use rustyline::completion::Pair;

use super::input::COMMANDS;
use super::schema::Schema;

pub use context::{context, Context};

/// A function the engine knows, as completion needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// The type of the first parameter, which a method call puts before the dot.
    pub receiver: Option<String>,
    /// A property getter (`vm.name`), written without parentheses.
    pub property: bool,
}

/// Reads Rhai's `name(a: T, …) -> R` (`get$name(…)` for a getter); `None`
/// for operators, setters and indexers, which are not typed by name.
pub fn parse_signature(signature: &str) -> Option<Function> {
    let (name, rest) = signature.split_once('(')?;
    let (name, property) = match name.strip_prefix("get$") {
        Some(p) => (p, true),
        None => (name, false),
    };
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !identifier {
        return None;
    }
    let first = rest.split([',', ')']).next().unwrap_or("").trim();
    let receiver = first.split_once(':').map(|(_, t)| {
        t.trim()
            .trim_start_matches("&mut ")
            .trim_end_matches('=')
            .trim()
            .to_string()
    });
    Some(Function {
        name: name.to_string(),
        receiver,
        property,
    })
}

/// What completion asks of the session.
pub trait Sources {
    /// Every function and property getter.
    fn functions(&self) -> Vec<Function>;
    /// The variables in scope with their type names (`Machine`, `map`, …).
    fn variables(&self) -> Vec<(String, String)>;
    /// The keys of a map variable.
    fn map_keys(&self, variable: &str) -> Vec<String>;
    /// The QMP schema of the machine in `receiver` (a variable name), or of
    /// the latest running machine.
    fn schema(&self, receiver: Option<&str>) -> Option<Rc<Schema>>;
    /// The modules a script may name here (`guest` in `guest::boot()`).
    fn modules(&self) -> Vec<String>;
    /// The public functions of module `name`.
    fn module_functions(&self, name: &str) -> Vec<String>;
}
/// Rhai's keywords, offered with the words.
const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "while", "loop", "for", "in", "do", "until", "break",
    "continue", "return", "throw", "try", "catch", "switch", "import", "export", "as", "true",
    "false", "private", "this",
];

/// What may replace the text from the start [`context`] gave.
pub fn candidates(ctx: &Context, src: &dyn Sources) -> Vec<Pair> {
    let mut out: Vec<Pair> = match ctx {
        Context::QmpCommand {
            receiver, prefix, ..
        } => src
            .schema(receiver.as_deref())
            .map(|s| quoted_names(s.commands.keys(), prefix))
            .unwrap_or_default(),
        Context::Event {
            receiver, prefix, ..
        } => src
            .schema(receiver.as_deref())
            .map(|s| quoted_names(s.events.iter(), prefix))
            .unwrap_or_default(),
        Context::QmpArgument {
            receiver,
            command,
            path,
            given,
            value_of,
            prefix,
        } => match src.schema(receiver.as_deref()) {
            Some(s) => qmp_arguments(&s, command, path, given, value_of.as_deref(), prefix),
            None => Vec::new(),
        },
        Context::ModuleMember { module, prefix } => src
            .module_functions(module)
            .into_iter()
            .filter(|f| f.starts_with(prefix.as_str()))
            .map(|f| Pair {
                replacement: format!("{f}("),
                display: f,
            })
            .collect(),
        Context::Member { receiver, prefix } => members(src, receiver.as_deref(), prefix),
        Context::Word { prefix } => words(src, prefix),
        Context::ReplCommand { prefix } => COMMANDS
            .iter()
            .map(|(c, _)| c.split(' ').next().unwrap_or(c))
            .filter(|c| c.starts_with(prefix.as_str()))
            .map(|c| plain(c, c))
            .collect(),
        Context::DocName { prefix } => {
            let mut names: Vec<String> = src
                .functions()
                .into_iter()
                .filter(|f| !f.property)
                .map(|f| f.name)
                .collect();
            names.extend(
                src.functions()
                    .into_iter()
                    .filter(|f| f.property)
                    .filter_map(|f| Some(format!("{}.{}", f.receiver?, f.name))),
            );
            for m in src.modules() {
                names.extend(
                    src.module_functions(&m)
                        .into_iter()
                        .map(|f| format!("{m}::{f}")),
                );
                names.push(m);
            }
            names
                .into_iter()
                .filter(|n| n.starts_with(prefix.as_str()))
                .map(|n| plain(&n, &n))
                .collect()
        }
        Context::EventsSwitch { prefix } => ["on", "off"]
            .into_iter()
            .filter(|s| s.starts_with(prefix.as_str()))
            .map(|s| plain(s, s))
            .collect(),
        Context::File | Context::Nothing => Vec::new(),
    };
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out.dedup_by(|a, b| a.display == b.display);
    out
}

/// How many candidates a Tab lists at most: a list that fits a small
/// terminal without paging, since a pager or a "Display all?" question
/// would take the next keys typed as its answer.
pub const LIST_LIMIT: usize = 30;

/// The first `limit` candidates, and a line that says how many more there
/// are. That line completes to what every candidate starts with, so Tab
/// still inserts as much as all of them share.
pub fn bounded(mut candidates: Vec<Pair>, limit: usize) -> Vec<Pair> {
    if candidates.len() <= limit {
        return candidates;
    }
    let shared = candidates
        .iter()
        .map(|c| c.replacement.as_str())
        .reduce(|a, b| {
            let n = a
                .char_indices()
                .zip(b.chars())
                .find(|((_, x), y)| x != y)
                .map_or(a.len().min(b.len()), |((i, _), _)| i);
            &a[..n]
        })
        .unwrap_or("")
        .to_string();
    let more = candidates.len() - limit;
    candidates.truncate(limit);
    candidates.push(Pair {
        display: format!("… and {more} more (type more to narrow)"),
        replacement: shared,
    });
    candidates
}

fn plain(display: &str, replacement: &str) -> Pair {
    Pair {
        display: display.to_string(),
        replacement: replacement.to_string(),
    }
}

/// Names as string literals, quotes included: the completion replaces the
/// opening quote too when it was typed.
fn quoted_names<'a>(names: impl Iterator<Item = &'a String>, prefix: &str) -> Vec<Pair> {
    names
        .filter(|n| n.starts_with(prefix))
        .map(|n| Pair {
            display: n.clone(),
            replacement: format!("\"{n}\""),
        })
        .collect()
}

fn members(src: &dyn Sources, receiver: Option<&str>, prefix: &str) -> Vec<Pair> {
    let vars = src.variables();
    let ty = receiver.and_then(|r| vars.iter().find(|(n, _)| n == r).map(|(_, t)| t.clone()));
    let mut out: Vec<Pair> = src
        .functions()
        .into_iter()
        .filter(|f| f.receiver.is_some() && f.name.starts_with(prefix))
        .filter(|f| ty.is_none() || f.receiver == ty)
        .map(|f| {
            let replacement = if f.property {
                f.name.clone()
            } else {
                format!("{}(", f.name)
            };
            Pair {
                display: f.name,
                replacement,
            }
        })
        .collect();
    if let (Some(r), Some("map")) = (receiver, ty.as_deref()) {
        out.extend(
            src.map_keys(r)
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| plain(&k, &k)),
        );
    }
    out
}

fn words(src: &dyn Sources, prefix: &str) -> Vec<Pair> {
    let mut out: Vec<Pair> = src
        .variables()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, _)| plain(&n, &n))
        .collect();
    out.extend(
        src.functions()
            .into_iter()
            .filter(|f| !f.property && f.name.starts_with(prefix))
            .map(|f| Pair {
                replacement: format!("{}(", f.name),
                display: f.name,
            }),
    );
    out.extend(
        KEYWORDS
            .iter()
            .filter(|k| k.starts_with(prefix))
            .map(|k| plain(k, k)),
    );
    out.extend(
        src.modules()
            .into_iter()
            .filter(|m| m.starts_with(prefix))
            .map(|m| Pair {
                replacement: format!("{m}::"),
                display: format!("{m}::"),
            }),
    );
    out
}

/// Keys of a QMP command's argument map, or the values of one key.
fn qmp_arguments(
    schema: &Schema,
    command: &str,
    path: &[String],
    given: &serde_json::Map<String, serde_json::Value>,
    value_of: Option<&str>,
    prefix: &str,
) -> Vec<Pair> {
    let mut at: Vec<&str> = path.iter().map(String::as_str).collect();
    if let Some(key) = value_of {
        at.push(key);
        let values = schema.values(command, &at, given);
        let bool_like = values.iter().all(|v| v == "true" || v == "false");
        return values
            .into_iter()
            .filter(|v| v.starts_with(prefix))
            .map(|v| {
                let replacement = if bool_like {
                    v.clone()
                } else {
                    format!("\"{v}\"")
                };
                Pair {
                    display: v,
                    replacement,
                }
            })
            .collect();
    }
    schema
        .keys(command, &at, given)
        .into_iter()
        .filter(|a| a.starts_with(prefix) || a.replace('-', "_").starts_with(prefix))
        .map(|a| {
            // `node_name:` reads better and conv_keys makes it `node-name`.
            let key = if a.contains('_') {
                format!("\"{a}\"")
            } else {
                a.replace('-', "_")
            };
            Pair {
                replacement: format!("{key}: "),
                display: a,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
