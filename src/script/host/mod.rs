//! The host helpers of the script API: assertions, `skip`, `log`, `sleep`,
//! files, JSON, `run_host`, `wait_until` and `param`.
//!
//! Each helper is a plain function over the [`Run`]; [`register`] lists
//! them. Everything that waits (`sleep`, `wait_until`, `run_host`) waits on
//! the run's cancellation token, so a timeout or a signal ends it at once.
//! The host commands of `run_host`, and the cleanup of what they leave
//! running, are in the `processes` module.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, FLOAT, INT};

use super::args;
use super::convert;
use super::docs::func;
use super::errors::{self, ScriptResult};
use super::memory;
use super::run::Run;

mod processes;

use processes::HostCommand;
pub use processes::{HostProcesses, HOST_MARK_VAR};

/// How often `wait_until` calls its closure by default.
const WAIT_UNTIL_INTERVAL: Duration = Duration::from_millis(100);

/// Equality for `assert_eq`: by JSON value (1 == 1.0), else by type and
/// debug form for values without one.
pub fn values_equal(a: &Dynamic, b: &Dynamic) -> bool {
    match (convert::to_json(a), convert::to_json(b)) {
        (Ok(x), Ok(y)) => convert::json_eq(&x, &y),
        _ => a.type_name() == b.type_name() && format!("{a:?}") == format!("{b:?}"),
    }
}

/// Indents every line after the first, for values shown in messages.
fn indented(text: &str) -> String {
    text.replace('\n', "\n        ")
}

fn assert_eq(a: &Dynamic, b: &Dynamic, msg: Option<&str>) -> ScriptResult<()> {
    if values_equal(a, b) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  left: {}\n right: {}",
        msg.unwrap_or("assert_eq: the values differ"),
        indented(&convert::show(a)),
        indented(&convert::show(b)),
    )))
}

fn assert_ne(a: &Dynamic, b: &Dynamic, msg: Option<&str>) -> ScriptResult<()> {
    if !values_equal(a, b) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  left: {}\n right: {}",
        msg.unwrap_or("assert_ne: the values are equal"),
        indented(&convert::show(a)),
        indented(&convert::show(b)),
    )))
}

fn assert_match(text: &str, re: &str, msg: Option<&str>) -> ScriptResult<()> {
    let regex = regex::Regex::new(re)
        .map_err(|e| errors::host(format!("assert_match: invalid regex {re:?}: {e}")))?;
    if regex.is_match(text) {
        return Ok(());
    }
    Err(errors::assertion(format!(
        "{}\n  regex: {re:?}\n   text: {}",
        msg.unwrap_or("assert_match: the text does not match"),
        indented(&convert::show(&text.into())),
    )))
}

/// The text of a message argument: a string as is, anything else shown.
fn text_of(v: &Dynamic) -> String {
    match v.read_lock::<rhai::ImmutableString>() {
        Some(s) => s.to_string(),
        None => convert::show(v),
    }
}

