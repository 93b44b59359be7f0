//! Tab completion in the REPL: what is being typed at the cursor
//! ([`context`]) and what may go there ([`candidates`]).
//!
//! The contexts: a QMP command name as the first argument of `qmp(` or
//! `command(`, an argument key or enum value in the map that follows it
//! (read by [`scan_map`] so that nested maps and a union's tag count), an
//! event name in `event_wait(` or `events_wait(`, a module's function after
//! `module::`, a method, property or map key after `value.`, a plain word
//! (variables, functions, modules, keywords), and the REPL's own
//! `:commands`. The answers come from a [`Sources`]: the session in the
//! REPL, a fixed list in the tests. [`bounded`] keeps a list short enough
//! that showing it never asks anything.

use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;
use rustyline::completion::Pair;

use super::input::COMMANDS;
use super::schema::Schema;

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

/// What is being typed at the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// A QMP command name: `vm.qmp("que`.
    QmpCommand {
        receiver: Option<String>,
        quoted: bool,
        prefix: String,
    },
    /// An argument key of a QMP command: `vm.command("stop", #{fo`, or
    /// (with `value_of`) the value of one: `#{driver: "nu`.
    QmpArgument {
        receiver: Option<String>,
        command: String,
        /// The keys of the maps that enclose the one being typed.
        path: Vec<String>,
        /// The arguments typed so far, as QMP will see them.
        given: serde_json::Map<String, serde_json::Value>,
        /// The key whose value is being typed.
        value_of: Option<String>,
        prefix: String,
    },
    /// A function of a module: `guest::ru`.
    ModuleMember { module: String, prefix: String },
    /// An event name: `vm.event_wait("ST`.
    Event {
        receiver: Option<String>,
        quoted: bool,
        prefix: String,
    },
    /// After a dot: `vm.la`. `receiver` is `None` for an expression.
    Member {
        receiver: Option<String>,
        prefix: String,
    },
    /// A variable, function or keyword.
    Word { prefix: String },
    /// A REPL command: `:lo`.
    ReplCommand { prefix: String },
    /// The name after `:doc `.
    DocName { prefix: String },
    /// `on`/`off` after `:events `.
    EventsSwitch { prefix: String },
    /// A file name after `:load ` or `:save `.
    File,
    /// Nothing to offer (inside a string, say).
    Nothing,
}

const RECEIVER: &str = r"(?:^|[^\w.])(?:(\w+)\s*\.\s*)?";

static QMP_COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"{RECEIVER}(?:qmp|command)\s*\(\s*(?:\w+\s*,\s*)?("?)([\w-]*)$"#
    ))
    .expect("a valid regex")
});
static QMP_ARGUMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"{RECEIVER}(?:qmp|command)\s*\(\s*(?:\w+\s*,\s*)?"([\w-]+)"\s*,\s*#\{{"#
    ))
    .expect("a valid regex")
});
static EVENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"{RECEIVER}(?:event_wait\s*\(|events_wait\s*\([^)]*\[)\s*(?:\w+\s*,\s*)?("?)([\w-]*)$"#
    ))
    .expect("a valid regex")
});
static MEMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?:(\w+)|[)\]}"])\s*\.\s*(\w*)$"#).expect("a valid regex"));
static MODULE_MEMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\w:])(\w+)::(\w*)$").expect("a valid regex"));
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\w*$").expect("a valid regex"));

