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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;
use std::time::Instant;

use regex::Regex;
use rhai::{Dynamic, Engine, OptimizationLevel, Position, Scope, AST};
use serde_json::Value;

use super::complete::{self, Function, Sources};
use super::schema::Schema;
use crate::machine::{Console, InterruptHandle, Machine};
use crate::script::debug::SharedModule;
use crate::script::machine_api::MachineRef;
use crate::script::run::SharedMachine;
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

/// A machine of the session, for `:vms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub pid: Option<i32>,
    /// `running`, `paused`, … (QEMU's run state), `exited (N)` or `not launched`.
    pub status: String,
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

/// A QMP schema being fetched, or fetched.
enum SchemaSlot {
    Pending(mpsc::Receiver<Schema>),
    Ready(Rc<Schema>),
}

/// How long Tab waits for a schema being fetched before it offers nothing
/// (the next Tab looks again).
const SCHEMA_WAIT: Duration = Duration::from_secs(1);

/// How long fetching a schema may keep the machine's monitor busy.
const SCHEMA_DEADLINE: Duration = Duration::from_secs(3);

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

    /// The signatures and documentation of `name` (`Machine.name` for a
    /// property), from the engine's metadata and the session's functions.
    pub fn doc(&self, name: &str) -> Option<String> {
        if name.contains("::") || self.modules.contains_key(name) {
            return self.module_doc(name);
        }
        if let Some(e) = self.reference.iter().find(|e| e.name == name) {
            return Some(entry_text(e));
        }
        let mut out = String::new();
        for f in self.functions.iter_functions().filter(|f| f.name == name) {
            for c in f.comments.iter() {
                out.push_str(c);
                out.push('\n');
            }
            out.push_str(&format!("fn {f}\n"));
        }
        let prefix = format!("{name}(");
        for s in self
            .std_signatures
            .iter()
            .filter(|s| s.starts_with(&prefix))
        {
            out.push_str(s);
            out.push('\n');
        }
        if out.is_empty() {
            // A module of the project that no input imported yet.
            return self.module_doc(name);
        }
        Some(out)
    }

    /// `:doc MODULE` and `:doc MODULE::f`, as `vmscript doc MODULE` shows
    /// them. A module is an alias of the session, else found as `import`
    /// finds it.
    fn module_doc(&self, name: &str) -> Option<String> {
        let (module, function) = match name.split_once("::") {
            Some((m, f)) => (m, Some(f)),
            None => (name, None),
        };
        let path = self
            .modules
            .get(module)
            .map_or(module.to_string(), |m| m.path.clone());
        let doc = script::module_docs(&path, &self.lib_dirs).ok()?;
        let Some(f) = function else {
            return Some(script::docs::render_module(&doc));
        };
        let wanted = format!("{path}::{f}");
        doc.functions
            .iter()
            .find(|e| e.name == wanted)
            .map(entry_text)
    }

    /// Starts fetching the QMP schema of every running machine that has
    /// none yet, so that it is there by the time Tab asks.
    pub fn prefetch_schemas(&self) {
        for m in self.run.machines() {
            let _ = self.start_schema(&m);
        }
    }

    /// Starts fetching the schema of `machine` unless it is in or coming;
    /// returns its key, `None` when the machine is not running (or busy
    /// with no schema asked for yet).
    fn start_schema(&self, machine: &SharedMachine) -> Option<usize> {
        let key = Arc::as_ptr(machine) as usize;
        let mut schemas = self.schemas.borrow_mut();
        // Busy: fetching its schema, say; what was asked for stands.
        let Ok(m) = machine.try_lock() else {
            return schemas.contains_key(&key).then_some(key);
        };
        let pid = m.get_pid().filter(|_| m.is_running())?;
        if schemas.get(&key).is_some_and(|(p, _)| *p == pid) {
            return Some(key);
        }
        let slot = SchemaSlot::Pending(fetch_schema(machine.clone(), m.interrupt_handle()));
        schemas.insert(key, (pid, slot));
        Some(key)
    }

    /// The session's machines, oldest first.
    pub fn vms(&self) -> Vec<VmInfo> {
        self.run
            .machines()
            .iter()
            .map(|m| match m.try_lock() {
                Ok(mut m) => info(&mut m),
                Err(_) => VmInfo {
                    name: "?".into(),
                    pid: None,
                    status: "busy".into(),
                },
            })
            .collect()
    }

    /// The serial console of the machine named `name` (or held by the
    /// variable `name`), for `:console`. Waits for a machine that is busy
    /// fetching its schema (for at most [`SCHEMA_DEADLINE`]): no input
    /// runs while a command does.
    pub fn console(&self, name: &str) -> Result<(String, Console), String> {
        let by_name = self
            .run
            .machines()
            .into_iter()
            .find(|m| script::run::lock(m).name() == name);
        let by_variable = || {
            let v = self.scope.get(name)?;
            v.read_lock::<MachineRef>().map(|m| m.machine().clone())
        };
        let Some(machine) = by_name.or_else(by_variable) else {
            let names: Vec<String> = self.vms().into_iter().map(|v| v.name).collect();
            return Err(match names.is_empty() {
                true => format!("no machine {name}: the session has none yet"),
                false => format!("no machine {name}; the machines are {}", names.join(", ")),
            });
        };
        let m = script::run::lock(&machine);
        if !m.is_running() {
            return Err(format!("machine {} is not running", m.name()));
        }
        m.console_socket()
            .map(|c| (m.name().to_string(), c))
            .map_err(|e| format!("machine {}: {e}", m.name()))
    }

    /// Shuts down every machine still running and releases the run.
    pub fn finish(&self) -> RunReport {
        self.run.finish()
    }

    /// The machine held by variable `name`, else the latest running one.
    fn machine_for(&self, name: Option<&str>) -> Option<SharedMachine> {
        if let Some(v) = name.and_then(|n| self.scope.get(n)) {
            if let Some(m) = v.read_lock::<MachineRef>() {
                return Some(m.machine().clone());
            }
        }
        self.run
            .machines()
            .into_iter()
            .rev()
            .find(|m| m.try_lock().is_ok_and(|m| m.is_running()))
    }
}

