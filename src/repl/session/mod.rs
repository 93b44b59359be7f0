//! One REPL session: a Rhai engine with the whole script API, the
//! variables and functions defined so far, and the [`Run`] that owns every
//! machine the session starts. Knows nothing of terminals: the loop in
//! [`super`] reads lines, this runs them.
//!
//! State carries over between inputs as in Rhai's own REPL example: one
//! [`Scope`] for the variables and one [`AST`] holding every function
//! defined so far, merged with each new input before it runs. Modules
//! imported with `import "path" as name;` stay available under `name`;
//! the bundled ones are there from the start under their own names. The
//! QMP schema of each running machine is fetched on a thread of its own
//! (completion never waits on QEMU for long). The inputs that ran without error are kept for [`Session::save`]; the
//! functions of an input that failed are dropped with it.
//!
//! A session either owns its run ([`Session::new`], `vmscript repl`) or
//! takes over a failed test's ([`Session::for_scene`], `--debug-on-fail`):
//! its variables, functions, imports and machines.
//!
//! This file holds the session and its evaluation (inputs, imports,
//! `:load`, `:save`); `doc` answers `:doc`, `machines` lists and finds the
//! session's machines (`:vms`, `:console`), and `sources` is what Tab
//! completion sees, QMP schemas included.

mod doc;
mod machines;
mod sources;

pub use machines::{vms_table, VmInfo};

use sources::SchemaSlot;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use rhai::{Dynamic, Engine, OptimizationLevel, Position, Scope, AST};

use super::complete::{self, Function};
use crate::script::debug::SharedModule;
use crate::script::{self, docs, Cancel, Failure, QemuBinary, Run, RunConfig, RunReport, Scene};

/// How long the session's run may last: for ever, in effect. Waits that
/// default to "until the test's timeout" then wait until Ctrl-C.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 86400);

/// The name errors give for typed input.
const INPUT: &str = "<repl>";

/// What a session is started with.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The default QEMU binary (`--qemu`).
    pub qemu: Option<PathBuf>,
    /// Extra module folders (`--lib`).
    pub lib_dirs: Vec<PathBuf>,
    /// Where machine logs go; a temp dir removed at the end when `None`.
    pub artifacts: Option<PathBuf>,
}

/// One REPL session; see the module documentation.
pub struct Session {
    engine: Engine,
    scope: Scope<'static>,
    /// Every function defined so far, without statements.
    functions: AST,
    run: Arc<Run>,
    /// The inputs that ran without error, in order.
    inputs: Vec<String>,
    builtins: Vec<Function>,
    reference: Vec<docs::Entry>,
    std_signatures: Vec<String>,
    /// QMP schemas by machine (its address) with the pid they are of,
    /// fetched in the background.
    schemas: RefCell<HashMap<usize, (i32, SchemaSlot)>>,
    /// The modules scripts may name: each alias with its import path and
    /// its public functions. The stdlib's are there from the start.
    modules: BTreeMap<String, ModuleInfo>,
    /// The aliases an input imported (the others are the stdlib's, which
    /// a saved script must import itself).
    imported: BTreeSet<String>,
    lib_dirs: Vec<PathBuf>,
    /// Keeps the default artifacts dir until the session ends.
    _artifacts: Option<crate::script::temp::OwnedTempDir>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("run", &self.run)
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

/// A module a script may name.
#[derive(Debug, Clone)]
struct ModuleInfo {
    /// What `import` was given: `guest`, `lib/helpers`.
    path: String,
    functions: Vec<String>,
}

static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*import\s+"([^"]+)"\s+as\s+(\w+)\s*;?"#).expect("a valid regex")
});

