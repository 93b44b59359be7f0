//! Documentation of the script API and of script modules, printed by
//! `vmscript doc` as text or as the Markdown of `docs/reference.md`.
//!
//! The API's docs are attached where each function is registered and read
//! back from the engine's own metadata, so the reference lists exactly what
//! a script can call: bindings register through [`func`] (or [`getter`])
//! with a signature such as
//! `"event_wait(vm: Machine, name: String, timeout: secs) -> Map"` and a
//! one-line doc; [`reference`] groups the overloads of each name. A
//! module's docs come from its source: its `//!` lines and the `///`
//! comments of its public functions ([`module_doc`]).

use std::collections::BTreeMap;

use rhai::{Engine, FnAccess, FuncRegistration, AST};

/// A registration carrying `signature`'s parameter names and types and
/// `doc` as its doc comment. The signature is `name(p: T, …) -> R`; the
/// `-> R` is left out for functions returning nothing.
pub fn func(signature: &str, doc: &str) -> FuncRegistration {
    let (name, params) = split_signature(signature);
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([format!("/// {doc}")])
        .with_volatility(true)
}

/// A property getter `vm.prop`, documented like [`func`].
pub fn getter(this: &str, prop: &str, ret: &str, doc: &str) -> FuncRegistration {
    FuncRegistration::new_getter(prop)
        .with_params_info([format!("{}: {this}", this.to_lowercase()), ret.to_string()])
        .with_comments([format!("/// {doc}")])
        .with_volatility(true)
}

/// `("name", ["a: T", …, "R"])` from `"name(a: T, …) -> R"`.
fn split_signature(signature: &str) -> (&str, Vec<String>) {
    let Some((name, rest)) = signature.split_once('(') else {
        return (signature.trim(), Vec::new());
    };
    let (params, ret) = match rest.rsplit_once(')') {
        Some((p, r)) => (p, r.trim().strip_prefix("->").map(str::trim)),
        None => (rest, None),
    };
    let mut info: Vec<String> = params
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    info.extend(ret.map(str::to_string));
    (name.trim(), info)
}

/// One documented name and its overloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// How a script writes it: `event_wait` or `Machine.name` for a property.
    pub name: String,
    /// Every overload's signature.
    pub signatures: Vec<String>,
    /// The doc lines, without `///`, each distinct one once.
    pub docs: Vec<String>,
}

/// Every function registered on `engine` (Rhai's standard library aside),
/// sorted by name.
pub fn reference(engine: &Engine) -> Vec<Entry> {
    let json = engine.gen_fn_metadata_to_json(false).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut by_name: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    let functions = value
        .get("functions")
        .and_then(|f| f.as_array())
        .cloned()
        .unwrap_or_default();
    for f in functions {
        let text = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let raw = text("name");
        let mut signature = text("signature");
        let param_type = |i: usize| {
            f.pointer(&format!("/params/{i}/type"))
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let name = if let Some(prop) = raw.strip_prefix("get$") {
            let this = param_type(0);
            signature = format!("{this}.{prop} -> {}", text("returnType"));
            format!("{this}.{prop}")
        } else if let Some(prop) = raw.strip_prefix("set$") {
            let this = param_type(0);
            signature = format!("{this}.{prop} = {}", param_type(1));
            format!("{this}.{prop}")
        } else {
            raw
        };
        let docs: Vec<String> = f
            .get("docComments")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .flat_map(|d| {
                d.lines()
                    .map(|l| l.trim_start_matches('/').trim().to_string())
            })
            .collect();
        by_name.entry(name).or_default().push((signature, docs));
    }
    // The engine lists functions in hash order: sort the overloads (by
    // arity, then text) and take their docs in that order, so the
    // reference is the same on every run.
    by_name
        .into_iter()
        .map(|(name, mut overloads)| {
            overloads.sort_by_key(|(s, _)| (s.matches(',').count(), s.clone()));
            let mut docs: Vec<String> = Vec::new();
            for d in overloads.iter().flat_map(|(_, d)| d) {
                if !docs.contains(d) {
                    docs.push(d.clone());
                }
            }
            Entry {
                name,
                signatures: overloads.into_iter().map(|(s, _)| s).collect(),
                docs,
            }
        })
        .collect()
}

/// What the reference says before the functions.
const PREAMBLE: &str = "\
The vmscript script API. Types: `secs` is seconds as int or float; `any` is
any value; a Map is an object map #{...}; `()` stands for an absent value.
Errors are thrown as maps #{kind, message, ...}, so a script can catch one
kind: `try { ... } catch (e) { if e.kind == \"Timeout\" { ... } }`. Kinds:
QEMUMachineError, QEMUMachineAddDeviceError, VMLaunchFailure (with exitcode,
command, output), AbnormalShutdown, MonitorResponseError (with reply, class,
desc), QMPError (connection trouble), Timeout, ConsoleError, AssertionFailed,
HostError. An uncaught error is reported at the script's FILE:LINE:COL;
there, Rhai's own errors and thrown strings show as ScriptError, and syntax
errors as SyntaxError.

";

/// The reference as text: each signature, then its doc indented.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from(PREAMBLE);
    for e in entries {
        render_entry(&mut out, e);
    }
    out
}