fn info(m: &mut Machine) -> VmInfo {
    let status = if m.is_running() {
        m.command("query-status", None, true)
            .ok()
            .and_then(|s| s.get("status").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "running".into())
    } else if let Some(code) = m.exitcode() {
        format!("exited ({code})")
    } else {
        "not launched".into()
    };
    VmInfo {
        name: m.name().to_string(),
        pid: m.get_pid(),
        status,
    }
}

/// `:vms` as a table.
pub fn vms_table(vms: &[VmInfo]) -> String {
    if vms.is_empty() {
        return "no machines yet: let vm = machine(); vm.launch();".into();
    }
    let width = vms.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:>8}  STATUS", "NAME", "PID");
    for v in vms {
        let pid = v.pid.map_or("-".to_string(), |p| p.to_string());
        out.push_str(&format!("\n{:width$}  {pid:>8}  {}", v.name, v.status));
    }
    out
}

impl Sources for Session {
    fn functions(&self) -> Vec<Function> {
        let mut out = self.builtins.clone();
        out.extend(self.functions.iter_functions().map(|f| Function {
            name: f.name.to_string(),
            receiver: None,
            property: false,
        }));
        out
    }

    fn variables(&self) -> Vec<(String, String)> {
        self.scope
            .iter_raw()
            .map(|(name, _, v)| {
                let ty = if v.is_shared() {
                    v.flatten_clone().type_name()
                } else {
                    v.type_name()
                };
                (name.to_string(), self.engine.map_type_name(ty).to_string())
            })
            .collect()
    }

    fn map_keys(&self, variable: &str) -> Vec<String> {
        self.scope
            .get(variable)
            .and_then(|v| {
                v.read_lock::<rhai::Map>()
                    .map(|m| m.keys().map(|k| k.to_string()).collect())
            })
            .unwrap_or_default()
    }

    /// Never waits on QEMU for long: the schema is fetched on a thread of
    /// its own, which a stopped QEMU cannot hold past [`SCHEMA_DEADLINE`];
    /// until it is in, Tab offers nothing.
    fn schema(&self, receiver: Option<&str>) -> Option<Rc<Schema>> {
        let machine = self.machine_for(receiver)?;
        let key = self.start_schema(&machine)?;
        let mut schemas = self.schemas.borrow_mut();
        let (_, slot) = schemas.get_mut(&key)?;
        if let SchemaSlot::Pending(rx) = slot {
            match rx.recv_timeout(SCHEMA_WAIT) {
                // Nothing came (a QEMU that did not answer in time): ask
                // again at the next Tab.
                Ok(s) if s.commands.is_empty() => {
                    schemas.remove(&key);
                    return None;
                }
                Ok(s) => *slot = SchemaSlot::Ready(Rc::new(s)),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                // The fetch found no machine to ask: ask again next time.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    schemas.remove(&key);
                    return None;
                }
            }
        }
        match slot {
            SchemaSlot::Ready(s) => Some(s.clone()),
            SchemaSlot::Pending(_) => None,
        }
    }

    fn modules(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    fn module_functions(&self, name: &str) -> Vec<String> {
        self.modules
            .get(name)
            .map(|m| m.functions.clone())
            .unwrap_or_default()
    }
}

