//! The Rhai bindings: the script API (`vmscript doc`) over [`crate::machine`],
//! and running one script file from start to cleanup.
//!
//! Knows nothing of test discovery or reports (that is `runner`). Start
//! with [`run_file`], which compiles a script, runs it under a [`Run`]
//! (temp dir, artifacts, machine registry) with a [`Watchdog`] for its
//! timeout, and returns an [`Outcome`]. The bindings themselves live in
//! [`machine_api`] (the `Machine` type), [`console_api`] (the console) and
//! [`host`] (the helpers), [`steps`] (`step`, `test_name`); [`cases`]
//! runs a file's `test_*` functions as cases of their own; [`debug`] hands
//! a failed test, machines running, to a debugger (`--debug-on-fail`);
//! [`errors`] decides how errors look, [`convert`] converts
//! between Rhai and JSON values, and [`docs`] carries the doc comments that
//! `vmscript doc` prints. [`modules`] resolves `import`, finding bundled
//! [`stdlib`] modules last.

pub mod args;
pub mod boot_api;
pub mod cancel;
pub mod cases;
pub mod console_api;
pub mod convert;
pub mod debug;
pub mod docs;
pub mod errors;
pub mod guest_api;
pub mod host;
pub mod lint;
pub mod machine_api;
pub mod memory;
pub mod modules;
pub mod parallel;
pub mod run;
pub mod stdlib;
pub mod steps;
pub mod temp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, Scope, AST};

pub use cancel::{Cancel, Reason, Watchdog};
pub use cases::Program;
pub use debug::{Debugger, Scene};
pub use errors::Failure;
pub use run::{
    MachineLogs, QemuBinary, QemuSource, Run, RunConfig, RunReport, StepRecord, StepStatus,
};

/// How a script ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// It ran to its end.
    Passed,
    /// An uncaught error, a timeout or a signal ended it.
    Failed(Failure),
    /// It called `skip(reason)`.
    Skipped(String),
}

/// A finished script run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub duration: Duration,
    /// Logs and captured output, for the report.
    pub report: RunReport,
}

/// An engine with the limits every script gets, in debug and release
/// builds alike (Rhai's own defaults differ between the two, so a script
/// that passes in one could fail to compile in the other).
pub fn base_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 64);
    // No size limits on strings, arrays or maps: Rhai checks them by
    // walking the whole value after every operation, which makes filling
    // an array quadratic. Memory is bounded by [`memory`] instead.
    engine
}

/// How deep script functions may call each other. The thread that runs a
/// script needs [`SCRIPT_STACK`] bytes of stack to allow it.
pub const MAX_CALL_LEVELS: usize = 128;

/// The native stack a script thread needs for [`MAX_CALL_LEVELS`].
pub const SCRIPT_STACK: usize = 64 << 20;

/// An engine with the whole script API registered and no run: what
/// `vmscript doc` and `vmscript check` read. Its bindings find the run
/// they act on in the call's context ([`Run::of`]), which [`engine`]
/// supplies as the engine's tag.
pub fn api_engine() -> Engine {
    let mut engine = base_engine();
    convert::register(&mut engine);
    machine_api::register(&mut engine);
    boot_api::register(&mut engine);
    console_api::register(&mut engine);
    guest_api::register(&mut engine);
    host::register(&mut engine);
    memory::register_growth(&mut engine);
    parallel::register(&mut engine);
    steps::register(&mut engine);
    engine
}

