//! The serial console in scripts: the `Console` type (`vm.console_socket()`)
//! and the helpers on `Machine` spelled as in QEMU's functional tests
//! (`wait_for_console_pattern`, `exec_command`, …), over
//! [`crate::machine::Console`].
//!
//! Waits without a timeout argument last until the test's own timeout,
//! as QEMU's functional tests rely on theirs.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, NativeCallContext, INT};

use crate::machine::{self, Console};

use super::args;
use super::cancel::Doing;
use super::docs::func;
use super::errors::{self, ScriptResult};
use super::machine_api::{opt_string, MachineRef};
use super::run::{self, Run};

/// A script's `Console`.
#[derive(Clone)]
pub struct ConsoleRef(Console);

impl ConsoleRef {
    fn with<T>(
        &self,
        f: impl FnOnce(&Console) -> Result<T, machine::ConsoleError>,
    ) -> ScriptResult<T> {
        f(&self.0).map_err(|e| errors::machine_error(machine::Error::Console(e)))
    }
}

/// How long a wait without a timeout argument lasts: until the test's
/// timeout ends it ([`Run::until_timeout`]).
fn remaining(ctx: &NativeCallContext) -> ScriptResult<Duration> {
    Run::of(ctx).map(|r| r.until_timeout())
}

/// Marks the call as waiting for `what` on the console ([`run::doing`]).
fn waiting(ctx: &NativeCallContext, what: impl std::fmt::Display) -> Option<Doing> {
    run::doing(ctx, format!("waiting for {what} on the console"))
}