/// Asks `machine` for its QMP schema on a thread of its own. A QEMU that
/// does not answer (stopped with SIGSTOP, say) is given up on after
/// [`SCHEMA_DEADLINE`]: the wait is interrupted, which frees the machine
/// for the next input; its schema then stays empty for the session.
fn fetch_schema(machine: SharedMachine, interrupt: InterruptHandle) -> mpsc::Receiver<Schema> {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::new(AtomicBool::new(false));
    let (finished, giving_up) = (done.clone(), gave_up.clone());
    let _ = std::thread::Builder::new()
        .name("repl-schema-deadline".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed() < SCHEMA_DEADLINE {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !finished.load(Ordering::SeqCst) {
                giving_up.store(true, Ordering::SeqCst);
                interrupt.interrupt();
            }
        });
    let _ = std::thread::Builder::new()
        .name("repl-schema".into())
        .spawn(move || {
            let schema = {
                let mut m = script::run::lock(&machine);
                schema_of(&mut m, &gave_up)
            };
            done.store(true, Ordering::SeqCst);
            let _ = tx.send(schema);
        });
    rx
}

/// The schema of a running machine, from `query-qmp-schema`, else from
/// `query-commands` and `query-events` (names only); what it has when
/// `gave_up` is set.
fn schema_of(m: &mut Machine, gave_up: &AtomicBool) -> Schema {
    let mut schema = match m.command("query-qmp-schema", None, true) {
        Ok(Value::Array(entries)) => Schema::from_entries(&entries),
        _ => Schema::default(),
    };
    if gave_up.load(Ordering::SeqCst) {
        return Schema::default();
    }
    if schema.commands.is_empty() {
        if let Ok(Value::Array(cmds)) = m.command("query-commands", None, true) {
            schema.add_command_names(&cmds);
        }
    }
    if schema.events.is_empty() && !gave_up.load(Ordering::SeqCst) {
        if let Ok(Value::Array(evs)) = m.command("query-events", None, true) {
            schema.events = evs
                .iter()
                .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            schema.events.sort();
        }
    }
    schema
}

/// `:doc`'s text of one documented function: its signatures, then its
/// doc lines indented.
fn entry_text(e: &script::docs::Entry) -> String {
    let mut out = String::new();
    for s in &e.signatures {
        out.push_str(s);
        out.push('\n');
    }
    for d in &e.docs {
        out.push_str("    ");
        out.push_str(d);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(SessionOptions::default()).unwrap()
    }

    fn show(s: &mut Session, input: &str) -> String {
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
    fn doc_shows_signatures_and_documentation() {
        let mut s = session();
        let d = s.doc("event_wait").unwrap();
        assert!(
            d.contains("event_wait(vm: Machine, name: String) -> Map"),
            "{d}"
        );
        assert!(d.contains("    Waits up to 60s"), "{d}");
        assert!(s
            .doc("Machine.name")
            .unwrap()
            .contains("The machine's name"));
        show(&mut s, "/// Doubles.\nfn twice(x) { x * 2 }");
        assert_eq!(s.doc("twice").unwrap(), "/// Doubles.\nfn twice(x)\n");
        assert!(s.doc("len").unwrap().contains("len(string: string)"));
        assert_eq!(s.doc("no_such_function"), None);
    }

    #[test]
    fn doc_shows_modules_and_their_functions_as_vmscript_doc_does() {
        let s = session();
        let whole = s.doc("guest").unwrap();
        assert_eq!(
            whole,
            script::docs::render_module(&script::module_docs("guest", &[]).unwrap())
        );
        let f = s.doc("guest::run_ok").unwrap();
        assert!(f.starts_with("guest::run_ok(vm, cmd)\n"), "{f}");
        assert!(!f.contains("guest::run("), "{f}");
        assert_eq!(s.doc("guest::no_such"), None);
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

    #[test]
    fn completion_sees_the_sessions_variables_and_functions() {
        let mut s = session();
        show(&mut s, "let st = #{status: \"running\"}; fn helper() {}");
        let (_, ctx) = complete::context("st.sta");
        let c = complete::candidates(&ctx, &s);
        assert_eq!(
            c.iter().map(|p| p.replacement.as_str()).collect::<Vec<_>>(),
            ["status"]
        );
        let (_, ctx) = complete::context("hel");
        let c = complete::candidates(&ctx, &s);
        assert_eq!(c[0].replacement, "helper(");
        let vars = s.variables();
        assert_eq!(vars, [("st".to_string(), "map".to_string())]);
        assert!(s
            .functions()
            .iter()
            .any(|f| f.name == "event_wait" && f.receiver.as_deref() == Some("Machine")));
        assert!(s.schema(None).is_none());
    }
}
