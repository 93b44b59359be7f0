//! The shell's line language, transactions and completion, without a peer.

use super::*;
use crate::repl::schema::tests::block_schema;
use serde_json::json;

fn cmd(line: &str) -> (String, Value) {
    match parse_line(line).unwrap() {
        Line::Command { name, args } => (name, Value::Object(args)),
        l => panic!("{l:?}"),
    }
}

#[test]
fn key_values_parse_as_json_or_strings() {
    let (name, args) = cmd("blockdev-add driver=null-co node-name=n0 size=1024 read-only=true");
    assert_eq!(name, "blockdev-add");
    assert_eq!(
        args,
        json!({"driver": "null-co", "node-name": "n0", "size": 1024, "read-only": true})
    );
}

#[test]
fn dotted_keys_nest() {
    let (_, args) =
        cmd("blockdev-add driver=qcow2 node-name=q file.driver=file file.filename=/tmp/a");
    assert_eq!(
        args,
        json!({"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "filename": "/tmp/a"}})
    );
}

#[test]
fn json_values_may_hold_spaces_and_quotes_strip() {
    let (_, args) = cmd(r#"x a={"b": [1, 2]} c='two words' d="q""#);
    assert_eq!(
        args,
        json!({"a": {"b": [1, 2]}, "c": "two words", "d": "q"})
    );
}

#[test]
fn raw_json_and_blank_lines() {
    assert_eq!(
        parse_line(r#"{"execute": "query-status"}"#).unwrap(),
        Line::Raw(json!({"execute": "query-status"}))
    );
    assert_eq!(parse_line("   ").unwrap(), Line::Empty);
    assert_eq!(parse_line("# note").unwrap(), Line::Empty);
}

#[test]
fn bad_lines_say_why() {
    assert!(parse_line("cmd novalue").unwrap_err().contains("key=value"));
    assert!(parse_line("cmd a='open").unwrap_err().contains("quote"));
    assert!(parse_line("cmd a={").unwrap_err().contains("brackets"));
    assert!(parse_line("cmd a=1 a.b=2").unwrap_err().contains("both"));
}

#[test]
fn completion_of_commands_and_arguments() {
    let entries = vec![
        json!({"name": "blockdev-del", "meta-type": "command", "arg-type": "1"}),
        json!({"name": "blockdev-add", "meta-type": "command", "arg-type": "2"}),
        json!({"name": "query-status", "meta-type": "command", "arg-type": "0"}),
        json!({"name": "1", "meta-type": "object", "members": [{"name": "node-name"}]}),
        json!({"name": "2", "meta-type": "object", "members": [{"name": "driver"}, {"name": "node-name"}]}),
        json!({"name": "0", "meta-type": "object", "members": []}),
        json!({"name": "STOP", "meta-type": "event", "arg-type": "0"}),
    ];
    let s = Schema::from_entries(&entries);
    assert_eq!(s.events, ["STOP"]);
    assert_eq!(
        complete_line(&s, "blockdev-"),
        (0, vec!["blockdev-add".into(), "blockdev-del".into()])
    );
    assert_eq!(
        complete_line(&s, "blockdev-add no"),
        (13, vec!["node-name=".into()])
    );
    assert_eq!(
        complete_line(&s, "blockdev-add driver=x "),
        (22, vec!["node-name=".into()])
    );
    assert_eq!(complete_line(&s, "query-status x=").1, Vec::<String>::new());
}

#[test]
fn enum_and_bool_values_complete_after_the_equals_sign() {
    let s = block_schema();
    assert_eq!(
        complete_line(&s, "blockdev-add driver="),
        (13, vec!["driver=file".into(), "driver=qcow2".into()])
    );
    assert_eq!(
        complete_line(&s, "blockdev-add driver=q").1,
        ["driver=qcow2"]
    );
    assert_eq!(
        complete_line(&s, "blockdev-add read-only=").1,
        ["read-only=true", "read-only=false"]
    );
    assert_eq!(
        complete_line(&s, "blockdev-add node-name=").1,
        Vec::<String>::new()
    );
}

#[test]
fn the_chosen_variant_and_nested_keys_complete() {
    let s = block_schema();
    // Before a driver is chosen, every variant's members are offered.
    assert!(complete_line(&s, "blockdev-add ")
        .1
        .contains(&"filename=".to_string()));
    let (_, c) = complete_line(&s, "blockdev-add driver=qcow2 ");
    assert_eq!(c, ["node-name=", "read-only=", "file=", "lazy-refcounts="]);
    let (start, c) = complete_line(&s, "blockdev-add driver=qcow2 file.");
    assert_eq!(start, 26);
    assert!(c.contains(&"file.driver=".to_string()), "{c:?}");
    let (_, c) = complete_line(&s, "blockdev-add driver=qcow2 file.driver=file file.f");
    assert_eq!(c, ["file.filename="]);
    assert_eq!(
        complete_line(&s, "blockdev-add driver=qcow2 file.driver=").1,
        ["file.driver=file", "file.driver=qcow2"]
    );
}

#[test]
fn transaction_blocks_send_one_command_with_every_action() {
    let mut t = None;
    assert_eq!(step(&mut t, "transaction(").unwrap(), None);
    assert!(t.is_some());
    assert_eq!(
        step(&mut t, "block-dirty-bitmap-add node=d0 name=b1").unwrap(),
        None
    );
    assert!(step(&mut t, "abort novalue")
        .unwrap_err()
        .contains("key=value"));
    assert_eq!(step(&mut t, "abort").unwrap(), None);
    let sent = step(&mut t, ")").unwrap().unwrap();
    assert_eq!(
        sent,
        json!({"execute": "transaction", "arguments": {"actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "d0", "name": "b1"}},
            {"type": "abort", "data": {}}
        ]}})
    );
    assert!(t.is_none());
    // The first action on the opening line, `)` ending the last one.
    let sent = step(&mut t, "transaction( abort").unwrap();
    assert_eq!(sent, None);
    let sent = step(&mut t, "abort )").unwrap().unwrap();
    assert_eq!(sent["arguments"]["actions"].as_array().unwrap().len(), 2);
    assert!(t.is_none());
    // Outside a transaction a line is a command as before.
    assert_eq!(
        step(&mut t, "query-status").unwrap(),
        Some(json!({"execute": "query-status"}))
    );
    step(&mut t, "transaction(").unwrap();
    assert!(step(&mut t, ") x").unwrap_err().contains("after the )"));
}

#[test]
fn hmp_commands_and_info_topics_come_from_help() {
    let help = "announce_self [interfaces] [id] -- Trigger GARP/RARP announcements\n\
                c|cont  -- resume emulation\n\
                info [subcommand] -- show various information about the system state\n";
    let info =
        "info balloon  -- show balloon information\ninfo status  -- show the current VM status\n";
    let h = HmpCommands::from_help(help, info);
    assert_eq!(h.commands, ["announce_self", "c", "cont", "info"]);
    assert_eq!(h.complete("co"), (0, vec!["cont".into()]));
    assert_eq!(h.complete("info st"), (5, vec!["status".into()]));
    assert_eq!(h.complete("cont x").1, Vec::<String>::new());
}

#[test]
fn events_show_on_one_line() {
    assert_eq!(
        event_line(&json!({"event": "STOP", "data": {}})),
        "event STOP"
    );
    assert_eq!(
        event_line(&json!({"event": "RESET", "data": {"guest": false}})),
        "event RESET {\"guest\":false}"
    );
}