impl Session {
    /// A session with its own temp dir and, unless given, artifacts dir.
    pub fn new(opts: SessionOptions) -> std::io::Result<Session> {
        let (artifacts, keep) = match opts.artifacts {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                (dir, None)
            }
            None => {
                let t = crate::script::temp::OwnedTempDir::new("vmscript-repl-")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let config = RunConfig {
            script: INPUT.into(),
            artifacts,
            timeout: SESSION_TIMEOUT,
            qemu: QemuBinary::resolve(opts.qemu),
            params: Default::default(),
            capture: false,
            lib_dirs: opts.lib_dirs.clone(),
            debugger: None,
        };
        let run = Arc::new(Run::new(config, Cancel::new())?);
        let mut session = Session::with_run(run, Scope::new(), AST::empty());
        session._artifacts = keep;
        Ok(session)
    }

    /// A session in a failed test: its run and machines, its top-level
    /// variables, its functions and the modules it imported.
    pub fn for_scene(scene: Scene) -> Session {
        let mut session = Session::with_run(scene.run, scene.scope, scene.functions);
        for (alias, module) in scene.modules {
            let path = module.id().unwrap_or(&alias).to_string();
            session.add_module(&alias, &path, module);
        }
        session
    }

    /// A session on `run` starting with `scope` and `functions`; the
    /// bundled modules are there without an import, under their own names,
    /// as `vmscript doc` lists them.
    fn with_run(run: Arc<Run>, scope: Scope<'static>, functions: AST) -> Session {
        let mut engine = script::engine(&run);
        // Variables of earlier inputs must not be folded into constants.
        engine.set_optimization_level(OptimizationLevel::None);
        let std_signatures = engine.gen_fn_signatures(true);
        let builtins = std_signatures
            .iter()
            .filter_map(|s| complete::parse_signature(s))
            .collect();
        let reference = docs::reference(&engine);
        let lib_dirs = run.config().lib_dirs.clone();
        let mut session = Session {
            engine,
            scope,
            functions,
            run,
            inputs: Vec::new(),
            builtins,
            reference,
            std_signatures,
            schemas: RefCell::default(),
            modules: BTreeMap::new(),
            imported: BTreeSet::new(),
            lib_dirs,
            _artifacts: None,
        };
        for name in script::stdlib::names() {
            session.register_module(name, name);
        }
        session
    }

    /// The session's run: its machines, its cancellation token.
    pub fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// The cancellation token, for the Ctrl-C handler.
    pub fn cancel(&self) -> Cancel {
        self.run.cancel().clone()
    }

    /// Runs one input; its variables, functions and imports stay for the
    /// next. On success it is kept for [`Session::save`].
    pub fn eval(&mut self, input: &str) -> Result<Dynamic, Box<Failure>> {
        let v = self.eval_as(input, INPUT)?;
        self.inputs.push(input.trim_end().to_string());
        Ok(v)
    }

    /// Runs a script file into the session, as if typed.
    pub fn load(&mut self, path: &Path) -> Result<Dynamic, Box<Failure>> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::plain(&shown, "HostError", format!("reading {shown}: {e}")))?;
        let v = self.eval_as(&text, &shown)?;
        self.inputs
            .push(format!("// :load {shown}\n{}", text.trim_end()));
        Ok(v)
    }

    fn eval_as(&mut self, input: &str, source: &str) -> Result<Dynamic, Box<Failure>> {
        self.run
            .check_cancelled()
            .map_err(|e| Failure::from_eval(&e, source))?;
        let ast = self
            .engine
            .compile_with_scope(&self.scope, input)
            .map_err(|e| Failure::syntax(source, &e))?;
        let program = self.functions.merge(&ast);
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &program)
            .map_err(|e| Box::new(Failure::from_eval(&e, source)))?;
        // Only functions of input that ran stay, as only that is saved.
        self.functions += ast.clone_functions_only();
        self.keep_imports(input);
        Ok(result)
    }

    /// Registers the modules `input` imported under their names, so that
    /// `name::f()` works in later inputs too.
    fn keep_imports(&mut self, input: &str) {
        for c in IMPORT.captures_iter(input) {
            if self.register_module(&c[2], &c[1]) {
                self.imported.insert(c[2].to_string());
            }
        }
    }

    /// Makes module `path` available as `alias::`; whether it loaded.
    fn register_module(&mut self, alias: &str, path: &str) -> bool {
        let resolved =
            self.engine
                .module_resolver()
                .resolve(&self.engine, None, path, Position::NONE);
        let Ok(module) = resolved else {
            return false;
        };
        self.add_module(alias, path, module);
        true
    }

    /// Makes `module`, imported as `path`, available as `alias::`.
    fn add_module(&mut self, alias: &str, path: &str, module: SharedModule) {
        let mut functions: Vec<String> = module
            .gen_fn_signatures_with_mapper(|s| s.into())
            .filter_map(|s| s.split_once('(').map(|(n, _)| n.to_string()))
            .filter(|n| !n.starts_with("anon$"))
            .collect();
        functions.sort();
        functions.dedup();
        self.modules.insert(
            alias.to_string(),
            ModuleInfo {
                path: path.to_string(),
                functions,
            },
        );
        self.engine.register_static_module(alias, module);
    }

    /// Writes the inputs that ran without error to `path` as a script;
    /// returns how many.
    pub fn save(&self, path: &Path) -> std::io::Result<usize> {
        let mut text = String::from(
            "// Saved from `vmscript repl`: the input that ran without error, in order.\n\n",
        );
        // A bundled module used without an import (the REPL has them all).
        for (alias, m) in &self.modules {
            let used = Regex::new(&format!(r"\b{}::", regex::escape(alias)))
                .is_ok_and(|re| self.inputs.iter().any(|i| re.is_match(i)));
            if used && !self.imported.contains(alias) {
                text.push_str(&format!("import \"{}\" as {alias};\n", m.path));
            }
        }
        for input in &self.inputs {
            text.push_str(&self.terminated(input));
            text.push('\n');
        }
        std::fs::write(path, text)?;
        Ok(self.inputs.len())
    }

    /// `input` with the `;` a script needs before the next statement (a
    /// REPL line may leave it out).
    fn terminated(&self, input: &str) -> String {
        let compiles = |t: &str| self.engine.compile(format!("{t}\n0")).is_ok();
        if compiles(input) {
            input.to_string()
        } else if compiles(&format!("{input};")) {
            format!("{input};")
        } else {
            format!("{input}\n;")
        }
    }

    /// Shuts down every machine still running and releases the run.
    pub fn finish(&self) -> RunReport {
        self.run.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::complete::Sources;
    use super::*;

    pub(super) fn session() -> Session {
        Session::new(SessionOptions::default()).unwrap()
    }

    pub(super) fn show(s: &mut Session, input: &str) -> String {
        match s.eval(input) {
            Ok(v) => super::super::show::value(&v).unwrap_or_default(),
            Err(f) => super::super::show::failure(&f),
        }
    }

    #[test]
    fn variables_and_functions_last_across_inputs() {
        let mut s = session();
        assert_eq!(show(&mut s, "let x = 40"), "");
        assert_eq!(show(&mut s, "fn add(a, b) { a + b }"), "");
        assert_eq!(show(&mut s, "add(x, 2)"), "42");
        assert_eq!(show(&mut s, "x += 1; x"), "41");
        assert_eq!(
            show(&mut s, "#{b: [1], a: \"t\"}"),
            "{\n  \"a\": \"t\",\n  \"b\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn an_error_is_one_line_and_the_session_goes_on() {
        let mut s = session();
        show(&mut s, "let x = 1");
        assert_eq!(
            show(&mut s, "throw #{kind: \"Timeout\", message: \"late\"}"),
            "Timeout: late"
        );
        assert!(show(&mut s, "let = 1").starts_with("SyntaxError: "));
        assert!(show(&mut s, "nope()").starts_with("ScriptError: Function not found: nope"));
        assert_eq!(show(&mut s, "x"), "1");
        assert!(show(&mut s, "fn g() { 2 } throw \"no\"").contains("no"));
        assert!(show(&mut s, "g()").contains("Function not found"));
    }

    #[test]
    fn save_writes_what_succeeded_as_a_script_that_compiles() {
        let mut s = session();
        show(&mut s, "let x = 1");
        show(&mut s, "oops(");
        show(&mut s, "fn f() {\n  x\n}");
        show(&mut s, "let m = #{a: 1}");
        show(&mut s, "m.a // the key");
        show(&mut s, "throw \"no\"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.rhai");
        assert_eq!(s.save(&path).unwrap(), 4);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("let x = 1;\nfn f() {\n  x\n}\nlet m = #{a: 1};\nm.a // the key\n;\n"),
            "{text}"
        );
        assert!(!text.contains("oops") && !text.contains("throw"));
        let api = script::api_functions();
        assert_eq!(
            script::check_file(&path, &api, &[]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bundled_modules_are_there_without_import_and_saved_with_one() {
        let mut s = session();
        assert!(s.modules().contains(&"guest".to_string()));
        let f = s.module_functions("guest");
        assert!(f.contains(&"run".to_string()) && f.contains(&"run_ok".to_string()));
        assert!(!f.iter().any(|n| n.starts_with("anon$")));
        assert_eq!(
            show(&mut s, "retry::fn_name_does_not_exist()")
                .split(':')
                .next(),
            Some("ScriptError")
        );
        show(&mut s, "let g = guest::create(#{ kernel: \"/k\" })");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.rhai");
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("import \"guest\" as guest;\nlet g = guest::create"),
            "{text}"
        );
        assert!(!text.contains("import \"retry\""), "{text}");
    }

    #[test]
    fn load_runs_a_file_into_the_session() {
        let mut s = session();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.rhai");
        std::fs::write(&path, "fn hello() { \"hi\" }\nlet loaded = true;\n").unwrap();
        let _ = s.load(&path).unwrap();
        assert_eq!(show(&mut s, "hello()"), "hi");
        assert_eq!(show(&mut s, "loaded"), "true");
        let bad = dir.path().join("bad.rhai");
        std::fs::write(&bad, "let a = 1;\nthrow \"x\";\n").unwrap();
        let f = s.load(&bad).unwrap_err();
        assert_eq!(f.location(), format!("{}:2:1", bad.display()));
    }

    #[test]
    fn imports_stay_available() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.rhai"), "fn three() { 3 }\n").unwrap();
        let mut s = Session::new(SessionOptions {
            lib_dirs: vec![dir.path().to_path_buf()],
            ..SessionOptions::default()
        })
        .unwrap();
        assert_eq!(show(&mut s, "import \"m\" as m;"), "");
        assert_eq!(show(&mut s, "m::three()"), "3");
    }
}
