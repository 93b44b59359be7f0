//! `:doc`: the signatures and documentation of a function, a property or
//! a module, from the engine's metadata, the session's own functions and
//! the modules it can import, shown as `vmscript doc` shows them.

use super::Session;
use crate::script;

impl Session {
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
    use super::super::tests::{session, show};
    use super::*;

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
}
