//! What a QEMU's `query-qmp-schema` says, indexed for completion: the
//! command names, each command's argument keys (nested ones, and those of
//! the variant a union's tag chose), enum values, and the event names.
//! Both `vmscript qmp` and the REPL complete from a [`Schema`]; neither
//! knows how the other writes arguments (`key=value` or `#{key: value}`):
//! they hand over the path of keys and what is already given, as JSON.
//!
//! A schema comes from the peer and may be anything, a type that contains
//! itself included: every walk through the types keeps a visited set, so
//! a cycle ends the walk instead of the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::qmp::Client;

/// Command names and their argument names, from `query-qmp-schema`, with
/// the argument types, so that nested keys (`file.driver=`), the members
/// of a union's chosen variant and enum values (`driver=qcow2`) complete.
#[derive(Debug, Default, Clone)]
pub struct Schema {
    /// Each command's top-level argument names.
    pub commands: BTreeMap<String, Vec<String>>,
    pub events: Vec<String>,
    /// Each command's argument type.
    arg_types: BTreeMap<String, String>,
    /// Every non-command entry by name.
    types: BTreeMap<String, Value>,
}

impl Schema {
    /// Reads the schema from a live monitor; falls back to
    /// `query-commands` (names only) when the schema is unavailable.
    pub fn load(client: &Client, timeout: Duration) -> Schema {
        let mut schema = Schema::default();
        if let Ok(Value::Array(entries)) = client.command("query-qmp-schema", None, timeout) {
            schema = Schema::from_entries(&entries);
        }
        if schema.commands.is_empty() {
            if let Ok(Value::Array(cmds)) = client.command("query-commands", None, timeout) {
                schema.add_command_names(&cmds);
            }
        }
        schema
    }

    /// Adds the names of a `query-commands` reply, without arguments.
    pub fn add_command_names(&mut self, cmds: &[Value]) {
        for c in cmds {
            if let Some(n) = c.get("name").and_then(Value::as_str) {
                self.commands.entry(n.to_string()).or_default();
            }
        }
    }

    /// Builds the index from `query-qmp-schema` entries.
    pub fn from_entries(entries: &[Value]) -> Schema {
        let mut schema = Schema::default();
        for e in entries {
            let Some(name) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            match e.get("meta-type").and_then(Value::as_str) {
                Some("command") => {
                    schema.commands.insert(name.to_string(), Vec::new());
                    if let Some(t) = e.get("arg-type").and_then(Value::as_str) {
                        schema.arg_types.insert(name.to_string(), t.to_string());
                    }
                }
                Some("event") => schema.events.push(name.to_string()),
                _ => {
                    schema.types.insert(name.to_string(), e.clone());
                }
            }
        }
        let empty = Map::new();
        for (cmd, ty) in &schema.arg_types {
            let args = schema
                .members(ty, &empty)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            schema.commands.insert(cmd.clone(), args);
        }
        schema.events.sort();
        schema
    }

    /// Whether the argument types of `command` are known (else only its
    /// argument names may be, from a test or `query-commands`).
    pub fn is_typed(&self, command: &str) -> bool {
        self.arg_types.contains_key(command)
    }

