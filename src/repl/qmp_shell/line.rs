//! What a line of the shell means: `command key=value …` (values JSON
//! where they parse as JSON, `a.b=1` nesting), raw JSON, qmp-shell's
//! `transaction(` … `)` blocks, and HMP lines; each becomes the message
//! to send ([`step`], [`hmp_message`]).

use serde_json::{Map, Value};

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
pub(super) fn hmp_message(line: &str) -> Result<Option<Value>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut args = Map::new();
    args.insert("command-line".into(), Value::from(line));
    Ok(Some(execute_message("human-monitor-command", args)))
}