/// A Rhai engine with the whole script API, running under `run`.
pub fn engine(run: &Arc<Run>) -> Engine {
    let mut engine = api_engine();
    engine.set_default_tag(Dynamic::from(run.clone()));
    let r = run.clone();
    engine.on_print(move |s| r.print(s));
    let r = run.clone();
    engine.on_debug(move |s, _, _| r.print(s));
    let c = run.cancel().clone();
    let limit = memory::limit();
    engine.on_progress(move |_| {
        errors::enter_run(&c);
        if let Some(msg) = memory::exceeded(limit) {
            return Some(Dynamic::from_map(errors::error_map(
                "HostError",
                msg,
                Vec::new(),
            )));
        }
        if !c.is_cancelled() && !c.is_interrupted() {
            return None;
        }
        c.stop_reason()
            .map(|r| Dynamic::from_map(errors::error_map(r.kind(), r.message(), Vec::new())))
    });
    engine.set_module_resolver(modules::Resolver::new(modules::SearchPath::from_env(
        &run.config().lib_dirs,
    )));
    engine
}

/// Compiles `path`; a syntax error is reported at its position.
pub fn compile(engine: &Engine, path: &Path) -> Result<AST, Box<Failure>> {
    let shown = path.display().to_string();
    let text = modules::read_source(path)
        .map_err(|e| Failure::plain(&shown, "HostError", format!("reading the script: {e}")))?;
    let mut ast =
        errors::compile_catching(engine, &text, &shown).map_err(|e| Failure::syntax(&shown, &e))?;
    ast.set_source(shown);
    Ok(ast)
}

/// Compiles `path` without running it (`vmscript check`), then looks for
/// calls, imports and option keys that would fail when reached
/// ([`lint`]); `api` is [`api_functions`]. Returns the findings as
/// `FILE:LINE:COL: message` lines.
pub fn check_file(
    path: &Path,
    api: &lint::Arities,
    lib_dirs: &[PathBuf],
) -> Result<Vec<String>, Box<Failure>> {
    // Unoptimised, so literal maps keep their keys' positions instead of
    // being folded into constants.
    let mut engine = base_engine();
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    let ast = compile(&engine, path)?;
    let search = modules::SearchPath::from_env(lib_dirs);
    let shown = path.display();
    Ok(lint::lint(&ast, path, api, &search)
        .into_iter()
        .map(|f| format!("{shown}:{}:{}: {}", f.line, f.column, f.message))
        .collect())
}

/// Every function a script can call, with the argument counts of its
/// overloads: the whole API and Rhai's standard library.
pub fn api_functions() -> lint::Arities {
    lint::known_functions(&api_engine())
}

/// Runs one script to its end and releases everything it made.
pub fn run_file(config: RunConfig, cancel: Cancel) -> Outcome {
    let program = Program::load(&config.script);
    run_program(config, &program, None, cancel)
}

/// Runs `program` (compiled once, shared by every test of a run) as one
/// test: the whole file, or with `case` one of its test cases; then
/// releases everything it made.
pub fn run_program(
    config: RunConfig,
    program: &Program,
    case: Option<&str>,
    cancel: Cancel,
) -> Outcome {
    let start = Instant::now();
    let shown = config.script.display().to_string();
    let timeout = config.timeout;
    let outcome = |status, report| Outcome {
        status,
        duration: start.elapsed(),
        report,
    };
    let run = match Run::new(config, cancel.clone()) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            let f = Failure::plain(&shown, "HostError", format!("creating the temp dir: {e}"));
            return outcome(Status::Failed(f), RunReport::default());
        }
    };
    let debugging = run.config().debugger.is_some();
    let watchdog = if debugging {
        Watchdog::start_keeping(&cancel, timeout)
    } else {
        Watchdog::start(&cancel, timeout)
    };
    let watchdog = match watchdog {
        Ok(w) => w,
        Err(e) => {
            let f = Failure::plain(&shown, "HostError", format!("starting the watchdog: {e}"));
            return outcome(Status::Failed(f), run.finish());
        }
    };
    let mut engine = engine(&run);
    let mut scope = Scope::new();
    let result = program
        .execute(&mut engine, &run, case, &mut scope)
        .map_err(|mut f| {
            if let Some(step) = run.failed_step(&f) {
                f.context.insert(0, format!("in step {step}"));
            }
            f
        });
    if let (Err(f), true) = (&result, debugging) {
        let text = modules::read_source(program.path()).unwrap_or_default();
        let remains = debug::Remains {
            scope: &scope,
            functions: program.functions(),
            modules: debug::top_level_imports(&engine, &text, &shown),
            setup_value: None,
        };
        debug::open(&run, f, remains);
    }
    drop(scope);
    drop(engine);
    cancel.script_over();
    let debugged = run.debugged.load(std::sync::atomic::Ordering::SeqCst);
    if matches!(&result, Err(f) if f.kind != errors::SKIPPED) && !cancel.is_cancelled() && !debugged
    {
        run.screenshot_machines();
        run.collect_guest_files();
    }
    // A timed-out test's machines were kept for their screenshots only:
    // they are killed, as the timeout's cancellation always did.
    if let (Some(r @ Reason::Timeout(_)), false) = (cancel.expired(), debugging) {
        cancel.cancel(r);
    }
    let report = run.finish();
    drop(watchdog);
    let status = match result {
        Ok(()) => Status::Passed,
        Err(f) if f.kind == errors::SKIPPED => Status::Skipped(f.message),
        Err(f) => {
            let mut f = *f;
            if let Some(r) = cancel.ended_by() {
                stopped_by(&mut f, &r);
            }
            Status::Failed(f)
        }
    };
    let status = run::with_crashes(status, &report, &shown);
    outcome(with_lost_artifacts(status, &report, &shown), report)
}