/// The context of the text before the cursor, and where the text that a
/// completion replaces starts.
pub fn context(before: &str) -> (usize, Context) {
    let end = before.len();
    if let Some(rest) = before.strip_prefix(':') {
        return match rest.split_once(' ') {
            None => (
                0,
                Context::ReplCommand {
                    prefix: before.to_string(),
                },
            ),
            Some(("doc", arg)) => (
                end - arg.len(),
                Context::DocName {
                    prefix: arg.to_string(),
                },
            ),
            Some(("events", arg)) => (
                end - arg.len(),
                Context::EventsSwitch {
                    prefix: arg.to_string(),
                },
            ),
            Some(("load" | "save", _)) => (end, Context::File),
            Some(_) => (end, Context::Nothing),
        };
    }
    let receiver = |c: &regex::Captures| c.get(1).map(|m| m.as_str().to_string());
    if let Some(c) = QMP_ARGUMENT.captures_iter(before).last() {
        let whole = c.get(0).expect("a match has a whole");
        if let Some(at) = scan_map(&before[whole.end()..]) {
            let Some(map) = at else {
                return (end, Context::Nothing);
            };
            let start = end - map.prefix.len() - usize::from(map.quoted);
            return (
                start,
                Context::QmpArgument {
                    receiver: receiver(&c),
                    command: c[2].to_string(),
                    path: map.path,
                    given: map.given,
                    value_of: map.value_of,
                    prefix: map.prefix,
                },
            );
        }
    }
    for (re, is_event) in [(&*QMP_COMMAND, false), (&*EVENT, true)] {
        if let Some(c) = re.captures(before) {
            let quoted = !c[2].is_empty();
            let prefix = c[3].to_string();
            let start = end - prefix.len() - usize::from(quoted);
            let (receiver, quoted_prefix) = (receiver(&c), prefix);
            let ctx = if is_event {
                Context::Event {
                    receiver,
                    quoted,
                    prefix: quoted_prefix,
                }
            } else {
                Context::QmpCommand {
                    receiver,
                    quoted,
                    prefix: quoted_prefix,
                }
            };
            return (start, ctx);
        }
    }
    if in_string(before) {
        return (end, Context::Nothing);
    }
    if let Some(c) = MODULE_MEMBER.captures(before) {
        let prefix = c[2].to_string();
        return (
            end - prefix.len(),
            Context::ModuleMember {
                module: c[1].to_string(),
                prefix,
            },
        );
    }
    if let Some(c) = MEMBER.captures(before) {
        let prefix = c[2].to_string();
        return (
            end - prefix.len(),
            Context::Member {
                receiver: c.get(1).map(|m| m.as_str().to_string()),
                prefix,
            },
        );
    }
    let prefix = WORD.find(before).map_or("", |m| m.as_str());
    if prefix.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return (end, Context::Nothing);
    }
    (
        end - prefix.len(),
        Context::Word {
            prefix: prefix.to_string(),
        },
    )
}

/// Whether the end of `text` is inside a string literal.
fn in_string(text: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None => {}
        }
    }
    quote.is_some()
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

/// Where the cursor is in a Rhai map literal being typed.
#[derive(Debug, Default, PartialEq)]
struct MapAt {
    path: Vec<String>,
    given: serde_json::Map<String, serde_json::Value>,
    value_of: Option<String>,
    prefix: String,
    /// The prefix follows an opening quote.
    quoted: bool,
}

/// One map being read: the key it has in its parent, what it holds so far.
#[derive(Default)]
struct Frame {
    key: Option<String>,
    map: serde_json::Map<String, serde_json::Value>,
    pending: Option<String>,
    /// After `key:`, before its value ends.
    in_value: bool,
    /// A value was read and no `,` followed yet.
    after_value: bool,
}

