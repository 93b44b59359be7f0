//! `--debug-on-fail` as the script layer sees it: a test that failed or
//! timed out is handed, before its cleanup and with its machines running,
//! to a [`Debugger`] (the command line supplies the REPL) as a [`Scene`]:
//! its run, its error, its top-level variables, its functions and the
//! modules it imported. When the debugger returns, the test ends as usual.
//!
//! Knows nothing of terminals. [`open`] is called where the failure is
//! known and the script's variables still exist: after the top level of a
//! file, or inside the case driver between a failed case and its
//! `teardown` ([`super::cases`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::Regex;
use rhai::{Dynamic, Engine, Module, Position, Scope, Shared, AST};

use super::errors::{self, Failure};
use super::run::Run;

/// A module as Rhai shares it.
pub type SharedModule = Shared<Module>;

/// How long the waits that last "until the test's timeout" last while
/// debugging: until Ctrl-C, in effect.
const WHILE_DEBUGGING: Duration = Duration::from_secs(10 * 365 * 86400);

/// The name under which a case's `setup()` value is in the scene's scope.
pub const SETUP_VALUE: &str = "ctx";

/// A failed test, stopped where it failed; see the module documentation.
pub struct Scene {
    /// The test's run: its machines, temp dir and artifacts.
    pub run: Arc<Run>,
    /// The test's name: the script, or `FILE::test_case`.
    pub test: String,
    /// The error, at its place in the script.
    pub failure: Failure,
    /// The test ran out of time (its machines were kept).
    pub timed_out: bool,
    /// The top-level variables, and for a case its setup value under
    /// [`SETUP_VALUE`].
    pub scope: Scope<'static>,
    /// Whether `scope` holds a case's setup value.
    pub has_setup_value: bool,
    /// The script's functions.
    pub functions: AST,
    /// The modules the script imported, under their aliases.
    pub modules: Vec<(String, SharedModule)>,
}

/// What a failed test is handed to; clones share it.
#[derive(Clone)]
pub struct Debugger(Arc<dyn Fn(Scene) + Send + Sync>);

impl Debugger {
    pub fn new(f: impl Fn(Scene) + Send + Sync + 'static) -> Debugger {
        Debugger(Arc::new(f))
    }

    /// Hands `scene` over; returns when the debugging is over.
    pub fn debug(&self, scene: Scene) {
        (self.0)(scene)
    }
}

impl std::fmt::Debug for Debugger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Debugger")
    }
}

/// What the script left where it failed, for [`open`].
pub(crate) struct Remains<'a> {
    pub scope: &'a Scope<'a>,
    pub functions: AST,
    pub modules: Vec<(String, SharedModule)>,
    pub setup_value: Option<Dynamic>,
}

/// Hands the failed test to the run's debugger, if it has one and this
/// failure is one to debug (not a skip, not a cancelled run), once per
/// run. While the debugger has the run, its waits last until Ctrl-C and
/// its `print` goes to the terminal; both are put back afterwards.
pub(crate) fn open(run: &Arc<Run>, failure: &Failure, remains: Remains<'_>) {
    let Some(debugger) = run.config().debugger.clone() else {
        return;
    };
    let cancel = run.cancel();
    if failure.kind == errors::SKIPPED || cancel.is_cancelled() {
        return;
    }
    if run.debugged.swap(true, Ordering::SeqCst) {
        return;
    }
    // The script is over: its watchdog must not fire while debugging.
    cancel.finish();
    let timed_out = cancel.expired().is_some();
    if !timed_out {
        run.screenshot_machines();
    }
    let mut failure = failure.clone();
    if let Some(r) = cancel.ended_by() {
        super::stopped_by(&mut failure, &r);
    }
    let mut scope = Scope::new();
    for (name, constant, value) in remains.scope.iter_raw() {
        if constant {
            scope.push_constant_dynamic(name.to_string(), value.clone());
        } else {
            scope.push_dynamic(name.to_string(), value.clone());
        }
    }
    let has_setup_value = remains.setup_value.is_some();
    if let Some(v) = remains.setup_value {
        scope.push_dynamic(SETUP_VALUE, v);
    }
    let left = run.remaining();
    run.set_remaining(WHILE_DEBUGGING);
    let captured = run.set_capture(false);
    cancel.clear_interrupt();
    debugger.debug(Scene {
        run: run.clone(),
        test: run.test_name(),
        failure,
        timed_out,
        scope,
        has_setup_value,
        functions: remains.functions,
        modules: remains.modules,
    });
    cancel.clear_interrupt();
    run.set_capture(captured);
    run.set_remaining(left);
}

static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*import\s+"([^"]+)"\s+as\s+(\w+)\s*;?"#).expect("a valid regex")
});

/// The modules the top level of `text` (the script `shown`) imports, as
/// its `import` statements found them: for a script that failed, whose
/// own imports ended with its evaluation.
pub(crate) fn top_level_imports(
    engine: &Engine,
    text: &str,
    shown: &str,
) -> Vec<(String, SharedModule)> {
    IMPORT
        .captures_iter(text)
        .filter_map(|c| {
            let module = engine
                .module_resolver()
                .resolve(engine, Some(shown), &c[1], Position::NONE)
                .ok()?;
            Some((c[2].to_string(), module))
        })
        .collect()
}