/// `f`, the error a script ended with after it was stopped for `r` (its
/// timeout, a signal), as the report shows it: the kind and message of
/// `r`, with what the call it stopped said as context.
pub(crate) fn stopped_by(f: &mut Failure, r: &Reason) {
    if f.kind != r.kind() || f.message != r.message() {
        f.context.push(format!(
            "(the call it stopped ended with {}: {})",
            f.kind,
            first_line(&f.message)
        ));
        f.kind = r.kind().to_string();
        f.message = r.message();
    }
}

/// A test whose logs could not all be written (a full or read-only disk)
/// does not pass silently: a pass becomes a `HostError` naming them, a
/// failure gets them as context.
fn with_lost_artifacts(status: Status, report: &RunReport, shown: &str) -> Status {
    if report.lost.is_empty() {
        return status;
    }
    let lost = report.lost.join("; ");
    match status {
        Status::Failed(mut f) => {
            f.context.push(format!("artifacts lost: {lost}"));
            Status::Failed(f)
        }
        _ => Status::Failed(Failure::plain(
            shown,
            "HostError",
            format!("the test's artifacts could not all be written: {lost}"),
        )),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The reference of every registered function, from the engine's metadata.
pub fn reference() -> Vec<docs::Entry> {
    docs::reference(&api_engine())
}

/// The documentation of every stdlib module.
pub fn stdlib_docs() -> Result<Vec<docs::ModuleDoc>, String> {
    let engine = base_engine();
    stdlib::MODULES
        .iter()
        .map(|(name, source)| {
            let shown = stdlib::shown(name);
            let ast = engine
                .compile(*source)
                .map_err(|e| format!("{shown}: {e}"))?;
            Ok(docs::module_doc(name, &shown, &ast))
        })
        .collect()
}

/// The documentation of module `name`, found as `import` would find it
/// from a script in the current folder with `lib_dirs` as `--lib`.
pub fn module_docs(name: &str, lib_dirs: &[PathBuf]) -> Result<docs::ModuleDoc, String> {
    let search = modules::SearchPath::from_env(lib_dirs);
    let at = modules::locate(name, &modules::Folder::Dir(PathBuf::new()), &search)
        .map_err(|e| e.to_string())?;
    let ast = modules::compile_cached(&base_engine(), &at).map_err(|e| match e {
        modules::LoadError::Parse(p) => format!("{}:{}: {}", at.shown, p.1, p.0),
        e => e.to_string(),
    })?;
    Ok(docs::module_doc(name, &at.shown, &ast))
}
