//! Where the cursor is: [`context`] reads the text before it and names
//! what is being typed there ([`Context`]), without deciding what may go
//! there.

use std::sync::LazyLock;

use regex::Regex;

use super::map_literal::scan_map;

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
