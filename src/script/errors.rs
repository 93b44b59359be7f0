//! How errors look to a script, and how an uncaught one looks to a person.
//!
//! Everything a binding throws is a Rhai runtime error whose value is a map
//! `#{ kind, message, … }` (the kinds and fields of the API contract), so
//! `try { … } catch (e) { if e.kind == "Timeout" { … } }` works for machine
//! errors and host helpers alike. [`machine_error`] renders a
//! [`machine::Error`] that way; [`throw`] makes the others.
//!
//! Two endings are not catchable, because a script must not swallow them:
//! `skip(reason)` ([`skipped`]) and the run being cancelled by its timeout
//! or a signal ([`terminated`]). Both use Rhai's `ErrorTerminated`, which
//! no script can raise itself: that is how a skip is told from a thrown
//! `#{kind: "Skipped"}`, which is an error like any other.
//!
//! [`Failure::from_eval`] turns whatever ended a script into the report
//! `FILE:LINE:COL: KIND: message`.

use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map, Position};

use super::cancel::{Cancel, Reason};
use super::convert;
use crate::machine::{self, ConsoleError};
use crate::sync::lock;

/// What every binding returns.
pub type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// The kind of the value `skip()` ends a script with.
pub const SKIPPED: &str = "Skipped";
/// The kind for Rhai's own errors and for thrown values that are not maps.
pub const SCRIPT_ERROR: &str = "ScriptError";

/// A thrown map `#{ kind, message }` plus `fields`.
pub fn error_map(kind: &str, message: impl Into<String>, fields: Vec<(&str, Dynamic)>) -> Map {
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("message".into(), message.into().into());
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    m
}

/// A catchable error of `kind`.
pub fn throw(kind: &str, message: impl Into<String>) -> Box<EvalAltResult> {
    throw_map(error_map(kind, message, Vec::new()))
}

/// A catchable error whose value is `map`.
pub fn throw_map(map: Map) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(map.into(), Position::NONE).into()
}

/// `QEMUMachineError`: misuse of a machine.
pub fn misuse(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("QEMUMachineError", message)
}

/// `HostError`: a host operation failed.
pub fn host(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("HostError", message)
}

/// `AssertionFailed`.
pub fn assertion(message: impl Into<String>) -> Box<EvalAltResult> {
    throw("AssertionFailed", message)
}

/// `Timeout` naming what was awaited.
pub fn timeout(what: &str, after: Duration) -> Box<EvalAltResult> {
    throw_map(error_map(
        "Timeout",
        format!(
            "timed out after {}s waiting for {what}",
            after.as_secs_f64()
        ),
        vec![("what", what.into()), ("after", after.as_secs_f64().into())],
    ))
}

/// A wrong argument type, as Rhai reports its own.
pub fn bad_type(what: &str, expected: &str, got: &Dynamic) -> Box<EvalAltResult> {
    EvalAltResult::ErrorMismatchDataType(
        format!("{expected} for {what}"),
        got.type_name().to_string(),
        Position::NONE,
    )
    .into()
}

/// Ends the script as skipped; not catchable.
pub fn skipped(reason: &str) -> Box<EvalAltResult> {
    terminated(SKIPPED, reason)
}

/// Ends the script with `kind`; not catchable.
pub fn terminated(kind: &str, message: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(error_map(kind, message, Vec::new()).into(), Position::NONE)
        .into()
}

/// Compiles a script or module so that every error it catches has a
/// `kind`. Rhai hands a `catch` block its own errors (a type mismatch, a
/// missing function, an index out of bounds) as a map without one, so
/// each catch block that names its error starts by giving it `kind:
/// "ScriptError"` when it has none (the kind an uncaught one is reported
/// with). The code is put right after the block's `{`, on the same line:
/// line numbers stay as they are.
pub fn compile_catching(
    engine: &rhai::Engine,
    text: &str,
    source: &str,
) -> Result<rhai::AST, rhai::ParseError> {
    let ast = with_kinds_in_catch_blocks(engine, text, source)?;
    let mut closures = lock_closures();
    for f in ast.iter_functions() {
        if f.name.starts_with("anon$") {
            closures
                .entry(f.name.to_string())
                .or_insert_with(|| source.to_string());
        }
    }
    Ok(ast)
}