/// `read_file`: read in chunks, each checked against the memory limit
/// and the run's cancellation, so that an endless file (`/dev/zero`) ends
/// with an error naming it instead of taking the host's memory.
fn read_file(run: &Run, path: &str) -> ScriptResult<String> {
    let fail = |e: std::io::Error| errors::host(format!("read_file: {path}: {e}"));
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let limit = memory::limit();
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        // Before the end too: cancelling kills the writer of a pipe.
        if let Some(r) = run.cancel().stop_reason() {
            return Err(errors::terminated(r.kind(), r.message()));
        }
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(msg) = memory::exceeded(limit) {
            return Err(errors::host(format!(
                "read_file: {path}: stopped after {} MiB: {msg}",
                bytes.len() >> 20
            )));
        }
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// How deeply arrays and maps may nest in JSON text: what `parse_json`
/// (serde_json's recursion limit) reads back.
pub const MAX_JSON_DEPTH: usize = 127;

/// How deeply arrays and objects nest in `v` (a scalar is 0), counted
/// without recursion.
fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// `to_json`'s text: refused when `parse_json` could not read it back.
fn json_text(v: &serde_json::Value) -> ScriptResult<String> {
    let depth = json_depth(v);
    if depth > MAX_JSON_DEPTH {
        return Err(errors::host(format!(
            "to_json: the value nests arrays and maps {depth} levels deep; JSON text is limited to {MAX_JSON_DEPTH} levels (what parse_json reads)"
        )));
    }
    Ok(v.to_string())
}

/// Calls `f` until it returns true, sleeping `interval` in between.
fn wait_until(
    run: &Run,
    ctx: &NativeCallContext,
    f: &FnPtr,
    timeout: Duration,
    interval: Duration,
) -> ScriptResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let v: Dynamic = f.call_within_context(ctx, ())?;
        match v.as_bool() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) if v.is_unit() => {}
            Err(_) => {
                return Err(errors::bad_type(
                    "wait_until's function result",
                    "a bool",
                    &v,
                ))
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let what = match f.fn_name() {
                n if n.starts_with("anon$") => "wait_until's condition".to_string(),
                n => format!("wait_until's condition {n}"),
            };
            return Err(errors::timeout(&what, timeout));
        }
        run.sleep(interval.min(left))?;
    }
}

fn now() -> FLOAT {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Registers the host helpers.
pub fn register(e: &mut Engine) {
    register_assertions(e);
    register_files(e);
    register_processes(e);
}

fn register_assertions(e: &mut Engine) {
    func(
        "assert(cond: bool)",
        "Fails with AssertionFailed unless `cond` is true.",
    )
    .register_into_engine(e, |c: bool| {
        if c {
            Ok(())
        } else {
            Err(errors::assertion("assertion failed"))
        }
    });
    func(
        "assert(cond: bool, msg: String)",
        "Fails with AssertionFailed and `msg` unless `cond` is true.",
    )
    .register_into_engine(e, |c: bool, m: Dynamic| {
        if c {
            Ok(())
        } else {
            Err(errors::assertion(text_of(&m)))
        }
    });
    func(
        "assert_eq(left: any, right: any)",
        "Fails unless the values are equal (1 == 1.0); shows both, maps as JSON.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic| assert_eq(&a, &b, None));
    func(
        "assert_eq(left: any, right: any, msg: String)",
        "assert_eq with a message.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic, m: Dynamic| {
        assert_eq(&a, &b, Some(&text_of(&m)))
    });
    func(
        "assert_ne(left: any, right: any)",
        "Fails when the values are equal.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic| assert_ne(&a, &b, None));
    func(
        "assert_ne(left: any, right: any, msg: String)",
        "assert_ne with a message.",
    )
    .register_into_engine(e, |a: Dynamic, b: Dynamic, m: Dynamic| {
        assert_ne(&a, &b, Some(&text_of(&m)))
    });
    func(
        "assert_match(text: String, regex: String)",
        "Fails unless `regex` matches somewhere in `text`.",
    )
    .register_into_engine(e, |t: &str, re: &str| assert_match(t, re, None));
    func(
        "assert_match(text: String, regex: String, msg: String)",
        "assert_match with a message.",
    )
    .register_into_engine(e, |t: &str, re: &str, m: Dynamic| {
        assert_match(t, re, Some(&text_of(&m)))
    });
    func(
        "fail(msg: String)",
        "Fails the test with AssertionFailed and `msg`.",
    )
    .register_into_engine(e, |m: Dynamic| -> ScriptResult<()> {
        Err(errors::assertion(text_of(&m)))
    });
    func(
        "skip(reason: String)",
        "Ends the test as skipped (cannot be caught).",
    )
    .register_into_engine(e, |m: Dynamic| -> ScriptResult<()> {
        Err(errors::skipped(&text_of(&m)))
    });
    func(
        "log(msg: String)",
        "Writes a timestamped line to the test's log (shown when it fails).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, m: &str| {
        Run::of(&ctx).map(|r| r.log(m))
    });
    func("log(msg: Map)", "Logs a map as JSON.")
        .register_into_engine(e, |ctx: NativeCallContext, m: Map| {
            Run::of(&ctx).map(|r| r.log(&convert::show(&m.into())))
        });
    func(
        "param(key: String) -> String",
        "The value of KEY=VALUE given after `--` on the command line, or ().",
    )
    .register_into_engine(e, |ctx: NativeCallContext, k: &str| {
        Run::of(&ctx).map(|r| r.param(k).map_or(Dynamic::UNIT, |v| v.to_string().into()))
    });
    func(
        "param(key: String, default: any) -> any",
        "The value of KEY=VALUE, or `default`.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, k: &str, d: Dynamic| {
        Run::of(&ctx).map(|r| r.param(k).map_or(d, |v| v.to_string().into()))
    });
}