/// Reads `text`, what follows the `#{` of a QMP command's arguments, as far
/// as it goes: `None` when the map was closed, else where the cursor is
/// (`Some(None)`: in the map, but where no key or value goes).
fn scan_map(text: &str) -> Option<Option<MapAt>> {
    let chars: Vec<char> = text.chars().collect();
    let mut stack = vec![Frame::default()];
    let mut i = 0;
    // The token that reaches the end of the text: (word, quoted).
    let mut partial: Option<(String, bool)> = None;
    while i < chars.len() {
        let c = chars[i];
        let top = stack.last_mut().expect("the stack holds the outer map");
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '`' {
            let mut s = String::new();
            let mut j = i + 1;
            let mut closed = false;
            while j < chars.len() {
                match chars[j] {
                    '\\' if j + 1 < chars.len() => {
                        s.push(chars[j + 1]);
                        j += 2;
                        continue;
                    }
                    q if q == c => {
                        closed = true;
                        break;
                    }
                    other => s.push(other),
                }
                j += 1;
            }
            if !closed {
                partial = Some((s, true));
                break;
            }
            i = j + 1;
            if top.in_value {
                if let Some(k) = top.pending.take() {
                    top.map.insert(k, serde_json::Value::String(s));
                }
                top.in_value = false;
                top.after_value = true;
            } else if !top.after_value {
                top.pending = Some(s.replace('_', "-"));
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '-' | '.'))
            {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if j == chars.len() {
                partial = Some((word, false));
                break;
            }
            i = j;
            if top.in_value {
                let v = match word.as_str() {
                    "true" => Some(serde_json::Value::Bool(true)),
                    "false" => Some(serde_json::Value::Bool(false)),
                    w => w.parse::<i64>().ok().map(serde_json::Value::from),
                };
                if let (Some(k), Some(v)) = (top.pending.take(), v) {
                    top.map.insert(k, v);
                }
                top.pending = None;
                top.in_value = false;
                top.after_value = true;
            } else if !top.after_value {
                top.pending = Some(word.replace('_', "-"));
            }
            continue;
        }
        match c {
            ':' => {
                top.in_value = top.pending.is_some();
                i += 1;
            }
            ',' => {
                top.pending = None;
                top.in_value = false;
                top.after_value = false;
                i += 1;
            }
            '#' if chars.get(i + 1) == Some(&'{') => {
                let key = if top.in_value {
                    top.pending.take()
                } else {
                    None
                };
                top.in_value = false;
                top.after_value = true;
                stack.push(Frame {
                    key,
                    ..Frame::default()
                });
                i += 2;
            }
            '}' => {
                let done = stack.pop().expect("the stack holds the outer map");
                let parent = stack.last_mut()?;
                if let Some(k) = done.key {
                    parent.map.insert(k, serde_json::Value::Object(done.map));
                }
                i += 1;
            }
            '[' | '(' => {
                // An array or a call is a value completion does not look into.
                let close = if c == '[' { ']' } else { ')' };
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let mut j = i;
                while j < chars.len() {
                    let d = chars[j];
                    match quote {
                        Some(q) if d == q => quote = None,
                        Some(_) => {}
                        None if d == '"' || d == '`' => quote = Some(d),
                        None if d == c => depth += 1,
                        None if d == close => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Some(None);
                }
                top.pending = None;
                top.in_value = false;
                top.after_value = true;
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    // Fold the open maps into one, outermost first, for the variant tags.
    let path: Vec<String> = stack.iter().skip(1).filter_map(|f| f.key.clone()).collect();
    if path.len() + 1 != stack.len() {
        return Some(None);
    }
    let top = stack.last().expect("the stack holds the outer map");
    let (in_value, after_value, pending) = (top.in_value, top.after_value, top.pending.clone());
    let mut given = serde_json::Map::new();
    let mut inner: Option<(String, serde_json::Map<String, serde_json::Value>)> = None;
    for f in stack.into_iter().rev() {
        let mut map = f.map;
        if let Some((k, m)) = inner.take() {
            map.insert(k, serde_json::Value::Object(m));
        }
        match f.key {
            Some(k) => inner = Some((k, map)),
            None => given = map,
        }
    }
    let (prefix, quoted) = partial.unwrap_or_default();
    if in_value {
        return Some(Some(MapAt {
            path,
            given,
            value_of: pending,
            prefix,
            quoted,
        }));
    }
    if after_value || (pending.is_some() && prefix.is_empty()) {
        return Some(None);
    }
    Some(Some(MapAt {
        path,
        given,
        value_of: None,
        prefix,
        quoted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;

    impl Sources for Fixed {
        fn functions(&self) -> Vec<Function> {
            [
                "machine() -> Machine",
                "launch(vm: Machine)",
                "event_wait(vm: Machine, name: String) -> Map",
                "get$name(vm: Machine) -> String",
                "keys(map: &mut map) -> Array",
                "len(string: string) -> i64",
                "+(a: i64, b: i64) -> i64",
            ]
            .iter()
            .filter_map(|s| parse_signature(s))
            .collect()
        }
        fn variables(&self) -> Vec<(String, String)> {
            vec![
                ("vm".into(), "Machine".into()),
                ("st".into(), "map".into()),
                ("level".into(), "i64".into()),
            ]
        }
        fn map_keys(&self, _: &str) -> Vec<String> {
            vec!["status".into(), "running".into()]
        }
        fn schema(&self, receiver: Option<&str>) -> Option<Rc<Schema>> {
            let mut s = Schema::default();
            s.commands.insert("query-status".into(), vec![]);
            s.commands.insert("query-block".into(), vec![]);
            s.commands.insert(
                "blockdev-add".into(),
                vec!["driver".into(), "node-name".into()],
            );
            s.events = vec!["STOP".into(), "SHUTDOWN".into()];
            let typed = Schema::from_entries(&[
                json!({"name": "add", "meta-type": "command", "arg-type": "1"}),
                json!({"name": "1", "meta-type": "object", "tag": "driver",
                    "members": [{"name": "driver", "type": "2"}, {"name": "node-name", "type": "str"}],
                    "variants": [{"case": "null-co", "type": "3"}, {"case": "qcow2", "type": "4"}]}),
                json!({"name": "2", "meta-type": "enum", "values": ["null-co", "qcow2"]}),
                json!({"name": "3", "meta-type": "object",
                    "members": [{"name": "size", "type": "int"}, {"name": "read-zeroes", "type": "bool"}]}),
                json!({"name": "4", "meta-type": "object", "members": [{"name": "file", "type": "1"}]}),
                json!({"name": "bool", "meta-type": "builtin"}),
            ]);
            Some(Rc::new(if receiver == Some("typed") { typed } else { s }))
        }
        fn modules(&self) -> Vec<String> {
            vec!["guest".into()]
        }
        fn module_functions(&self, name: &str) -> Vec<String> {
            match name {
                "guest" => vec!["boot".into(), "run".into(), "run_ok".into()],
                _ => Vec::new(),
            }
        }
    }

    fn complete(before: &str) -> (usize, Vec<String>) {
        let (start, ctx) = context(before);
        let c = candidates(&ctx, &Fixed);
        (start, c.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn signatures_give_names_and_receivers() {
        let f = parse_signature("get$name(vm: Machine) -> String").unwrap();
        assert_eq!(
            (f.name.as_str(), f.receiver.as_deref(), f.property),
            ("name", Some("Machine"), true)
        );
        let f = parse_signature("keys(map: &mut map) -> Array").unwrap();
        assert_eq!(f.receiver.as_deref(), Some("map"));
        assert_eq!(
            parse_signature("machine() -> Machine").unwrap().receiver,
            None
        );
        assert_eq!(parse_signature("+(a: i64, b: i64) -> i64"), None);
        assert_eq!(parse_signature("set$x(a: T, v: i64)"), None);
    }

    #[test]
    fn qmp_command_names_complete_in_the_first_argument() {
        assert_eq!(
            complete(r#"vm.qmp("query-"#),
            (
                7,
                vec![r#""query-block""#.into(), r#""query-status""#.into()]
            )
        );
        assert_eq!(complete("let r = vm.command(que").1.len(), 2);
        assert_eq!(complete("vm.command(que").0, 11);
        assert_eq!(complete(r#"qmp(vm, "query-s"#).1, [r#""query-status""#]);
        // The second argument is any expression.
        assert!(!complete(r#"vm.qmp("query-status", "#)
            .1
            .iter()
            .any(|c| c.contains("query")));
    }

    #[test]
    fn qmp_argument_keys_complete_in_the_map() {
        assert_eq!(
            complete(r#"vm.command("blockdev-add", #{driver: "null-co", no"#).1,
            ["node_name: "]
        );
        assert_eq!(complete(r#"vm.command("blockdev-add", #{"#).1.len(), 2);
    }

    #[test]
    fn qmp_argument_keys_narrow_to_the_chosen_variant_and_values_complete() {
        let all = complete(r#"typed.command("add", #{"#).1;
        assert_eq!(
            all,
            [
                "driver: ",
                "file: ",
                "node_name: ",
                "read_zeroes: ",
                "size: "
            ]
        );
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "null-co", "#).1,
            ["node_name: ", "read_zeroes: ", "size: "]
        );
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "qcow2", node_name: "q", "#).1,
            ["file: "]
        );
        // Nested maps follow their own tag.
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "qcow2", file: #{ driver: "null-co", s"#).1,
            ["size: "]
        );
        // Enum values, quoted; a typed quote is replaced too.
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "#),
            (32, vec![r#""null-co""#.into(), r#""qcow2""#.into()])
        );
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "q"#),
            (32, vec![r#""qcow2""#.into()])
        );
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "null-co", read_zeroes: "#).1,
            ["false", "true"]
        );
        // A closed map is no longer completed as arguments.
        assert!(
            !complete(r#"typed.command("add", #{ driver: "qcow2" }).le"#)
                .1
                .iter()
                .any(|c| c.contains(':'))
        );
        // After a value, before its comma, nothing is offered.
        assert_eq!(
            complete(r#"typed.command("add", #{ driver: "qcow2" "#).1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn long_lists_are_bounded_and_still_complete_what_all_share() {
        let many: Vec<Pair> = (0..110)
            .map(|i| plain(&format!("query-{i:03}"), &format!("\"query-{i:03}\"")))
            .collect();
        let shown = bounded(many, LIST_LIMIT);
        assert_eq!(shown.len(), LIST_LIMIT + 1);
        let last = shown.last().unwrap();
        assert_eq!(last.display, "… and 80 more (type more to narrow)");
        assert_eq!(last.replacement, "\"query-");
        let few = vec![plain("ab", "ab"), plain("ac", "ac")];
        let shown: Vec<String> = bounded(few, LIST_LIMIT)
            .into_iter()
            .map(|p| p.display)
            .collect();
        assert_eq!(shown, ["ab", "ac"]);
    }

    #[test]
    fn module_functions_complete_after_the_module_name() {
        assert_eq!(
            complete("guest::ru"),
            (7, vec!["run(".into(), "run_ok(".into()])
        );
        assert_eq!(complete("let vm = guest::").1, ["boot(", "run(", "run_ok("]);
        assert!(complete("gu").1.contains(&"guest::".to_string()));
        assert_eq!(
            complete(":doc guest::run").1,
            ["guest::run", "guest::run_ok"]
        );
        assert_eq!(
            complete(":doc gue").1,
            ["guest", "guest::boot", "guest::run", "guest::run_ok"]
        );
        assert_eq!(complete("other::x").1, Vec::<String>::new());
    }

    #[test]
    fn event_names_complete_in_event_wait() {
        assert_eq!(
            complete(r#"vm.event_wait("S"#).1,
            [r#""SHUTDOWN""#, r#""STOP""#]
        );
        assert_eq!(complete(r#"vm.event_wait(ST"#).1, [r#""STOP""#]);
        assert_eq!(complete(r#"vm.events_wait([["ST"#).1, [r#""STOP""#]);
    }

    #[test]
    fn members_follow_the_receivers_type() {
        assert_eq!(complete("vm.la").1, ["launch("]);
        assert_eq!(complete("vm.").1, ["event_wait(", "launch(", "name"]);
        assert_eq!(complete("st.").1, ["keys(", "running", "status"]);
        assert!(complete("foo().").1.contains(&"len(".to_string()));
    }

    #[test]
    fn words_are_variables_functions_and_keywords() {
        assert_eq!(
            complete("let x = l").1,
            ["launch(", "len(", "let", "level", "loop"]
        );
        assert_eq!(complete("ma").1, ["machine("]);
        assert_eq!(complete(r#"print("ma"#).1, Vec::<String>::new());
        assert_eq!(complete("12").1, Vec::<String>::new());
    }

    #[test]
    fn repl_commands_and_their_arguments() {
        assert_eq!(complete(":d").1, [":doc"]);
        assert_eq!(complete(":doc event_").1, ["event_wait"]);
        assert_eq!(complete(":doc Machine.n").1, ["Machine.name"]);
        assert_eq!(complete(":events o").1, ["off", "on"]);
        assert_eq!(context(":load sc"), (8, Context::File));
    }
}
