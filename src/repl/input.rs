//! What a line typed at the REPL is: a `:command`, Rhai that is not
//! finished yet (the editor then continues it on the next line), or Rhai
//! to run. Knows nothing of terminals or machines.

use std::path::PathBuf;

use rhai::{Engine, LexError, ParseErrorType, Position};

/// A REPL command: a line that starts with `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Quit,
    Vms,
    /// `:console NAME`: attach the terminal to a machine's serial console.
    Console(String),
    Doc(String),
    Load(PathBuf),
    Save(PathBuf),
    /// `:events on|off`; `None` shows the setting.
    Events(Option<bool>),
}

/// The commands and what they do, for `:help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    (":help", "this help"),
    (
        ":doc NAME",
        "the documentation of a function, Machine.property, MODULE or MODULE::function",
    ),
    (
        ":load FILE",
        "run a script into the session; its variables and functions stay",
    ),
    (
        ":save FILE",
        "write the input that ran without error as a script",
    ),
    (
        ":vms",
        "the session's machines: name, pid, status (vms() returns them)",
    ),
    (
        ":console NAME",
        "attach the terminal to machine NAME's serial console; Ctrl-] comes back",
    ),
    (
        ":events on|off",
        "show QMP events as they arrive (on at start)",
    ),
    (
        ":quit",
        "shut down every machine of the session and leave (also Ctrl-D)",
    ),
];

/// The command on `line`, `None` when it is not one, or what is wrong
/// with it.
pub fn parse_command(line: &str) -> Option<Result<Command, String>> {
    let line = line.trim();
    let rest = line.strip_prefix(':')?;
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let need = |what: &str| -> Result<String, String> {
        if arg.is_empty() {
            Err(format!(":{name} needs {what}"))
        } else {
            Ok(arg.to_string())
        }
    };
    let no_arg = |c: Command| -> Result<Command, String> {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(format!(":{name} takes no argument"))
        }
    };
    Some(match name {
        "help" | "h" | "?" => no_arg(Command::Help),
        "quit" | "q" | "exit" => no_arg(Command::Quit),
        "vms" => no_arg(Command::Vms),
        "console" => need("a machine name (:vms lists them)").map(Command::Console),
        "doc" => need("a function name").map(Command::Doc),
        "load" => need("a file").map(|f| Command::Load(f.into())),
        "save" => need("a file").map(|f| Command::Save(f.into())),
        "events" => match arg {
            "" => Ok(Command::Events(None)),
            "on" => Ok(Command::Events(Some(true))),
            "off" => Ok(Command::Events(Some(false))),
            _ => Err(":events takes on or off".into()),
        },
        _ => Err(format!("unknown command :{name}; :help lists the commands")),
    })
}

/// Whether `text` is Rhai that stops short: a block, call, array, map or
/// backtick string still open, or an expression cut off (`let x =`). Such
/// input continues on the next line instead of failing.
pub fn is_incomplete(engine: &Engine, text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with(':') {
        return false;
    }
    let Err(err) = engine.compile(text) else {
        return false;
    };
    if matches!(
        *err.0,
        ParseErrorType::BadInput(LexError::UnterminatedString)
    ) {
        // A backtick string may span lines; a quoted one may not.
        return text.matches('`').count() % 2 == 1;
    }
    at_end(text, err.1)
}

/// Whether `pos` is at or past the end of `text`.
fn at_end(text: &str, pos: Position) -> bool {
    let (Some(line), Some(col)) = (pos.line(), pos.position()) else {
        return false;
    };
    let last = text.split('\n').count();
    let last_len = text.rsplit('\n').next().unwrap_or("").chars().count();
    line > last || (line == last && col > last_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_constructs_continue_on_the_next_line() {
        let e = Engine::new_raw();
        for text in [
            "fn f() {",
            "let x = [1,",
            "if x {",
            "if x { 1 } else",
            "let x = ",
            "vm.qmp(\"query-status\"",
            "let m = #{a: 1,",
            "while true {\n  print(1);\n",
            "let s = `two\nlines",
            "x +",
        ] {
            assert!(is_incomplete(&e, text), "{text:?}");
        }
    }

    #[test]
    fn finished_or_wrong_input_runs() {
        let e = Engine::new_raw();
        for text in [
            "let x = 1",
            "let x = 1;",
            "fn f() { 1 }",
            "1 +* 2",
            "let s = \"open",
            "}",
            "",
            ":doc x",
            "// a comment",
        ] {
            assert!(!is_incomplete(&e, text), "{text:?}");
        }
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        let c = |l: &str| parse_command(l).unwrap();
        assert_eq!(c(":help"), Ok(Command::Help));
        assert_eq!(c(":q"), Ok(Command::Quit));
        assert_eq!(c("  :vms "), Ok(Command::Vms));
        assert_eq!(c(":doc event_wait"), Ok(Command::Doc("event_wait".into())));
        assert_eq!(c(":save t.rhai"), Ok(Command::Save("t.rhai".into())));
        assert_eq!(c(":events off"), Ok(Command::Events(Some(false))));
        assert_eq!(c(":events"), Ok(Command::Events(None)));
        assert!(c(":doc").unwrap_err().contains("needs"));
        assert_eq!(c(":console vm0"), Ok(Command::Console("vm0".into())));
        assert!(c(":console").unwrap_err().contains("machine name"));
        assert!(c(":vms x").unwrap_err().contains("no argument"));
        assert!(c(":nope").unwrap_err().contains(":help"));
        assert_eq!(parse_command("let x = 1"), None);
    }
}
