//! The stdlib: Rhai modules written over the script API and bundled into
//! the binary, so an installed `vmscript` imports them with no files beside
//! it. The sources live in `stdlib/` at the project root; each is a module
//! that `import "NAME" as m;` finds after every folder on the search path
//! (see [`super::modules`]).

/// How a stdlib module shows up in error reports and as a module's source:
/// `<stdlib>/guest.rhai`.
pub const PREFIX: &str = "<stdlib>/";

/// Every bundled module: its name and its source, sorted by name.
pub const MODULES: &[(&str, &str)] = &[
    ("guest", include_str!("../../stdlib/guest.rhai")),
    ("hotplug", include_str!("../../stdlib/hotplug.rhai")),
    ("iotests", include_str!("../../stdlib/iotests.rhai")),
    ("jobs", include_str!("../../stdlib/jobs.rhai")),
    ("migration", include_str!("../../stdlib/migration.rhai")),
    ("net", include_str!("../../stdlib/net.rhai")),
    ("retry", include_str!("../../stdlib/retry.rhai")),
];

/// The source of the stdlib module `name`.
pub fn get(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The stdlib module names, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|(n, _)| *n)
}

/// The name shown for the stdlib module `name`.
pub fn shown(name: &str) -> String {
    format!("{PREFIX}{name}.rhai")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_sorted_and_unique() {
        let names: Vec<&str> = names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn every_module_compiles_and_documents_itself() {
        let engine = super::super::base_engine();
        for (name, source) in MODULES {
            let ast = engine
                .compile(source)
                .unwrap_or_else(|e| panic!("stdlib {name}: {e}"));
            assert!(!ast.doc().is_empty(), "stdlib {name} has no //! doc");
            for f in ast.iter_functions() {
                if f.access == rhai::FnAccess::Public && !f.name.starts_with("anon$") {
                    assert!(
                        !f.comments.is_empty(),
                        "stdlib {name}: {} has no /// doc",
                        f.name
                    );
                }
            }
        }
    }
}
