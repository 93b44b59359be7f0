//! The host helpers of the script API: assertions, `skip`, `log`, `sleep`,
//! files, JSON, `run_host`, `wait_until` and `param`.
//!
//! Each helper is a plain function over the [`Run`]; [`register`] lists
//! them. Everything that waits (`sleep`, `wait_until`, `run_host`) waits on
//! the run's cancellation token, so a timeout or a signal ends it at once.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, FLOAT, INT};

use super::args;
use super::convert;
use super::docs::func;
use super::errors::{self, ScriptResult};
use super::run::Run;

/// How often `wait_until` calls its closure by default.
const WAIT_UNTIL_INTERVAL: Duration = Duration::from_millis(100);
/// How often `run_host` looks at its child.
const POLL: Duration = Duration::from_millis(10);

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

/// `run_host`'s options.
struct HostCommand {
    argv: Vec<String>,
    timeout: Duration,
    cwd: Option<String>,
    env: Vec<(String, String)>,
}

impl HostCommand {
    fn new(run: &Run, argv: Array, options: &Map) -> ScriptResult<HostCommand> {
        args::known_keys(options, &["timeout", "cwd", "env"], "run_host()")?;
        let argv = args::strings(&Dynamic::from_array(argv), "run_host argv")?;
        if argv.is_empty() {
            return Err(errors::host("run_host: argv is empty"));
        }
        let timeout = match options.get("timeout") {
            Some(t) => args::secs(t, "timeout")?,
            None => run.remaining(),
        };
        let cwd = options
            .get("cwd")
            .map(|c| args::string(c, "cwd"))
            .transpose()?;
        let env = match options.get("env") {
            None => Vec::new(),
            Some(e) => {
                let Some(m) = e.read_lock::<Map>() else {
                    return Err(errors::bad_type("env", "a map of strings", e));
                };
                m.iter()
                    .map(|(k, v)| Ok((k.to_string(), args::string(v, k)?)))
                    .collect::<ScriptResult<_>>()?
            }
        };
        Ok(HostCommand {
            argv,
            timeout,
            cwd,
            env,
        })
    }

    /// Runs the command (never through a shell) in its own process group,
    /// killed at its timeout or when the run is cancelled.
    fn run(self, run: &Run) -> ScriptResult<Map> {
        let program = &self.argv[0];
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        if let Some(c) = &self.cwd {
            cmd.current_dir(c);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| errors::host(format!("run_host: starting {program}: {e}")))?;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let pgid = child.id() as i32;
        let kill = |child: &mut std::process::Child| {
            // SAFETY: signals our own child's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => {
                    kill(&mut child);
                    return Err(errors::host(format!(
                        "run_host: waiting for {program}: {e}"
                    )));
                }
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                return Err(errors::timeout(
                    &format!("the host command {:?} to exit", self.argv),
                    self.timeout,
                ));
            }
            if let Err(e) = run.sleep(POLL) {
                kill(&mut child);
                return Err(e);
            }
        };
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| -s))
            .unwrap_or(-1);
        let mut m = Map::new();
        m.insert("status".into(), INT::from(code).into());
        m.insert("stdout".into(), out.join().unwrap_or_default().into());
        m.insert("stderr".into(), err.join().unwrap_or_default().into());
        Ok(m)
    }
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
pub fn register(e: &mut Engine, run: &Arc<Run>) {
    register_assertions(e, run);
    register_files(e, run);
    register_processes(e, run);
}

fn register_assertions(e: &mut Engine, run: &Arc<Run>) {
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
    let r = run.clone();
    func(
        "log(msg: String)",
        "Writes a timestamped line to the test's log (shown when it fails).",
    )
    .register_into_engine(e, move |m: &str| r.log(m));
    let r = run.clone();
    func("log(msg: Map)", "Logs a map as JSON.")
        .register_into_engine(e, move |m: Map| r.log(&convert::show(&m.into())));
    let r = run.clone();
    func(
        "param(key: String) -> String",
        "The value of KEY=VALUE given after `--` on the command line, or ().",
    )
    .register_into_engine(e, move |k: &str| {
        r.param(k).map_or(Dynamic::UNIT, |v| v.to_string().into())
    });
    let r = run.clone();
    func(
        "param(key: String, default: any) -> any",
        "The value of KEY=VALUE, or `default`.",
    )
    .register_into_engine(e, move |k: &str, d: Dynamic| {
        r.param(k).map_or(d, |v| v.to_string().into())
    });
}

fn register_files(e: &mut Engine, run: &Arc<Run>) {
    func(
        "env(name: String) -> String",
        "An environment variable, or ().",
    )
    .register_into_engine(e, |n: &str| {
        std::env::var(n).map_or(Dynamic::UNIT, Dynamic::from)
    });
    let r = run.clone();
    func(
        "temp_dir() -> String",
        "The test's own temp dir, removed when it ends.",
    )
    .register_into_engine(e, move || r.temp_dir().display().to_string());
    func(
        "read_file(path: String) -> String",
        "A file's contents (lossy UTF-8).",
    )
    .register_into_engine(e, |p: &str| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| errors::host(format!("read_file: {p}: {e}")))
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
    let to_json = |v: &Dynamic| {
        convert::to_json(v)
            .map(|j| j.to_string())
            .map_err(|m| errors::host(format!("to_json: {m}")))
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

fn register_processes(e: &mut Engine, run: &Arc<Run>) {
    // Typed, so that they are chosen over Rhai's own (blocking) sleep.
    let r = run.clone();
    func(
        "sleep(secs: int)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, move |s: INT| {
        r.sleep(args::plain_secs(&s.into(), "sleep")?)
    });
    let r = run.clone();
    func(
        "sleep(secs: float)",
        "Sleeps for `secs` seconds; a timeout or Ctrl-C ends it early.",
    )
    .register_into_engine(e, move |s: FLOAT| {
        r.sleep(args::plain_secs(&s.into(), "sleep")?)
    });
    let r = run.clone();
    func(
        "run_host(argv: Array) -> Map",
        "Runs a host command (no shell); returns #{status, stdout, stderr}.",
    )
    .register_into_engine(e, move |a: Array| {
        HostCommand::new(&r, a, &Map::new())?.run(&r)
    });
    let r = run.clone();
    func(
        "run_host(argv: Array, options: Map) -> Map",
        "run_host with #{timeout: secs, cwd: String, env: Map}.",
    )
    .register_into_engine(e, move |a: Array, o: Map| {
        HostCommand::new(&r, a, &o)?.run(&r)
    });
    let r = run.clone();
    func(
        "wait_until(f: FnPtr, timeout: secs)",
        "Calls `f` every 0.1s until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(e, move |ctx: NativeCallContext, f: FnPtr, t: Dynamic| {
        wait_until(
            &r,
            &ctx,
            &f,
            args::secs(&t, "timeout")?,
            WAIT_UNTIL_INTERVAL,
        )
    });
    let r = run.clone();
    func(
        "wait_until(f: FnPtr, timeout: secs, interval: secs)",
        "Calls `f` every `interval` until it returns true; Timeout after `timeout`.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, f: FnPtr, t: Dynamic, i: Dynamic| {
            wait_until(
                &r,
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