fn with_kinds_in_catch_blocks(
    engine: &rhai::Engine,
    text: &str,
    source: &str,
) -> Result<rhai::AST, rhai::ParseError> {
    let ast = engine.compile(text)?;
    let mut at: Vec<(usize, usize, String)> = Vec::new();
    ast.walk(&mut |path: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Stmt(rhai::Stmt::TryCatch(flow, _))) = path.last() {
            let brace = flow.branch.position();
            if let (rhai::Expr::Variable(v, ..), Some(line), Some(col)) =
                (&flow.expr, brace.line(), brace.position())
            {
                at.push((line, col, v.1.to_string()));
            }
        }
        true
    });
    if at.is_empty() {
        return Ok(ast);
    }
    // From the end, so that each insertion leaves the places before it.
    at.sort();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut shifts = Vec::new();
    for (line, col, var) in at.iter().rev() {
        let Some(l) = line.checked_sub(1).and_then(|i| lines.get_mut(i)) else {
            continue;
        };
        let Some((i, '{')) = col.checked_sub(1).and_then(|c| l.char_indices().nth(c)) else {
            continue;
        };
        let code = format!(
            " if type_of({var}) == \"map\" && !{var}.contains(\"kind\") {{ {var}.kind = \"{SCRIPT_ERROR}\"; }}"
        );
        l.insert_str(i + 1, &code);
        shifts.push((*line, *col, code.chars().count()));
    }
    lock_shifts().insert(source.to_string(), shifts);
    engine.compile(lines.join("\n"))
}

/// Per source name, where [`compile_catching`] put code: (line, column of
/// the `{`, characters put after it), for reporting true columns.
type Shifts = std::collections::HashMap<String, Vec<(usize, usize, usize)>>;

fn lock_shifts() -> std::sync::MutexGuard<'static, Shifts> {
    static SHIFTS: std::sync::LazyLock<std::sync::Mutex<Shifts>> =
        std::sync::LazyLock::new(Default::default);
    lock(&SHIFTS)
}

/// Per closure (`anon$…`, named by a hash of its body), the source it was
/// written in: Rhai reports a closure called from inside a module as if
/// it were the module's.
type Closures = std::collections::HashMap<String, String>;

fn lock_closures() -> std::sync::MutexGuard<'static, Closures> {
    static CLOSURES: std::sync::LazyLock<std::sync::Mutex<Closures>> =
        std::sync::LazyLock::new(Default::default);
    lock(&CLOSURES)
}

/// The column `col` of `line` in `file` as the author wrote it, before
/// [`compile_catching`] added code to the line.
fn true_column(file: &str, line: usize, col: usize) -> usize {
    lock_shifts().get(file).map_or(col, |shifts| {
        shifts
            .iter()
            .filter(|(l, c, _)| *l == line && col > *c)
            .fold(col, |col, (_, _, n)| col.saturating_sub(*n))
    })
}

thread_local! {
    /// The cancellation token of the run whose script this thread runs.
    static RUN: std::cell::RefCell<Option<Cancel>> = const { std::cell::RefCell::new(None) };
}

/// Tells the binding errors of this thread which run they belong to. The
/// engine calls it before every operation, so a `parallel` branch's thread
/// is covered too; it costs a comparison when nothing changed.
pub fn enter_run(cancel: &Cancel) {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        if !r.as_ref().is_some_and(|c| c.same(cancel)) {
            *r = Some(cancel.clone());
        }
    });
}

/// A machine error as the thrown map the API contract describes; when the
/// run was cancelled (its timeout, a signal), the cancellation instead,
/// not catchable: a wait that failed because its machine was killed by
/// the cancellation must not run the script's `catch` block, and the
/// report then points at the wait and names what it awaited.
pub fn machine_error(err: machine::Error) -> Box<EvalAltResult> {
    let map = machine_error_map(&err);
    let reason = RUN.with(|r| r.borrow().as_ref().and_then(Cancel::reason));
    match reason {
        Some(r) => cancelled(&r, map),
        None => throw_map(map),
    }
}

/// The cancellation `reason`, with what the failed call `saw` (its error
/// map: what it awaited, and the error itself).
fn cancelled(reason: &Reason, saw: Map) -> Box<EvalAltResult> {
    let mut fields = Vec::new();
    if let Some(what) = saw.get("what") {
        fields.push(("what", what.clone()));
    }
    fields.push(("saw", saw.into()));
    EvalAltResult::ErrorTerminated(
        error_map(reason.kind(), reason.message(), fields).into(),
        Position::NONE,
    )
    .into()
}

