//! Reads a Rhai map literal being typed as a QMP command's arguments
//! ([`scan_map`]): the keys that enclose the cursor, the arguments given
//! so far, and whether a key or a value is being typed.

/// Where the cursor is in a Rhai map literal being typed.
#[derive(Debug, Default, PartialEq)]
pub(super) struct MapAt {
    pub(super) path: Vec<String>,
    pub(super) given: serde_json::Map<String, serde_json::Value>,
    pub(super) value_of: Option<String>,
    pub(super) prefix: String,
    /// The prefix follows an opening quote.
    pub(super) quoted: bool,
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
pub(super) fn scan_map(text: &str) -> Option<Option<MapAt>> {
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
