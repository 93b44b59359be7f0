//! Tab completion in the REPL: what is being typed at the cursor
//! ([`context`]) and what may go there ([`candidates`]).
//!
//! The contexts: a QMP command name as the first argument of `qmp(` or
//! `command(`, an argument key in the map that follows it, an event name
//! in `event_wait(` or `events_wait(`, a method, property or map key after
//! `value.`, a plain word (variables, functions, keywords), and the REPL's
//! own `:commands`. The answers come from a [`Sources`]: the session in
//! the REPL, a fixed list in the tests.

use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;
use rustyline::completion::Pair;

use super::input::COMMANDS;
use super::qmp_shell::Schema;

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
    /// An argument key of a QMP command: `vm.command("stop", #{fo`.
    QmpArgument {
        receiver: Option<String>,
        command: String,
        prefix: String,
    },
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
        r#"{RECEIVER}(?:qmp|command)\s*\(\s*(?:\w+\s*,\s*)?"([\w-]+)"\s*,\s*#\{{(?:[^{{}}]*,)?\s*"?([\w-]*)$"#
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
    if let Some(c) = QMP_ARGUMENT.captures(before) {
        let prefix = &c[3];
        return (
            end - prefix.len(),
            Context::QmpArgument {
                receiver: receiver(&c),
                command: c[2].to_string(),
                prefix: prefix.to_string(),
            },
        );
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
            prefix,
        } => src
            .schema(receiver.as_deref())
            .and_then(|s| s.commands.get(command).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a.starts_with(prefix.as_str()) || a.replace('-', "_").starts_with(prefix.as_str())
            })
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fn schema(&self, _: Option<&str>) -> Option<Rc<Schema>> {
            let mut s = Schema::default();
            s.commands.insert("query-status".into(), vec![]);
            s.commands.insert("query-block".into(), vec![]);
            s.commands.insert(
                "blockdev-add".into(),
                vec!["driver".into(), "node-name".into()],
            );
            s.events = vec!["STOP".into(), "SHUTDOWN".into()];
            Some(Rc::new(s))
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