/// A documented module: `import "NAME" as NAME;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDoc {
    /// The name it is imported by.
    pub name: String,
    /// Where it was found: a path, or `<stdlib>/NAME.rhai`.
    pub source: String,
    /// Its `//!` lines, without the `//!`.
    pub doc: Vec<String>,
    /// Its public functions as `NAME::f`, sorted by name.
    pub functions: Vec<Entry>,
}

/// The documentation of module `name` compiled as `ast`.
pub fn module_doc(name: &str, source: &str, ast: &AST) -> ModuleDoc {
    let doc = ast
        .doc()
        .lines()
        .map(|l| strip_leader(l.trim_start(), "//!"))
        .collect();
    let mut by_name: BTreeMap<String, Vec<(usize, String, Vec<String>)>> = BTreeMap::new();
    for f in ast.iter_functions() {
        // Closures are compiled into `anon$…` functions: not the API.
        if f.access == FnAccess::Private || f.name.starts_with("anon$") {
            continue;
        }
        let signature = format!("{name}::{}({})", f.name, f.params.join(", "));
        let lines = f.comments.iter().flat_map(|c| doc_lines(c)).collect();
        by_name
            .entry(format!("{name}::{}", f.name))
            .or_default()
            .push((f.params.len(), signature, lines));
    }
    let functions = by_name
        .into_iter()
        .map(|(name, mut overloads)| {
            overloads.sort();
            let mut docs: Vec<String> = Vec::new();
            let mut paragraphs: Vec<&Vec<String>> = Vec::new();
            for (_, _, lines) in &overloads {
                if lines.is_empty() || paragraphs.contains(&lines) {
                    continue;
                }
                if !docs.is_empty() {
                    docs.push(String::new());
                }
                docs.extend(lines.iter().cloned());
                paragraphs.push(lines);
            }
            Entry {
                name,
                signatures: overloads.iter().map(|(_, s, _)| s.clone()).collect(),
                docs,
            }
        })
        .collect();
    ModuleDoc {
        name: name.to_string(),
        source: source.to_string(),
        doc,
        functions,
    }
}

/// `line` without `leader` and the one space after it.
fn strip_leader(line: &str, leader: &str) -> String {
    let rest = line.strip_prefix(leader).unwrap_or(line);
    rest.strip_prefix(' ')
        .unwrap_or(rest)
        .trim_end()
        .to_string()
}

/// The lines of one doc comment: `///` lines or a `/** */` block.
fn doc_lines(comment: &str) -> Vec<String> {
    if let Some(block) = comment.strip_prefix("/**") {
        let block = block.strip_suffix("*/").unwrap_or(block);
        let mut lines: Vec<String> = block
            .lines()
            .map(|l| strip_leader(l.trim_start(), "*"))
            .collect();
        while lines.first().is_some_and(String::is_empty) {
            lines.remove(0);
        }
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        return lines;
    }
    comment
        .lines()
        .map(|l| strip_leader(l.trim_start(), "///"))
        .collect()
}

/// What `vmscript doc` says before the modules.
const MODULES_PREAMBLE: &str = "\
`import \"NAME\" as NAME;` finds a module in the script's folder, then each
`--lib` folder and `$VMSCRIPT_PATH` entry, then among these bundled ones.";

/// One module as text: its name, docs, then each function like [`render`].
pub fn render_module(m: &ModuleDoc) -> String {
    let mut out = format!("module {} ({})\n", m.name, m.source);
    for d in &m.doc {
        out.push_str(indent(d).as_str());
    }
    out.push('\n');
    for e in &m.functions {
        render_entry(&mut out, e);
    }
    out
}

/// The whole reference as text: the API, then the modules.
pub fn render_all(entries: &[Entry], modules: &[ModuleDoc]) -> String {
    let mut out = render(entries);
    if !modules.is_empty() {
        out.push_str("MODULES\n\n");
        out.push_str(MODULES_PREAMBLE);
        out.push_str("\n\n");
        for m in modules {
            out.push_str(&render_module(m));
        }
    }
    out
}