/// Registers the `Console` type, its methods and the console helpers on
/// `Machine`.
pub fn register(e: &mut Engine) {
    e.register_type_with_name::<ConsoleRef>("Console");
    func(
        "console_socket(vm: Machine) -> Console",
        "The machine's console (needs set_console before launch).",
    )
    .register_into_engine(e, |vm: &mut MachineRef| {
        vm.with(|m| m.console_socket()).map(ConsoleRef)
    });
    func(
        "wait_for_console_pattern(vm: Machine, success: String) -> String",
        "Waits (up to the test's timeout) for `success` on the console; returns the output.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, vm: &mut MachineRef, s: &str| {
        let t = remaining(&ctx)?;
        let _doing = waiting(&ctx, format!("{s:?}"));
        vm.with(|m| m.wait_for_console_pattern(s, None, t))
    });
    func(
        "wait_for_console_pattern(vm: Machine, success: String, failure: String) -> String",
        "Waits for `success`; seeing `failure` (or `()`: none) first throws ConsoleError.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, s: &str, f: Dynamic| {
            let f = opt_string(&f, "failure")?;
            let t = remaining(&ctx)?;
            let _doing = waiting(&ctx, format!("{s:?}"));
            vm.with(|m| m.wait_for_console_pattern(s, f.as_deref(), t))
        },
    );
    func(
        concat!(
            "wait_for_console_pattern(vm: Machine, success: String, failure: String, ",
            "timeout: secs) -> String"
        ),
        "Waits up to `timeout` for `success`; seeing `failure` first throws.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, s: &str, f: Dynamic, t: Dynamic| {
            let f = opt_string(&f, "failure")?;
            let t = args::secs(&t, "timeout")?;
            let _doing = waiting(&ctx, format!("{s:?}"));
            vm.with(|m| m.wait_for_console_pattern(s, f.as_deref(), t))
        },
    );
    func(
        "exec_command(vm: Machine, cmd: String)",
        "Types `cmd` and Enter on the console.",
    )
    .register_into_engine(e, |vm: &mut MachineRef, c: &str| {
        vm.with(|m| m.exec_command(c))
    });
    func(
        "exec_command_and_wait_for_pattern(vm: Machine, cmd: String, success: String) -> String",
        "Types `cmd` and Enter, then waits for `success`.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, c: &str, s: &str| {
            let t = remaining(&ctx)?;
            let _doing = waiting(&ctx, format!("{s:?}"));
            vm.with(|m| m.exec_command_and_wait_for_pattern(c, s, None, t))
        },
    );
    func(
        concat!(
            "exec_command_and_wait_for_pattern(vm: Machine, cmd: String, success: String, ",
            "failure: String) -> String"
        ),
        "Types `cmd` and Enter, then waits for `success`; `failure` first throws.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, c: &str, s: &str, f: Dynamic| {
            let f = opt_string(&f, "failure")?;
            let t = remaining(&ctx)?;
            let _doing = waiting(&ctx, format!("{s:?}"));
            vm.with(|m| m.exec_command_and_wait_for_pattern(c, s, f.as_deref(), t))
        },
    );
    func(
        "interrupt_interactive_console_until_pattern(vm: Machine, pattern: String) -> String",
        "Sends \"\\r\" every second until `pattern` appears.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, vm: &mut MachineRef, p: &str| {
        let t = remaining(&ctx)?;
        let _doing = waiting(&ctx, format!("{p:?}"));
        vm.with(|m| m.interrupt_interactive_console_until_pattern(p, "\r", t))
    });
    func(
        concat!(
            "interrupt_interactive_console_until_pattern(vm: Machine, pattern: String, ",
            "interrupt: String) -> String"
        ),
        "Sends `interrupt` every second until `pattern` appears.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, vm: &mut MachineRef, p: &str, i: &str| {
            let t = remaining(&ctx)?;
            let _doing = waiting(&ctx, format!("{p:?}"));
            vm.with(|m| m.interrupt_interactive_console_until_pattern(p, i, t))
        },
    );

    func(
        "send(con: Console, text: String)",
        "Sends `text` to the guest as is.",
    )
    .register_into_engine(e, |c: &mut ConsoleRef, t: &str| c.with(|c| c.send(t)));
    func(
        "send(con: Console, bytes: Blob)",
        "Sends raw bytes to the guest (0x80–0xFF included, unlike text).",
    )
    .register_into_engine(e, |c: &mut ConsoleRef, b: rhai::Blob| {
        c.with(|c| c.send_bytes(&b))
    });
    func(
        "send_line(con: Console, text: String)",
        "Sends `text` and \"\\n\".",
    )
    .register_into_engine(e, |c: &mut ConsoleRef, t: &str| c.with(|c| c.send_line(t)));
    func(
        "read(con: Console) -> String",
        "The output since the last read or wait (lossy UTF-8).",
    )
    .register_into_engine(e, |c: &mut ConsoleRef| c.0.read());
    func(
        "wait_for(con: Console, text: String) -> String",
        "Waits (until the test's timeout) for `text`; returns the output up to and including it.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, c: &mut ConsoleRef, t: &str| {
        let left = remaining(&ctx)?;
        let _doing = waiting(&ctx, format!("{t:?}"));
        c.with(|c| c.wait_for(t, left))
    });
    func(
        "wait_for(con: Console, text: String, timeout: secs) -> String",
        "Waits up to `timeout` for `text`; returns the output up to and including it.",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, c: &mut ConsoleRef, t: &str, d: Dynamic| {
            let d = args::secs(&d, "timeout")?;
            let _doing = waiting(&ctx, format!("{t:?}"));
            c.with(|c| c.wait_for(t, d))
        },
    );
    let captures = |v: Vec<Option<String>>| -> Array {
        v.into_iter()
            .map(|g| g.map_or(Dynamic::UNIT, Dynamic::from))
            .collect()
    };
    func(
        "wait_for_regex(con: Console, re: String) -> Array",
        "Waits (up to the test's timeout) for a regex match; returns the captures (0: all).",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, c: &mut ConsoleRef, re: &str| {
            let t = remaining(&ctx)?;
            let _doing = waiting(&ctx, format!("/{re}/"));
            c.with(|c| c.wait_for_regex(re, t)).map(captures)
        },
    );
    func(
        "wait_for_regex(con: Console, re: String, timeout: secs) -> Array",
        "Waits up to `timeout` for a regex match; returns the captures (0: the whole match).",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, c: &mut ConsoleRef, re: &str, d: Dynamic| {
            let d = args::secs(&d, "timeout")?;
            let _doing = waiting(&ctx, format!("/{re}/"));
            c.with(|c| c.wait_for_regex(re, d)).map(captures)
        },
    );
    let expect = |ctx: &NativeCallContext, c: &ConsoleRef, p: Array, d: Duration| {
        let p = args::strings(&Dynamic::from_array(p), "expect patterns")?;
        let _doing = waiting(ctx, format!("any of {p:?}"));
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        c.with(|c| c.expect(&p, d)).map(|i| i as INT)
    };
    func(
        "expect(con: Console, patterns: Array) -> int",
        "Waits (up to the test's timeout) for any of the texts; returns the first one's index.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, c: &mut ConsoleRef, p: Array| {
            expect(&ctx, c, p, remaining(&ctx)?)
        },
    );
    func(
        "expect(con: Console, patterns: Array, timeout: secs) -> int",
        "Waits up to `timeout` for any of the texts; returns the index of the first to appear.",
    )
    .register_into_engine(
        e,
        move |ctx: NativeCallContext, c: &mut ConsoleRef, p: Array, d: Dynamic| {
            expect(&ctx, c, p, args::secs(&d, "timeout")?)
        },
    );
    func(
        "output(con: Console) -> String",
        "The whole console transcript.",
    )
    .register_into_engine(e, |c: &mut ConsoleRef| c.0.output());
    func("close(con: Console)", "Closes the console.")
        .register_into_engine(e, |c: &mut ConsoleRef| c.0.close());
    func("to_string(con: Console) -> String", "The console as text.")
        .register_into_engine(e, |_: &mut ConsoleRef| "Console".to_string());
}
