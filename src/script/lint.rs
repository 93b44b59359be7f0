//! `vmscript check` beyond syntax: what would fail a run only once the
//! script reaches it, perhaps after a 30 s boot. It finds imports that
//! resolve nowhere, calls of functions and methods that exist nowhere (not
//! registered, not in Rhai's standard library, not defined in the script
//! or the imported module), calls with a number of arguments no overload
//! takes, and unknown keys in literal option maps of `machine(…)`,
//! `qtest_machine(…)`, `guest::boot(…)` and `guest::create(…)`.
//!
//! It reads the compiled AST and never runs anything. What it cannot see
//! it leaves alone: a name held in a variable (a function pointer called
//! as `f(x)`), a method named like a map key (a closure stored in a map),
//! and calls through `Fn("name")`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rhai::{ASTNode, Engine, Expr, Position, Stmt, AST};

use super::modules::{self, Folder, SearchPath};

/// One problem, at a position of the checked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Function names and the argument counts their overloads take.
pub type Arities = BTreeMap<String, BTreeSet<usize>>;

/// Rhai's own call forms, which no package registers.
const KEYWORDS: &[(&str, &[usize])] = &[
    ("print", &[0, 1]),
    ("debug", &[0, 1]),
    ("type_of", &[1]),
    ("eval", &[1]),
    ("Fn", &[1]),
    ("call", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("curry", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("is_shared", &[1]),
    ("is_def_fn", &[2, 3]),
    ("is_def_var", &[1]),
];

/// The option keys of stdlib functions that take a literal options map,
/// read from the function's own `let valid = [...]` list.
fn stdlib_option_keys(module: &str, function: &str) -> Option<Vec<String>> {
    match (module, function) {
        ("guest", "boot" | "create") => {
            let source = super::stdlib::get("guest")?;
            let start = source.find("let valid = [")? + "let valid = [".len();
            let end = start + source[start..].find(']')?;
            Some(
                source[start..end]
                    .split(',')
                    .map(|k| k.trim().trim_matches('"').to_string())
                    .filter(|k| !k.is_empty())
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Every function `engine` can call (Rhai's packages included), with the
/// argument counts of its overloads.
pub fn known_functions(engine: &Engine) -> Arities {
    let mut known = Arities::new();
    for sig in engine.gen_fn_signatures(true) {
        let Some((name, rest)) = sig.split_once('(') else {
            continue;
        };
        let params = rest.rsplit_once(')').map_or(rest, |(p, _)| p).trim();
        let n = if params.is_empty() {
            0
        } else {
            params.split(',').count()
        };
        // `get$x`/`set$x` are properties; operators are not calls.
        let name = name.trim();
        known.entry(name.to_string()).or_default().insert(n);
    }
    for (name, counts) in KEYWORDS {
        known
            .entry((*name).to_string())
            .or_default()
            .extend(counts.iter());
    }
    known
}

/// The nearest of `names` to `name`, when it is near enough to be a typo.
fn nearest<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    names
        .map(|n| (strsim::damerau_levenshtein(name, n), n))
        .filter(|(d, n)| *d <= 2.max(name.len() / 4) && *d < n.len().max(name.len()))
        .min_by_key(|(d, n)| (*d, n.len()))
        .map(|(_, n)| n)
}

fn did_you_mean(name: &str, candidates: &Arities) -> String {
    match nearest(name, candidates.keys()) {
        Some(n) => format!("; did you mean `{n}`?"),
        None => String::new(),
    }
}

/// The script functions of `ast` (private ones only when `private`).
fn script_functions(ast: &AST, private: bool) -> Arities {
    let mut out = Arities::new();
    for f in ast.iter_functions() {
        if private || f.access != rhai::FnAccess::Private {
            out.entry(f.name.to_string())
                .or_default()
                .insert(f.params.len());
        }
    }
    out
}

/// A call as the walk saw it (the AST's nodes live only during the walk).
struct Call {
    name: String,
    /// The first segment of `m::f`, if any.
    namespace: Option<String>,
    /// Arguments, the object of a method call included.
    args: usize,
    method: bool,
    pos: Position,
    /// The keys of each literal map among the arguments.
    maps: Vec<Vec<(String, Position)>>,
}

impl Call {
    fn new(x: &rhai::FnCallExpr, pos: Position, method: bool) -> Option<Call> {
        // Operators (`a + b`) are calls too, with a token; closures are
        // anonymous functions.
        if x.op_token.is_some() || x.name.starts_with("anon$") {
            return None;
        }
        Some(Call {
            name: x.name.to_string(),
            namespace: (!x.namespace.is_empty()).then(|| x.namespace.root().to_string()),
            args: x.args.len() + usize::from(method),
            method,
            pos,
            maps: x
                .args
                .iter()
                .filter_map(|a| match a {
                    Expr::Map(m, _) => Some(
                        m.0.iter()
                            .map(|(k, _)| (k.name.to_string(), k.pos))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        })
    }
}

/// What the walk collects before judging.
#[derive(Default)]
struct Seen {
    imports: Vec<(String, String, Position)>,
    calls: Vec<Call>,
    variables: BTreeSet<String>,
    map_keys: BTreeSet<String>,
}

/// Checks `ast`, compiled from the file at `path`, against `api` (the
/// functions of the full engine). Imports are looked up as a run would,
/// from the file's folder and `search`.
pub fn lint(ast: &AST, path: &Path, api: &Arities, search: &SearchPath) -> Vec<Finding> {
    let mut seen = Seen::default();
    ast.walk(&mut |nodes: &[ASTNode]| {
        match nodes.last() {
            Some(ASTNode::Stmt(Stmt::Import(x, pos))) => {
                if let Expr::StringConstant(name, _) = &x.0 {
                    seen.imports
                        .push((name.to_string(), x.1.name.to_string(), *pos));
                }
            }
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                seen.variables.insert(x.0.name.to_string());
            }
            Some(ASTNode::Expr(Expr::Variable(x, ..))) => {
                seen.variables.insert(x.1.to_string());
            }
            Some(ASTNode::Expr(Expr::Map(x, _))) => {
                seen.map_keys
                    .extend(x.0.iter().map(|(k, _)| k.name.to_string()));
            }
            Some(ASTNode::Expr(Expr::Property(x, _))) => {
                seen.map_keys.insert(x.2.to_string());
            }
            Some(ASTNode::Stmt(Stmt::FnCall(x, pos))) => {
                seen.calls.extend(Call::new(x, *pos, false));
            }
            Some(ASTNode::Expr(Expr::FnCall(x, pos))) => {
                seen.calls.extend(Call::new(x, *pos, false));
            }
            Some(ASTNode::Expr(Expr::MethodCall(x, pos))) => {
                seen.calls.extend(Call::new(x, *pos, true));
            }
            _ => {}
        }
        true
    });
    for f in ast.iter_functions() {
        seen.variables
            .extend(f.params.iter().map(|p| p.to_string()));
    }

    let mut findings = Vec::new();
    let mut found = |pos: Position, message: String| {
        findings.push(Finding {
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message,
        })
    };

    // Imports: each alias's public functions, or a finding.
    let folder = Folder::Dir(path.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut modules: BTreeMap<String, (String, Arities)> = BTreeMap::new();
    for (name, alias, pos) in &seen.imports {
        let located = match modules::locate(name, &folder, search) {
            Ok(at) => at,
            Err(e) => {
                found(*pos, format!("import {name:?}: {e}"));
                continue;
            }
        };
        match modules::compile_cached(&super::base_engine(), &located) {
            Ok(m) => {
                let module_name = match located.key {
                    modules::Key::Stdlib(n) => n.to_string(),
                    _ => String::new(),
                };
                modules.insert(alias.clone(), (module_name, script_functions(&m, false)));
            }
            Err(e) => found(*pos, format!("import {name:?}: {e}")),
        }
    }

    let own = script_functions(ast, true);
    let mut everything = api.clone();
    for (n, a) in &own {
        everything.entry(n.clone()).or_default().extend(a);
    }

    for call in &seen.calls {
        let (name, args, pos) = (call.name.as_str(), call.args, call.pos);
        if let Some(root) = &call.namespace {
            if root == "global" {
                check_arity(&mut found, pos, name, args, &own, "");
                continue;
            }
            let Some((module_name, functions)) = modules.get(root) else {
                // An import that failed is reported already; else the
                // namespace is unknown.
                if !seen.imports.iter().any(|(_, a, _)| a == root) {
                    found(
                        pos,
                        format!("{root}::{name}: no module is imported as {root}"),
                    );
                }
                continue;
            };
            if !functions.contains_key(name) {
                found(
                    pos,
                    format!(
                        "{root}::{name} is not a function of the module imported as {root}{}",
                        did_you_mean(name, functions)
                    ),
                );
                continue;
            }
            check_arity(&mut found, pos, name, args, functions, &format!("{root}::"));
            if let Some(valid) = stdlib_option_keys(module_name, name) {
                option_keys(&mut found, call, &valid, &format!("{root}::{name}"));
            }
            continue;
        }
        if seen.variables.contains(name) || (call.method && seen.map_keys.contains(name)) {
            continue;
        }
        if !everything.contains_key(name) {
            let what = if call.method { "method" } else { "function" };
            found(
                pos,
                format!(
                    "no {what} `{name}` exists (not in the API, Rhai's library, this script or its imports){}",
                    did_you_mean(name, &everything)
                ),
            );
            continue;
        }
        check_arity(&mut found, pos, name, args, &everything, "");
        if matches!(name, "machine" | "qtest_machine") {
            let valid: Vec<String> = super::machine_api::MACHINE_OPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect();
            option_keys(&mut found, call, &valid, name);
        }
    }
    findings.sort_by_key(|f| (f.line, f.column));
    findings.dedup();
    findings
}

fn check_arity(
    found: &mut impl FnMut(Position, String),
    pos: Position,
    name: &str,
    args: usize,
    known: &Arities,
    prefix: &str,
) {
    if let Some(counts) = known.get(name) {
        if !counts.contains(&args) {
            let takes: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
            found(
                pos,
                format!(
                    "{prefix}{name} is called with {args} argument{}, but it takes {}",
                    if args == 1 { "" } else { "s" },
                    takes.join(" or ")
                ),
            );
        }
    }
}

/// Unknown keys in a literal map passed to `what`.
fn option_keys(
    found: &mut impl FnMut(Position, String),
    call: &Call,
    valid: &[String],
    what: &str,
) {
    for (key, pos) in call.maps.iter().flatten() {
        if !valid.iter().any(|v| v == key) {
            let hint = nearest(key, valid.iter())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            found(
                *pos,
                format!(
                    "{what}: unknown option `{key}`{hint}; valid options are: {}",
                    valid.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_text(text: &str) -> Vec<String> {
        let mut engine = super::super::base_engine();
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        let ast = engine.compile(text).unwrap();
        let api = super::super::api_functions();
        let dir = tempfile::tempdir().unwrap();
        lint(
            &ast,
            &dir.path().join("t.rhai"),
            &api,
            &SearchPath::from_env(&[]),
        )
        .into_iter()
        .map(|f| format!("{}:{}: {}", f.line, f.column, f.message))
        .collect()
    }

    #[test]
    fn a_misspelt_method_names_the_nearest() {
        let f = lint_text("let vm = machine();\nvm.lanch();\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("2:4: no method `lanch`"), "{f:?}");
        assert!(f[0].ends_with("did you mean `launch`?"), "{f:?}");
    }

    #[test]
    fn correct_scripts_have_no_findings() {
        let f = lint_text(
            r#"
import "guest" as g;
import "retry" as retry;
fn helper(a, b) { a + b }
let vm = machine(#{ args: ["-M", "none"], name: "x" });
let f = |x| x * 2;
print(f.call(2) + helper(1, 2) + global::helper(3, 4));
let m = #{ act: || 1 };
m.act();
let s = "a b"; s.trim(); let parts = s.split(" ");
retry::poll(|| true, 1);
let vm2 = g::create(#{ name: "g" });
type_of(vm2);
"#,
        );
        assert_eq!(f, Vec::<String>::new());
    }

    #[test]
    fn unknown_functions_imports_namespaces_and_arities_are_found() {
        let f = lint_text(
            r#"
import "no_such_module" as nope;
import "guest" as guest;
guest::rnu(());
guest::run_ok();
event_wiat(1);
assert_eq(1);
other::f();
"#,
        );
        let text = f.join("\n");
        assert!(text.contains("2:1: import \"no_such_module\""), "{text}");
        assert!(
            text.contains("4:8: guest::rnu is not a function of the module imported as guest; did you mean `run`?"),
            "{text}"
        );
        assert!(
            text.contains("5:8: guest::run_ok is called with 0 arguments, but it takes"),
            "{text}"
        );
        assert!(text.contains("6:1: no function `event_wiat`"), "{text}");
        assert!(
            text.contains("7:1: assert_eq is called with 1 argument, but it takes 2 or 3"),
            "{text}"
        );
        assert!(
            text.contains("8:8: other::f: no module is imported as other"),
            "{text}"
        );
        assert_eq!(f.len(), 6, "{text}");
    }

    #[test]
    fn unknown_keys_in_literal_option_maps_are_found() {
        let f = lint_text(
            r#"
import "guest" as guest;
let vm = machine(#{ argz: [] });
let q = qtest_machine((), #{ name: "q", wraper: [] });
let g = guest::boot(#{ memroy: 256, kernel: "k" });
"#,
        );
        let text = f.join("\n");
        assert!(
            text.contains("3:21: machine: unknown option `argz` (did you mean `args`?)"),
            "{text}"
        );
        assert!(
            text.contains("qtest_machine: unknown option `wraper` (did you mean `wrapper`?)"),
            "{text}"
        );
        assert!(
            text.contains("guest::boot: unknown option `memroy` (did you mean `memory`?)"),
            "{text}"
        );
        assert_eq!(f.len(), 3, "{text}");
    }

    #[test]
    fn the_guest_option_list_is_read_from_the_stdlib() {
        let keys = stdlib_option_keys("guest", "boot").unwrap();
        assert!(keys.contains(&"kernel".to_string()), "{keys:?}");
        assert!(keys.contains(&"memory".to_string()), "{keys:?}");
    }
}
