//! An uncaught error as a person reads it: [`Failure`], the report's
//! `FILE:LINE:COL: KIND: message` with where the error passed through,
//! pointing at the test's own file.

use rhai::{Dynamic, EvalAltResult, Map, Position};

use super::catching::{lock_closures, true_column};
use super::{convert, SCRIPT_ERROR, SKIPPED};
use crate::script::cancel::Site;

/// What ended a script other than success, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The file the error happened in (a module's path inside a module).
    pub file: String,
    /// 1-based line and column, when Rhai knows them.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The error kind (`Timeout`, `AssertionFailed`, `ScriptError`, …).
    pub kind: String,
    /// The error message.
    pub message: String,
    /// The thrown map, when the error was one.
    pub value: Option<serde_json::Value>,
    /// Where the error passed through: function calls, modules.
    pub context: Vec<String>,
}

impl Failure {
    /// Describes `err`, which happened while running `script`.
    ///
    /// The failure points at the test's own file: when the error was
    /// raised inside a module or the stdlib, its location is the deepest
    /// line of `script` on the way there (the call the test made), and
    /// where it was raised comes first in the context; a report or a CI
    /// annotation then points at a line the test's author wrote.
    pub fn from_eval(err: &EvalAltResult, script: &str) -> Failure {
        // Each place the error passed through, outermost first: the file
        // and position of a call, and the error's own position last.
        let mut frames: Vec<(String, Position)> = Vec::new();
        let mut file = script.to_string();
        let mut context = Vec::new();
        let mut pos = err.position();
        let mut e = err;
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, p) => {
                    let what = if name.starts_with("anon$") {
                        "closure".to_string()
                    } else {
                        format!("function {name}")
                    };
                    context.push(format!("in {what} called at {}", location(&file, *p)));
                    frames.push((file.clone(), *p));
                    let closure = name
                        .starts_with("anon$")
                        .then(|| lock_closures().get(name.as_str()).cloned())
                        .flatten();
                    if let Some(written_in) = closure {
                        file = written_in;
                    } else if !src.is_empty() {
                        file = src.clone();
                    }
                    pos = if inner.position().is_none() {
                        *p
                    } else {
                        inner.position()
                    };
                    e = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, p) => {
                    context.push(format!(
                        "in module {path} imported at {}",
                        location(&file, *p)
                    ));
                    frames.push((file.clone(), *p));
                    if !path.is_empty() {
                        file = path.clone();
                    }
                    pos = inner.position();
                    e = inner;
                }
                _ => break,
            }
        }
        context.reverse();
        if file != script {
            if let Some((own, p)) = frames.iter().rev().find(|(f, _)| f == script) {
                context.insert(0, format!("raised at {}", location(&file, pos)));
                file = own.clone();
                pos = *p;
            }
        }
        let (kind, message, value) = kind_and_message(e);
        // A call that failed because the run was cancelled: what it saw.
        if let Some(saw) = value.as_ref().and_then(|v| v.get("saw")) {
            let text = |k: &str| saw.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let first = text("message").lines().next().unwrap_or("");
            context.push(format!(
                "(the call it stopped ended with {}: {first})",
                text("kind")
            ));
        }
        let column = match (pos.line(), pos.position()) {
            (Some(l), Some(c)) => Some(true_column(&file, l, c)),
            (_, c) => c,
        };
        Failure {
            file,
            line: pos.line(),
            column,
            kind,
            message,
            value,
            context,
        }
    }

    /// Points the failure at `site` when it is in the failure's own file:
    /// for an error whose position Rhai did not keep (a stop passes
    /// through every function, each putting its own call there instead).
    pub fn point_at(&mut self, site: &Site) -> bool {
        if site.source != self.file {
            return false;
        }
        self.line = Some(site.line);
        self.column = Some(true_column(&self.file, site.line, site.column));
        true
    }

    /// A failure outside any script position (setup, cleanup).
    pub fn plain(file: &str, kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            file: file.to_string(),
            line: None,
            column: None,
            kind: kind.to_string(),
            message: message.into(),
            value: None,
            context: Vec::new(),
        }
    }

    /// A syntax error at its position in `file`.
    pub fn syntax(file: &str, err: &rhai::ParseError) -> Failure {
        Failure {
            file: file.to_string(),
            line: err.1.line(),
            column: err.1.position(),
            kind: "SyntaxError".into(),
            message: err.0.to_string(),
            value: None,
            context: Vec::new(),
        }
    }

    /// `FILE:LINE:COL`, or as much of it as is known.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.location(), self.kind, self.message)?;
        for c in &self.context {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

fn location(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{}", true_column(file, l, c)),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

/// The kind and message of a thrown value or of one of Rhai's own errors.
fn kind_and_message(err: &EvalAltResult) -> (String, String, Option<serde_json::Value>) {
    match err {
        // Only vmscript ends a script with `ErrorTerminated` (`skip`, a
        // timeout, a signal): a script cannot make one, so its kind is
        // trusted as it is.
        EvalAltResult::ErrorTerminated(v, _) => thrown_kind_and_message(v),
        EvalAltResult::ErrorRuntime(v, _) => {
            let (kind, message, value) = thrown_kind_and_message(v);
            if kind == SKIPPED {
                // A thrown map is an error, whatever its kind says: only
                // `skip()` skips.
                return (
                    SCRIPT_ERROR.into(),
                    format!(
                        "a thrown value of kind \"{SKIPPED}\" is an error, not a skip (call skip(reason) to skip): {message}"
                    ),
                    value,
                );
            }
            (kind, message, value)
        }
        EvalAltResult::ErrorParsing(p, _) => ("SyntaxError".into(), p.to_string(), None),
        EvalAltResult::ErrorTooManyOperations(_) | EvalAltResult::ErrorStackOverflow(_) => {
            (SCRIPT_ERROR.into(), without_position(err), None)
        }
        _ => (SCRIPT_ERROR.into(), without_position(err), None),
    }
}

/// A thrown value: a map with `kind` says what it is; anything else is a
/// `ScriptError` whose message is the value.
pub fn thrown_kind_and_message(v: &Dynamic) -> (String, String, Option<serde_json::Value>) {
    let json = convert::to_json(v).ok();
    if let Some(m) = v.read_lock::<Map>() {
        let text = |k: &str| {
            m.get(k).and_then(|x| {
                x.read_lock::<rhai::ImmutableString>()
                    .map(|s| s.to_string())
            })
        };
        let kind = text("kind").unwrap_or_else(|| SCRIPT_ERROR.to_string());
        let message = text("message").unwrap_or_else(|| convert::show(v));
        return (kind, message, json);
    }
    let message = match v.read_lock::<rhai::ImmutableString>() {
        Some(s) => s.to_string(),
        None => convert::show(v),
    };
    (SCRIPT_ERROR.to_string(), message, json)
}

fn without_position(err: &EvalAltResult) -> String {
    let text = err.to_string();
    let pos = err.position();
    if pos.is_none() {
        return text;
    }
    let suffix = format!(" ({pos})");
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}