fn indent(line: &str) -> String {
    if line.is_empty() {
        "\n".to_string()
    } else {
        format!("    {line}\n")
    }
}

fn render_entry(out: &mut String, e: &Entry) {
    for s in &e.signatures {
        out.push_str(s);
        out.push('\n');
    }
    for d in &e.docs {
        out.push_str(&indent(d));
    }
    out.push('\n');
}

/// The reference as Markdown (`docs/reference.md`): the API, then each
/// module with its doc comments, which are Markdown already.
pub fn render_markdown(entries: &[Entry], modules: &[ModuleDoc]) -> String {
    let mut out = String::from(
        "# vmscript reference\n\n\
         <!-- Generated by `vmscript doc --format markdown > docs/reference.md`; \
         the tests fail when it is stale. -->\n\n",
    );
    out.push_str("- [The script API](#the-script-api)\n- [Modules](#modules):");
    for (i, m) in modules.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        out.push_str(&format!("{sep}[{0}](#{0})", m.name));
    }
    out.push_str("\n\n## The script API\n\n");
    out.push_str(&PREAMBLE.replace("#{...}", "`#{...}`"));
    for e in entries {
        out.push_str(&format!("### `{}`\n\n", e.name));
        markdown_entry(&mut out, e);
    }
    out.push_str("## Modules\n\n");
    out.push_str(MODULES_PREAMBLE);
    out.push_str("\n\n");
    for m in modules {
        out.push_str(&format!("### {}\n\n", m.name));
        for d in &m.doc {
            out.push_str(d);
            out.push('\n');
        }
        out.push('\n');
        for e in &m.functions {
            out.push_str(&format!("#### `{}`\n\n", e.name));
            markdown_entry(&mut out, e);
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn markdown_entry(out: &mut String, e: &Entry) {
    out.push_str("```\n");
    for s in &e.signatures {
        out.push_str(s);
        out.push('\n');
    }
    out.push_str("```\n\n");
    for d in &e.docs {
        out.push_str(d);
        out.push('\n');
    }
    if !e.docs.is_empty() {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_split_into_names_params_and_return() {
        let (n, p) = split_signature("event_wait(vm: Machine, name: String) -> Map");
        assert_eq!(n, "event_wait");
        assert_eq!(p, ["vm: Machine", "name: String", "Map"]);
        let (n, p) = split_signature("now() -> FLOAT");
        assert_eq!((n, p), ("now", vec!["FLOAT".to_string()]));
        let (n, p) = split_signature("sleep(secs: secs)");
        assert_eq!((n, p), ("sleep", vec!["secs: secs".to_string()]));
    }

    #[test]
    fn the_reference_lists_what_is_registered() {
        let mut engine = Engine::new_raw();
        func("twice(x: INT) -> INT", "Doubles x.")
            .register_into_engine(&mut engine, |x: i64| x * 2);
        func("twice(x: FLOAT) -> FLOAT", "Doubles x.")
            .register_into_engine(&mut engine, |x: f64| x * 2.0);
        let r = reference(&engine);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "twice");
        assert_eq!(r[0].signatures.len(), 2);
        assert!(r[0].signatures[0].starts_with("twice(x: "), "{:?}", r[0]);
        assert_eq!(r[0].docs, ["Doubles x."]);
        assert!(render(&r).contains("    Doubles x.\n"));
    }

    #[test]
    fn module_docs_come_from_the_source() {
        let src = "//! Says hello.\n//!\n//! - twice\n\n\
                   /// Greets `who`.\n///   indented\nfn hello(who) { who }\n\
                   /// Greets nobody.\nfn hello() { () }\n\
                   /** Block\n * doc.\n */\nfn block() {}\n\
                   private fn hidden() {}\n";
        let ast = Engine::new().compile(src).unwrap();
        let m = module_doc("greet", "<stdlib>/greet.rhai", &ast);
        assert_eq!(m.doc, ["Says hello.", "", "- twice"]);
        let names: Vec<&str> = m.functions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["greet::block", "greet::hello"]);
        assert_eq!(m.functions[0].docs, ["Block", "doc."]);
        let hello = &m.functions[1];
        assert_eq!(hello.signatures, ["greet::hello()", "greet::hello(who)"]);
        assert_eq!(
            hello.docs,
            ["Greets nobody.", "", "Greets `who`.", "  indented"]
        );
        let text = render_module(&m);
        assert!(
            text.starts_with("module greet (<stdlib>/greet.rhai)\n    Says hello.\n\n"),
            "{text}"
        );
        let md = render_markdown(&[], &[m]);
        assert!(
            md.contains("#### `greet::hello`\n\n```\ngreet::hello()\n"),
            "{md}"
        );
    }
}
