//! Completion against a fixed [`Sources`]: each context and its candidates.

use super::*;
use serde_json::json;

struct Fixed;

impl Sources for Fixed {
    fn functions(&self) -> Vec<Function> {
        [
            "machine() -> Machine",
            "launch(vm: Machine)",
            "event_wait(vm: Machine, name: String) -> Map",
            "get$name(vm: Machine) -> String",
            "keys(map: &mut map) -> Array",
            "len(string: string) -> i64",
            "+(a: i64, b: i64) -> i64",
        ]
        .iter()
        .filter_map(|s| parse_signature(s))
        .collect()
    }
    fn variables(&self) -> Vec<(String, String)> {
        vec![
            ("vm".into(), "Machine".into()),
            ("st".into(), "map".into()),
            ("level".into(), "i64".into()),
        ]
    }
    fn map_keys(&self, _: &str) -> Vec<String> {
        vec!["status".into(), "running".into()]
    }
    fn schema(&self, receiver: Option<&str>) -> Option<Rc<Schema>> {
        let mut s = Schema::default();
        s.commands.insert("query-status".into(), vec![]);
        s.commands.insert("query-block".into(), vec![]);
        s.commands.insert(
            "blockdev-add".into(),
            vec!["driver".into(), "node-name".into()],
        );
        s.events = vec!["STOP".into(), "SHUTDOWN".into()];
        let typed = Schema::from_entries(&[
            json!({"name": "add", "meta-type": "command", "arg-type": "1"}),
            json!({"name": "1", "meta-type": "object", "tag": "driver",
                "members": [{"name": "driver", "type": "2"}, {"name": "node-name", "type": "str"}],
                "variants": [{"case": "null-co", "type": "3"}, {"case": "qcow2", "type": "4"}]}),
            json!({"name": "2", "meta-type": "enum", "values": ["null-co", "qcow2"]}),
            json!({"name": "3", "meta-type": "object",
                "members": [{"name": "size", "type": "int"}, {"name": "read-zeroes", "type": "bool"}]}),
            json!({"name": "4", "meta-type": "object", "members": [{"name": "file", "type": "1"}]}),
            json!({"name": "bool", "meta-type": "builtin"}),
        ]);
        Some(Rc::new(if receiver == Some("typed") { typed } else { s }))
    }
    fn modules(&self) -> Vec<String> {
        vec!["guest".into()]
    }
    fn module_functions(&self, name: &str) -> Vec<String> {
        match name {
            "guest" => vec!["boot".into(), "run".into(), "run_ok".into()],
            _ => Vec::new(),
        }
    }
}

fn complete(before: &str) -> (usize, Vec<String>) {
    let (start, ctx) = context(before);
    let c = candidates(&ctx, &Fixed);
    (start, c.into_iter().map(|p| p.replacement).collect())
}

#[test]
fn signatures_give_names_and_receivers() {
    let f = parse_signature("get$name(vm: Machine) -> String").unwrap();
    assert_eq!(
        (f.name.as_str(), f.receiver.as_deref(), f.property),
        ("name", Some("Machine"), true)
    );
    let f = parse_signature("keys(map: &mut map) -> Array").unwrap();
    assert_eq!(f.receiver.as_deref(), Some("map"));
    assert_eq!(
        parse_signature("machine() -> Machine").unwrap().receiver,
        None
    );
    assert_eq!(parse_signature("+(a: i64, b: i64) -> i64"), None);
    assert_eq!(parse_signature("set$x(a: T, v: i64)"), None);
}