/// The fields of each error kind, as named by the API contract.
pub fn machine_error_map(err: &machine::Error) -> Map {
    use machine::Error as E;
    let secs = |d: &Duration| Dynamic::from_float(d.as_secs_f64());
    let fields: Vec<(&str, Dynamic)> = match err {
        E::LaunchFailure {
            cause,
            exitcode,
            command,
            output,
        } => vec![
            ("exitcode", convert::opt_int(*exitcode)),
            ("command", convert::string_array(command).into()),
            ("output", output.clone().into()),
            ("cause", cause.clone().into()),
        ],
        E::AbnormalShutdown { cause } => vec![("cause", cause.clone().into())],
        E::MonitorResponse {
            command,
            class,
            desc,
            reply,
        } => vec![
            ("command", command.clone().into()),
            ("class", class.clone().into()),
            ("desc", desc.clone().into()),
            ("reply", convert::from_json(reply)),
        ],
        E::Exited {
            what,
            code,
            log_tail,
        } => vec![
            ("what", what.clone().into()),
            ("exitcode", convert::opt_int(*code)),
            ("output", log_tail.clone().into()),
        ],
        E::Timeout { what, after, seen } => vec![
            ("what", what.clone().into()),
            ("after", secs(after)),
            ("seen", convert::string_array(seen).into()),
        ],
        E::Console(c) => console_fields(c),
        E::Host { what, .. } | E::NotRunning { what, .. } => vec![("what", what.clone().into())],
        E::Interrupted { what } => vec![("what", what.clone().into())],
        _ => Vec::new(),
    };
    error_map(err.kind(), err.to_string(), fields)
}

