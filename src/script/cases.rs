//! Files of test cases: a script that defines functions named `test_*` is
//! a file of cases, each run on its own in a fresh engine: the file's top
//! level, then `setup()` if defined, then the case (given setup's value
//! when it takes an argument), then `teardown(ctx)` if defined, also when
//! the case failed or was skipped. A file without cases is one test.
//!
//! A [`Program`] is a file compiled once per run and shared, read-only, by
//! every case and worker thread. Its cases come from the compiled AST's
//! function list, sorted by name (as Python's unittest orders methods).
//! When the file has cases, one statement is appended to its AST: a
//! custom syntax, the driver, whose handler (registered afresh for each
//! run) calls setup, the case and teardown from inside the top level's own
//! evaluation, so that they see the modules the top level imported, and a
//! debugger sees the top level's variables ([`super::debug`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, EvalContext, FnAccess, Scope, AST};

use super::errors::{self, Failure};
use super::run::{lock, Run};

/// The custom syntax of the driver statement.
const DRIVER: &str = "vmscript_run_case";
/// The prefix of a case's function name.
const CASE_PREFIX: &str = "test_";

/// A script file compiled once for a whole run; see the module docs.
#[derive(Debug)]
pub struct Program {
    path: PathBuf,
    shown: String,
    compiled: Result<Compiled, Box<Failure>>,
}

#[derive(Debug)]
struct Compiled {
    /// The file's AST, with the driver statement appended when it has cases.
    ast: Arc<AST>,
    /// Each case's name and number of parameters, sorted by name.
    cases: Vec<(String, usize)>,
    has_setup: bool,
    /// teardown's number of parameters, when it is defined.
    teardown: Option<usize>,
}