    /// The keys that may follow at `path` (a chain of keys below the
    /// command's arguments) given what the arguments already hold: the
    /// members of the type there, of the union variant chosen, not yet given.
    pub fn keys(&self, command: &str, path: &[&str], given: &Map<String, Value>) -> Vec<String> {
        let Some(arg_type) = self.arg_types.get(command) else {
            if !path.is_empty() {
                return Vec::new();
            }
            return self
                .commands
                .get(command)
                .into_iter()
                .flatten()
                .filter(|a| !given.contains_key(a.as_str()))
                .cloned()
                .collect();
        };
        let Some((ty, at)) = self.resolve(arg_type, path, given) else {
            return Vec::new();
        };
        self.members(&ty, at)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !at.contains_key(n))
            .collect()
    }

    /// The values the key at `path` may take when they are few: an enum's
    /// values, `true`/`false`.
    pub fn values(&self, command: &str, path: &[&str], given: &Map<String, Value>) -> Vec<String> {
        let Some(arg_type) = self.arg_types.get(command) else {
            return Vec::new();
        };
        self.resolve(arg_type, path, given)
            .map(|(ty, _)| self.values_of(&ty, &mut BTreeSet::new()))
            .unwrap_or_default()
    }

    /// The members of object type `ty` as (name, type): its own, and those
    /// of the variant that `given[tag]` chooses (of every variant while
    /// none is chosen). An alternate offers the members of its object
    /// branches.
    fn members(&self, ty: &str, given: &Map<String, Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.collect_members(ty, given, &mut BTreeSet::new(), &mut out);
        let mut seen = BTreeSet::new();
        out.retain(|(n, _)| seen.insert(n.clone()));
        out
    }

    fn collect_members(
        &self,
        ty: &str,
        given: &Map<String, Value>,
        visited: &mut BTreeSet<String>,
        out: &mut Vec<(String, String)>,
    ) {
        // A type reached again (a variant or branch that contains itself)
        // adds nothing new.
        if !visited.insert(ty.to_string()) {
            return;
        }
        let Some(t) = self.types.get(ty) else {
            return;
        };
        let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match t.get("meta-type").and_then(Value::as_str) {
            Some("object") => {
                for m in list(t.get("members")) {
                    if let Some(n) = text(&m, "name") {
                        out.push((n, text(&m, "type").unwrap_or_default()));
                    }
                }
                let chosen = t
                    .get("tag")
                    .and_then(Value::as_str)
                    .and_then(|tag| given.get(tag))
                    .and_then(Value::as_str);
                for v in list(t.get("variants")) {
                    if chosen.is_some_and(|c| v.get("case").and_then(Value::as_str) != Some(c)) {
                        continue;
                    }
                    if let Some(vt) = text(&v, "type") {
                        self.collect_members(&vt, given, visited, out);
                    }
                }
            }
            Some("alternate") => {
                for m in list(t.get("members")) {
                    if let Some(mt) = text(&m, "type") {
                        self.collect_members(&mt, given, visited, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// The values a key of type `ty` may take, when they are few.
    fn values_of(&self, ty: &str, visited: &mut BTreeSet<String>) -> Vec<String> {
        if !visited.insert(ty.to_string()) {
            return Vec::new();
        }
        let Some(t) = self.types.get(ty) else {
            return Vec::new();
        };
        match t.get("meta-type").and_then(Value::as_str) {
            Some("enum") => t
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Some("builtin") if ty == "bool" => vec!["true".into(), "false".into()],
            Some("alternate") => {
                let branches: Vec<String> = t
                    .get("members")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("type").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect();
                branches
                    .iter()
                    .flat_map(|mt| self.values_of(mt, visited))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The type at dotted `path` below object type `ty`, and what the line
    /// already gives at that level. The path is as long as what was typed,
    /// so this ends even on a schema whose types contain themselves.
    fn resolve<'a>(
        &self,
        ty: &str,
        path: &[&str],
        given: &'a Map<String, Value>,
    ) -> Option<(String, &'a Map<String, Value>)> {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        let Some((first, rest)) = path.split_first() else {
            return Some((ty.to_string(), given));
        };
        let (_, member_ty) = self
            .members(ty, given)
            .into_iter()
            .find(|(n, _)| n == first)?;
        let inner = match given.get(*first) {
            Some(Value::Object(m)) => m,
            _ => &EMPTY,
        };
        self.resolve(&member_ty, rest, inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn block_schema() -> Schema {
        Schema::from_entries(&[
            json!({"name": "blockdev-add", "meta-type": "command", "arg-type": "49"}),
            json!({"name": "49", "meta-type": "object", "tag": "driver",
                "members": [{"name": "driver", "type": "291"}, {"name": "node-name", "type": "str"},
                            {"name": "read-only", "type": "bool"}],
                "variants": [{"case": "qcow2", "type": "300"}, {"case": "file", "type": "301"}]}),
            json!({"name": "291", "meta-type": "enum", "values": ["file", "qcow2"]}),
            json!({"name": "300", "meta-type": "object",
                "members": [{"name": "file", "type": "518"}, {"name": "lazy-refcounts", "type": "bool"}]}),
            json!({"name": "301", "meta-type": "object", "members": [{"name": "filename", "type": "str"}]}),
            json!({"name": "518", "meta-type": "alternate", "members": [{"type": "49"}, {"type": "str"}]}),
            json!({"name": "str", "meta-type": "builtin", "json-type": "string"}),
            json!({"name": "bool", "meta-type": "builtin", "json-type": "boolean"}),
        ])
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys_follow_the_chosen_variant() {
        let s = block_schema();
        assert!(s
            .keys("blockdev-add", &[], &Map::new())
            .contains(&"filename".to_string()));
        assert_eq!(
            s.keys("blockdev-add", &[], &given(json!({"driver": "qcow2"}))),
            ["node-name", "read-only", "file", "lazy-refcounts"]
        );
        assert_eq!(
            s.keys(
                "blockdev-add",
                &["file"],
                &given(json!({"driver": "qcow2", "file": {"driver": "file"}}))
            ),
            ["node-name", "read-only", "filename"]
        );
        assert_eq!(
            s.values("blockdev-add", &["driver"], &Map::new()),
            ["file", "qcow2"]
        );
        assert_eq!(
            s.values("blockdev-add", &["read-only"], &Map::new()),
            ["true", "false"]
        );
    }

    /// Types that contain themselves, as a hostile peer may send: a union
    /// whose variant is itself, an alternate with itself as a branch, an
    /// object that is its own member's type.
    fn cyclic_entries() -> Vec<Value> {
        vec![
            json!({"name": "loop-add", "meta-type": "command", "arg-type": "A"}),
            json!({"name": "A", "meta-type": "object", "tag": "kind",
                "members": [{"name": "kind", "type": "E"}, {"name": "next", "type": "B"}],
                "variants": [{"case": "x", "type": "A"}, {"case": "y", "type": "B"}]}),
            json!({"name": "B", "meta-type": "alternate", "members": [{"type": "B"}, {"type": "A"}]}),
            json!({"name": "E", "meta-type": "alternate", "members": [{"type": "E"}]}),
        ]
    }

    #[test]
    fn a_schema_whose_types_contain_themselves_is_walked_without_overflow() {
        let s = Schema::from_entries(&cyclic_entries());
        assert_eq!(s.commands["loop-add"], ["kind", "next"]);
        assert_eq!(
            s.keys("loop-add", &["next", "next", "next"], &Map::new()),
            ["kind", "next"]
        );
        assert_eq!(
            s.values("loop-add", &["kind"], &Map::new()),
            Vec::<String>::new()
        );
    }
}