#[test]
fn qmp_command_names_complete_in_the_first_argument() {
    assert_eq!(
        complete(r#"vm.qmp("query-"#),
        (
            7,
            vec![r#""query-block""#.into(), r#""query-status""#.into()]
        )
    );
    assert_eq!(complete("let r = vm.command(que").1.len(), 2);
    assert_eq!(complete("vm.command(que").0, 11);
    assert_eq!(complete(r#"qmp(vm, "query-s"#).1, [r#""query-status""#]);
    // The second argument is any expression.
    assert!(!complete(r#"vm.qmp("query-status", "#)
        .1
        .iter()
        .any(|c| c.contains("query")));
}

#[test]
fn qmp_argument_keys_complete_in_the_map() {
    assert_eq!(
        complete(r#"vm.command("blockdev-add", #{driver: "null-co", no"#).1,
        ["node_name: "]
    );
    assert_eq!(complete(r#"vm.command("blockdev-add", #{"#).1.len(), 2);
}

#[test]
fn qmp_argument_keys_narrow_to_the_chosen_variant_and_values_complete() {
    let all = complete(r#"typed.command("add", #{"#).1;
    assert_eq!(
        all,
        [
            "driver: ",
            "file: ",
            "node_name: ",
            "read_zeroes: ",
            "size: "
        ]
    );
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "null-co", "#).1,
        ["node_name: ", "read_zeroes: ", "size: "]
    );
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "qcow2", node_name: "q", "#).1,
        ["file: "]
    );
    // Nested maps follow their own tag.
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "qcow2", file: #{ driver: "null-co", s"#).1,
        ["size: "]
    );
    // Enum values, quoted; a typed quote is replaced too.
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "#),
        (32, vec![r#""null-co""#.into(), r#""qcow2""#.into()])
    );
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "q"#),
        (32, vec![r#""qcow2""#.into()])
    );
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "null-co", read_zeroes: "#).1,
        ["false", "true"]
    );
    // A closed map is no longer completed as arguments.
    assert!(
        !complete(r#"typed.command("add", #{ driver: "qcow2" }).le"#)
            .1
            .iter()
            .any(|c| c.contains(':'))
    );
    // After a value, before its comma, nothing is offered.
    assert_eq!(
        complete(r#"typed.command("add", #{ driver: "qcow2" "#).1,
        Vec::<String>::new()
    );
}

#[test]
fn long_lists_are_bounded_and_still_complete_what_all_share() {
    let many: Vec<Pair> = (0..110)
        .map(|i| plain(&format!("query-{i:03}"), &format!("\"query-{i:03}\"")))
        .collect();
    let shown = bounded(many, LIST_LIMIT);
    assert_eq!(shown.len(), LIST_LIMIT + 1);
    let last = shown.last().unwrap();
    assert_eq!(last.display, "… and 80 more (type more to narrow)");
    assert_eq!(last.replacement, "\"query-");
    let few = vec![plain("ab", "ab"), plain("ac", "ac")];
    let shown: Vec<String> = bounded(few, LIST_LIMIT)
        .into_iter()
        .map(|p| p.display)
        .collect();
    assert_eq!(shown, ["ab", "ac"]);
}

#[test]
fn module_functions_complete_after_the_module_name() {
    assert_eq!(
        complete("guest::ru"),
        (7, vec!["run(".into(), "run_ok(".into()])
    );
    assert_eq!(complete("let vm = guest::").1, ["boot(", "run(", "run_ok("]);
    assert!(complete("gu").1.contains(&"guest::".to_string()));
    assert_eq!(
        complete(":doc guest::run").1,
        ["guest::run", "guest::run_ok"]
    );
    assert_eq!(
        complete(":doc gue").1,
        ["guest", "guest::boot", "guest::run", "guest::run_ok"]
    );
    assert_eq!(complete("other::x").1, Vec::<String>::new());
}

#[test]
fn event_names_complete_in_event_wait() {
    assert_eq!(
        complete(r#"vm.event_wait("S"#).1,
        [r#""SHUTDOWN""#, r#""STOP""#]
    );
    assert_eq!(complete(r#"vm.event_wait(ST"#).1, [r#""STOP""#]);
    assert_eq!(complete(r#"vm.events_wait([["ST"#).1, [r#""STOP""#]);
}

#[test]
fn members_follow_the_receivers_type() {
    assert_eq!(complete("vm.la").1, ["launch("]);
    assert_eq!(complete("vm.").1, ["event_wait(", "launch(", "name"]);
    assert_eq!(complete("st.").1, ["keys(", "running", "status"]);
    assert!(complete("foo().").1.contains(&"len(".to_string()));
}

#[test]
fn words_are_variables_functions_and_keywords() {
    assert_eq!(
        complete("let x = l").1,
        ["launch(", "len(", "let", "level", "loop"]
    );
    assert_eq!(complete("ma").1, ["machine("]);
    assert_eq!(complete(r#"print("ma"#).1, Vec::<String>::new());
    assert_eq!(complete("12").1, Vec::<String>::new());
}

#[test]
fn repl_commands_and_their_arguments() {
    assert_eq!(complete(":d").1, [":doc"]);
    assert_eq!(complete(":doc event_").1, ["event_wait"]);
    assert_eq!(complete(":doc Machine.n").1, ["Machine.name"]);
    assert_eq!(complete(":events o").1, ["off", "on"]);
    assert_eq!(context(":load sc"), (8, Context::File));
}