impl Program {
    /// Reads and compiles `path`. A file that does not compile, or whose
    /// case functions are declared wrongly, is still a program: running
    /// it reports that error.
    pub fn load(path: &Path) -> Program {
        let shown = path.display().to_string();
        let compiled = super::compile(&super::base_engine(), path).and_then(|ast| {
            Compiled::new(ast, &shown).map_err(|m| Box::new(Failure::plain(&shown, "HostError", m)))
        });
        Program {
            path: path.to_path_buf(),
            shown,
            compiled,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's functions (none when it does not compile).
    pub fn functions(&self) -> AST {
        match &self.compiled {
            Ok(c) => c.ast.clone_functions_only(),
            Err(_) => AST::empty(),
        }
    }

    /// The names of its cases (`test_*` functions), sorted; empty for a
    /// file that is one test.
    pub fn cases(&self) -> Vec<String> {
        match &self.compiled {
            Ok(c) => c.cases.iter().map(|(n, _)| n.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Runs the whole file (`case` None) or one of its cases under `run`,
    /// on `engine`, which has the script API registered for `run`. The
    /// top level's variables are left in `scope`, also when it fails.
    pub fn execute(
        &self,
        engine: &mut Engine,
        run: &Arc<Run>,
        case: Option<&str>,
        scope: &mut Scope,
    ) -> Result<(), Box<Failure>> {
        let compiled = self.compiled.as_ref().map_err(|f| f.clone())?;
        let Some(case) = case else {
            if !compiled.cases.is_empty() {
                return Err(Box::new(Failure::plain(
                    &self.shown,
                    "HostError",
                    "this file defines test cases; run one of them (FILE::test_name)",
                )));
            }
            return engine
                .run_ast_with_scope(scope, &compiled.ast)
                .map_err(|e| Box::new(Failure::from_eval(&e, &self.shown)));
        };
        let Some(&(_, arity)) = compiled.cases.iter().find(|(n, _)| n == case) else {
            return Err(Box::new(Failure::plain(
                &self.shown,
                "HostError",
                format!("{}: no test case {case}", self.shown),
            )));
        };
        run.set_test_name(format!("{}::{case}", self.shown));
        let driver = Driver {
            shown: self.shown.clone(),
            case: case.to_string(),
            arity,
            has_setup: compiled.has_setup,
            teardown: compiled.teardown,
            run: run.clone(),
            functions: compiled.ast.clone_functions_only(),
        };
        let state = Arc::new(Mutex::new(DriveState::default()));
        let s = state.clone();
        engine
            .register_custom_syntax([DRIVER], false, move |ctx, _| {
                let ended = driver.drive(ctx);
                lock(&s).ended = Some(ended);
                Ok(Dynamic::UNIT)
            })
            .map_err(|e| {
                Failure::plain(
                    &self.shown,
                    "HostError",
                    format!("vmscript bug: the case driver: {e}"),
                )
            })?;
        let top = engine.run_ast_with_scope(scope, &compiled.ast);
        let ended = lock(&state).ended.take();
        match (top, ended) {
            (_, Some(ended)) => ended,
            (Err(e), None) => {
                let mut f = Failure::from_eval(&e, &self.shown);
                if f.kind != errors::SKIPPED {
                    f.context
                        .push("in the file's top level, which runs before each case".to_string());
                }
                Err(Box::new(f))
            }
            (Ok(()), None) => Err(Box::new(Failure::plain(
                &self.shown,
                "HostError",
                format!("the file's top level returned before {case} could run"),
            ))),
        }
    }
}

impl Compiled {
    fn new(ast: AST, shown: &str) -> Result<Compiled, String> {
        let mut cases = Vec::new();
        let mut has_setup = false;
        let mut teardown = None;
        for f in ast.iter_functions() {
            let n = f.params.len();
            match f.name {
                "setup" => {
                    if n != 0 {
                        return Err(format!("{shown}: setup() takes no parameters, not {n}"));
                    }
                    has_setup = true;
                }
                "teardown" => {
                    if n > 1 {
                        return Err(format!(
                            "{shown}: teardown takes one parameter (setup's value) or none, not {n}"
                        ));
                    }
                    teardown = Some(n);
                }
                name if name.starts_with(CASE_PREFIX) && f.access != FnAccess::Private => {
                    if n > 1 {
                        return Err(format!(
                            "{shown}: {name} takes {n} parameters; a test case takes one (setup's value) or none"
                        ));
                    }
                    cases.push((name.to_string(), n));
                }
                _ => {}
            }
        }
        cases.sort();
        cases.dedup_by(|a, b| a.0 == b.0);
        let ast = if cases.is_empty() {
            ast
        } else {
            let mut engine = super::base_engine();
            engine
                .register_custom_syntax([DRIVER], false, |_, _| Ok(Dynamic::UNIT))
                .map_err(|e| format!("vmscript bug: the case driver: {e}"))?;
            let mut driver = engine
                .compile(format!("{DRIVER};"))
                .map_err(|e| format!("vmscript bug: the case driver does not compile: {e}"))?;
            if let Some(source) = ast.source() {
                driver.set_source(source.to_string());
            }
            ast.merge(&driver)
        };
        Ok(Compiled {
            ast: Arc::new(ast),
            cases,
            has_setup,
            teardown,
        })
    }
}

/// How the driver ended, when the top level reached it.
#[derive(Default)]
struct DriveState {
    ended: Option<Result<(), Box<Failure>>>,
}

/// What the driver of one case needs.
struct Driver {
    shown: String,
    case: String,
    arity: usize,
    has_setup: bool,
    teardown: Option<usize>,
    run: Arc<Run>,
    /// The file's functions, for a debugger.
    functions: AST,
}

impl Driver {
    /// setup, the case, teardown; the first failure decides, a teardown
    /// failure after another is added to it.
    fn drive(&self, ctx: &mut EvalContext) -> Result<(), Box<Failure>> {
        let mut value = Dynamic::UNIT;
        if self.has_setup {
            match self.call(ctx, "setup", Vec::new()) {
                Ok(v) => value = v,
                Err(e) => {
                    // As unittest: no setup, no teardown.
                    let f = self.failure(&e, "setup", || {
                        format!("in setup(), so {} did not run", self.case)
                    });
                    self.debug(ctx, &f, None);
                    return Err(f);
                }
            }
        }
        let args = if self.arity == 1 {
            vec![value.clone()]
        } else {
            Vec::new()
        };
        let result = self
            .call(ctx, &self.case, args)
            .map(|_| ())
            .map_err(|e| self.failure(&e, &self.case, || format!("in {}", self.case)));
        if let Err(f) = &result {
            // Before teardown, which may stop the machines.
            self.debug(ctx, f, self.has_setup.then(|| value.clone()));
        }
        let Some(n) = self.teardown else {
            return result;
        };
        let cancel = self.run.cancel();
        if cancel.is_cancelled() {
            // Stopped by a signal (or past its timeout's grace): nothing
            // more may run, and the cleanup that follows kills every
            // machine.
            return result;
        }
        if cancel.expired().is_some() && self.run.config().debugger.is_none() {
            // Timed out: the machines are still up for the grace the
            // watchdog gives before it kills them, and teardown runs in
            // what remains of it, no longer interrupted.
            cancel.script_over();
        }
        let args = if n == 1 { vec![value] } else { Vec::new() };
        let torn = self.call(ctx, "teardown", args);
        match (result, torn) {
            (result, Ok(_)) => result,
            (Ok(()), Err(e)) => Err(self.failure(&e, "teardown", || {
                format!("in teardown(), after {} passed", self.case)
            })),
            (Err(mut f), Err(e)) => {
                let t = Failure::from_eval(&e, &self.shown);
                f.context.push(format!(
                    "teardown() failed too, at {}: {}: {}",
                    t.location(),
                    t.kind,
                    t.message.lines().next().unwrap_or("")
                ));
                Err(f)
            }
        }
    }

    /// Hands the failed case to the run's debugger, if it has one, with
    /// the file's top-level variables and imports and `setup_value`.
    fn debug(&self, ctx: &EvalContext, f: &Failure, setup_value: Option<Dynamic>) {
        if self.run.config().debugger.is_none() {
            return;
        }
        let modules = ctx
            .global_runtime_state()
            .scan_imports_raw()
            .map(|(alias, m)| (alias.to_string(), m.clone()))
            .collect();
        let remains = super::debug::Remains {
            scope: ctx.scope(),
            functions: self.functions.clone(),
            modules,
            setup_value,
        };
        super::debug::open(&self.run, f, remains);
    }

    fn call(
        &self,
        ctx: &mut EvalContext,
        name: &str,
        mut args: Vec<Dynamic>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut refs: Vec<&mut Dynamic> = args.iter_mut().collect();
        ctx.call_fn_raw(name, false, false, &mut refs)
    }

    /// `err`, raised by the call of `name`, as a failure that says which
    /// part of the case it came from (`label`) instead of where the
    /// driver called it.
    fn failure(
        &self,
        err: &EvalAltResult,
        name: &str,
        label: impl FnOnce() -> String,
    ) -> Box<Failure> {
        let mut f = Failure::from_eval(err, &self.shown);
        let wrapped = matches!(err, EvalAltResult::ErrorInFunctionCall(..));
        if wrapped {
            // The outermost call, last in the context, is the driver's.
            let called = format!("in function {name} called at ");
            if f.context.last().is_some_and(|c| c.starts_with(&called)) {
                f.context.pop();
            }
        } else {
            // Passed straight through (a skip, a timeout): its position is
            // the driver's, which is nowhere in the file; a stop says
            // where it was.
            let site = self.run.cancel().stopped_at();
            if !site.is_some_and(|s| f.kind != errors::SKIPPED && f.point_at(&s)) {
                f.line = None;
                f.column = None;
            }
        }
        if f.kind != errors::SKIPPED {
            f.context.push(label());
        }
        Box::new(f)
    }
}