fn register_files(e: &mut Engine) {
    func(
        "env(name: String) -> String",
        "An environment variable, or ().",
    )
    .register_into_engine(e, |n: &str| {
        std::env::var(n).map_or(Dynamic::UNIT, Dynamic::from)
    });
    func(
        "temp_dir() -> String",
        "The test's own temp dir, removed when it ends.",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        Run::of(&ctx).map(|r| r.temp_dir().display().to_string())
    });
    func(
        "read_file(path: String) -> String",
        "A file's contents (lossy UTF-8).",
    )
    .register_into_engine(e, |ctx: NativeCallContext, p: &str| {
        read_file(&*Run::of(&ctx)?, p)
    });
    func(
        "write_file(path: String, text: String)",
        "Writes `text` to a file as UTF-8, replacing it (\"\\xff\" is ÿ, two bytes: write_blob writes raw bytes).",
    )
    .register_into_engine(e, |p: &str, t: &str| {
        std::fs::write(p, t).map_err(|e| errors::host(format!("write_file: {p}: {e}")))
    });
    func(
        "read_blob(path: String) -> Blob",
        "A file's contents as bytes.",
    )
    .register_into_engine(e, |p: &str| {
        std::fs::read(p).map_err(|e| errors::host(format!("read_blob: {p}: {e}")))
    });
    func(
        "write_blob(path: String, bytes: Blob)",
        "Writes bytes to a file, replacing it.",
    )
    .register_into_engine(e, |p: &str, b: rhai::Blob| {
        std::fs::write(p, b).map_err(|e| errors::host(format!("write_blob: {p}: {e}")))
    });
    func(
        "join(items: Array, separator: String) -> String",
        "The items as text (strings as they are, others as print shows them), separated by `separator`.",
    )
    .register_into_engine(e, |a: rhai::Array, sep: &str| {
        a.iter()
            .map(|v| match v.clone().into_immutable_string() {
                Ok(s) => s.to_string(),
                Err(_) => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join(sep)
    });
    func(
        "file_exists(path: String) -> bool",
        "Whether the path exists.",
    )
    .register_into_engine(e, |p: &str| std::path::Path::new(p).exists());
    func("now() -> float", "Seconds since the Unix epoch.").register_into_engine(e, now);
    func(
        "timeout_multiplier() -> float",
        "The factor the run scales every timeout by (`--timeout-multiplier`, \
         `$VMSCRIPT_TIMEOUT_MULTIPLIER`; 1 by default). The API's waits are \
         scaled already; a script that keeps its own deadline with `now()` \
         multiplies it by this.",
    )
    .register_into_engine(e, super::args::timeout_multiplier);
    let to_json = |v: &Dynamic| {
        convert::to_json(v)
            .map_err(|m| errors::host(format!("to_json: {m}")))
            .and_then(|j| json_text(&j))
    };
    // Typed for maps and arrays, so that they are chosen over Rhai's own.
    func(
        "to_json(value: Map) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Map| to_json(&v.into()));
    func(
        "to_json(value: Array) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Array| to_json(&v.into()));
    func(
        "to_json(value: any) -> String",
        "The value as compact JSON.",
    )
    .register_into_engine(e, move |v: Dynamic| to_json(&v));
    func(
        "parse_json(text: String) -> any",
        "A JSON text as a value (maps, arrays, INT, FLOAT, …).",
    )
    .register_into_engine(e, |t: &str| {
        serde_json::from_str::<serde_json::Value>(t)
            .map(|v| convert::from_json(&v))
            .map_err(|m| errors::host(format!("parse_json: {m}")))
    });
}

/// `sleep`, marked as what the script is doing ([`Run::doing`]).
fn sleep(ctx: &NativeCallContext, d: Duration) -> ScriptResult<()> {
    let run = Run::of(ctx)?;
    let _doing = run.doing(ctx, format!("sleeping {}s", d.as_secs_f64()));
    run.sleep(d)
}

fn register_processes(e: &mut Engine) {
    // Typed, so that they are chosen over Rhai's own (blocking) sleep.
    func(
        "sleep(secs: int)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, s: INT| {
        sleep(&ctx, args::plain_secs(&s.into(), "sleep")?)
    });
    func(
        "sleep(secs: float)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, s: FLOAT| {
        sleep(&ctx, args::plain_secs(&s.into(), "sleep")?)
    });
    func(
        "run_host(argv: Array) -> Map",
        "Runs a host command (no shell); returns #{status, stdout, stderr} once it exits. What it leaves running in the background is killed when the test ends.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, a: Array| {
        let r = Run::of(&ctx)?;
        HostCommand::new(&r, a, &Map::new())?.run(&r)
    });
    func(
        "run_host(argv: Array, options: Map) -> Map",
        "run_host with #{timeout: secs, cwd: String, env: Map}.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, a: Array, o: Map| {
        let r = Run::of(&ctx)?;
        HostCommand::new(&r, a, &o)?.run(&r)
    });
    func(
        "wait_until(f: FnPtr, timeout: secs)",
        "Calls `f` every 0.1s until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, f: FnPtr, t: Dynamic| {
        wait_until(
            &*Run::of(&ctx)?,
            &ctx,
            &f,
            args::secs(&t, "timeout")?,
            WAIT_UNTIL_INTERVAL,
        )
    });
    func(
        "wait_until(f: FnPtr, timeout: secs, interval: secs)",
        "Calls `f` every `interval` until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, f: FnPtr, t: Dynamic, i: Dynamic| {
            wait_until(
                &*Run::of(&ctx)?,
                &ctx,
                &f,
                args::secs(&t, "timeout")?,
                args::plain_secs(&i, "interval")?,
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_json_writes_only_what_parse_json_reads() {
        let nested = |n: usize| {
            let mut v = serde_json::json!(1);
            for _ in 0..n {
                v = serde_json::json!([v]);
            }
            v
        };
        let text = json_text(&nested(MAX_JSON_DEPTH)).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        let deeper = nested(MAX_JSON_DEPTH + 1);
        assert!(serde_json::from_str::<serde_json::Value>(&deeper.to_string()).is_err());
        let err = json_text(&deeper).unwrap_err().to_string();
        assert!(err.contains("128 levels deep"), "{err}");
        assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(json_depth(&serde_json::json!("x")), 0);
    }

    #[test]
    fn equality_is_by_value() {
        let m = |j: serde_json::Value| convert::from_json(&j);
        assert!(values_equal(
            &Dynamic::from_int(1),
            &Dynamic::from_float(1.0)
        ));
        assert!(values_equal(
            &m(serde_json::json!({"a": [1]})),
            &m(serde_json::json!({"a": [1]}))
        ));
        assert!(!values_equal(&Dynamic::from("1"), &Dynamic::from_int(1)));
    }

    #[test]
    fn assertion_messages_show_both_sides() {
        let err = assert_eq(&Dynamic::from_int(1), &Dynamic::from("1"), None).unwrap_err();
        let (kind, msg, _) = match *err {
            rhai::EvalAltResult::ErrorRuntime(v, _) => errors::thrown_kind_and_message(&v),
            e => panic!("{e}"),
        };
        assert_eq!(kind, "AssertionFailed");
        assert!(
            msg.contains("left: 1") && msg.contains("right: \"1\""),
            "{msg}"
        );
    }
}