fn console_fields(err: &ConsoleError) -> Vec<(&'static str, Dynamic)> {
    if let ConsoleError::Timeout { what, after, tail } = err {
        vec![
            ("what", what.clone().into()),
            ("after", after.as_secs_f64().into()),
            ("tail", tail.clone().into()),
        ]
    } else if let ConsoleError::Closed { what, tail } = err {
        vec![("what", what.clone().into()), ("tail", tail.clone().into())]
    } else {
        Vec::new()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn field(m: &Map, k: &str) -> String {
        m.get(k).map(|v| v.to_string()).unwrap_or_default()
    }

    #[test]
    fn monitor_errors_carry_class_desc_and_reply() {
        let reply = serde_json::json!({"error": {"class": "CommandNotFound", "desc": "no"}});
        let m = machine_error_map(&machine::Error::MonitorResponse {
            command: "nope".into(),
            class: "CommandNotFound".into(),
            desc: "no".into(),
            reply: Box::new(reply),
        });
        assert_eq!(field(&m, "kind"), "MonitorResponseError");
        assert_eq!(field(&m, "class"), "CommandNotFound");
        assert_eq!(field(&m, "desc"), "no");
        assert!(m["reply"].is_map());
    }

    #[test]
    fn launch_failures_carry_exitcode_command_and_output() {
        let m = machine_error_map(&machine::Error::LaunchFailure {
            cause: "exited".into(),
            exitcode: Some(1),
            command: vec!["qemu".into(), "-bad".into()],
            output: "qemu: -bad: invalid option".into(),
        });
        assert_eq!(field(&m, "kind"), "VMLaunchFailure");
        assert_eq!(m["exitcode"].as_int().unwrap(), 1);
        assert_eq!(m["command"].clone().into_array().unwrap().len(), 2);
        assert!(field(&m, "output").contains("invalid option"));
    }

    #[test]
    fn timeouts_name_what_and_what_was_seen() {
        let m = machine_error_map(&machine::Error::Timeout {
            what: "event STOP".into(),
            after: Duration::from_millis(1500),
            seen: vec!["RESUME".into()],
        });
        assert_eq!(field(&m, "kind"), "Timeout");
        assert_eq!(m["after"].as_float().unwrap(), 1.5);
        assert!(field(&m, "message").contains("RESUME"));
    }

    #[test]
    fn thrown_maps_and_strings_have_kinds() {
        let v: Dynamic = error_map("HostError", "disk full", Vec::new()).into();
        let (k, msg, _) = thrown_kind_and_message(&v);
        assert_eq!((k.as_str(), msg.as_str()), ("HostError", "disk full"));
        let (k, msg, _) = thrown_kind_and_message(&Dynamic::from("boom"));
        assert_eq!((k.as_str(), msg.as_str()), (SCRIPT_ERROR, "boom"));
    }

    #[test]
    fn only_skip_skips_a_thrown_skipped_map_is_an_error() {
        let engine = rhai::Engine::new();
        let err = engine
            .run("throw #{kind: \"Skipped\", message: \"forged\"};")
            .unwrap_err();
        let f = Failure::from_eval(&err, "t.rhai");
        assert_eq!(f.kind, SCRIPT_ERROR);
        assert!(f.message.contains("forged") && f.message.contains("skip(reason)"));
        let f = Failure::from_eval(&skipped("real"), "t.rhai");
        assert_eq!((f.kind.as_str(), f.message.as_str()), (SKIPPED, "real"));
    }

    #[test]
    fn caught_rhai_errors_have_a_kind_and_keep_their_lines() {
        let engine = rhai::Engine::new();
        let text = "let k = [];\ntry { [1][5] } catch (e) { k.push(e.kind); k.push(e.error) }\n\
                    try { throw #{kind: \"Timeout\"} } catch (e) {\n  k.push(e.kind);\n}\n\
                    try { throw \"text\" } catch (err) { k.push(err) }\n\
                    fn f() { try { 1 + \"a\" - 1 } catch (x) { return x.kind; } }\nk.push(f());\n\
                    try { let x = 1; } catch { }\nk.push(\"{\");\nk";
        let ast = compile_catching(&engine, text, "t.rhai").unwrap();
        let k: rhai::Array = engine.eval_ast(&ast).unwrap();
        let k: Vec<String> = k.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            k,
            [
                SCRIPT_ERROR,
                "ErrorArrayBounds",
                "Timeout",
                "text",
                SCRIPT_ERROR,
                "{"
            ]
        );
        let err = engine
            .eval_ast::<()>(
                &compile_catching(&engine, "try { 1 } catch (e) { }\n  x", "u.rhai").unwrap(),
            )
            .unwrap_err();
        assert_eq!(err.position().line(), Some(2));
        assert_eq!(err.position().position(), Some(3));
        let src = "try { 1 } catch (e) { throw e; }";
        let ast =
            compile_catching(&engine, "try { 1 + () } catch (e) { throw e; }", "v.rhai").unwrap();
        let f = Failure::from_eval(&engine.eval_ast::<()>(&ast).unwrap_err(), "v.rhai");
        assert_eq!(f.location(), "v.rhai:1:28", "{src}");
    }

    #[test]
    fn failures_render_file_line_column_kind_message() {
        let engine = rhai::Engine::new();
        let err = engine
            .run("let x = 1;\n  throw #{kind: \"Timeout\", message: \"late\"};")
            .unwrap_err();
        let f = Failure::from_eval(&err, "t.rhai");
        assert_eq!(f.to_string(), "t.rhai:2:3: Timeout: late");
    }

    #[test]
    fn failures_inside_functions_point_into_the_function() {
        let engine = rhai::Engine::new();
        let err = engine
            .run("fn f() {\n    throw \"deep\";\n}\nf();")
            .unwrap_err();
        let f = Failure::from_eval(&err, "t.rhai");
        assert_eq!(f.location(), "t.rhai:2:5");
        assert_eq!(f.kind, SCRIPT_ERROR);
        assert_eq!(f.message, "deep");
        assert_eq!(f.context, vec!["in function f called at t.rhai:4:1"]);
    }

    #[test]
    fn errors_raised_in_a_module_point_at_the_tests_own_call() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("util.rhai"),
            "fn check(x) {\n    if x > 1 {\n        throw \"too big\";\n    }\n}\n",
        )
        .unwrap();
        let mut engine = rhai::Engine::new();
        let mut resolver = rhai::module_resolvers::FileModuleResolver::new_with_path(dir.path());
        resolver.enable_cache(false);
        engine.set_module_resolver(resolver);
        let text = "import \"util\" as u;\nfn helper(v) {\n    u::check(v)\n}\nhelper(5);";
        let mut ast = compile_catching(&engine, text, "t.rhai").unwrap();
        ast.set_source("t.rhai");
        let err = engine.run_ast(&ast).unwrap_err();
        let f = Failure::from_eval(&err, "t.rhai");
        assert_eq!(f.location(), "t.rhai:3:8", "{f}");
        assert_eq!(f.context[0], "raised at util:3:9", "{f}");
        assert_eq!(
            f.context[1..],
            [
                "in function check called at t.rhai:3:8",
                "in function helper called at t.rhai:5:1"
            ]
        );
    }

    #[test]
    fn a_closure_called_from_a_module_is_placed_in_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.rhai"), "fn each(f) {\n    f.call()\n}\n").unwrap();
        let mut engine = rhai::Engine::new();
        engine.set_module_resolver(rhai::module_resolvers::FileModuleResolver::new_with_path(
            dir.path(),
        ));
        let text =
            "import \"m\" as m;\nfn bad() { throw \"inner\"; }\nm::each(|| {\n    bad()\n});";
        let mut ast = compile_catching(&engine, text, "c.rhai").unwrap();
        ast.set_source("c.rhai");
        let err = engine.run_ast(&ast).unwrap_err();
        let f = Failure::from_eval(&err, "c.rhai");
        assert_eq!(f.location(), "c.rhai:2:12", "{f}");
        assert_eq!(f.context[0], "in function bad called at c.rhai:4:5", "{f}");
    }

    #[test]
    fn rhai_errors_lose_their_position_suffix() {
        let engine = rhai::Engine::new();
        let err = engine.run("let a = [1];\na[5]").unwrap_err();
        let f = Failure::from_eval(&err, "t.rhai");
        assert_eq!(f.kind, SCRIPT_ERROR);
        assert!(!f.message.contains("line"), "{}", f.message);
        assert_eq!(f.line, Some(2));
    }
}
