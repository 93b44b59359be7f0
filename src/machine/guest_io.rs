//! Talking to the guest's side of a running machine: waits and input on
//! its serial console, and qtest lines.
//!
//! The console itself (its reader, transcript and matchers) is
//! [`super::console`]'s; this file turns its failures into the machine's
//! errors, a hang-up because QEMU exited naming the exit code.

use std::time::{Duration, Instant};

use super::lifecycle::State;
use super::qtest;
use super::{Console, ConsoleError, Error, Machine, Result, DEFAULT_WAIT};

impl Machine {
    /// The console of the running machine (needs `set_console`).
    pub fn console_socket(&self) -> Result<Console> {
        let running = self
            .running()
            .ok_or_else(|| self.not_running("console_socket"))?;
        running.console.clone().ok_or_else(|| {
            Error::Machine(format!(
                "console_socket: the machine {} has no console; call set_console() before launch()",
                self.name
            ))
        })
    }

    /// The guest agent of the running machine; `None` without
    /// `set_guest_agent`.
    pub fn guest_agent(&self) -> Result<Option<super::Agent>> {
        let running = self
            .running()
            .ok_or_else(|| self.not_running("guest_agent"))?;
        Ok(running.agent.clone())
    }

    /// Turns a console failure into the user's view: a hang-up because
    /// QEMU exited names its exit code.
    fn console_failure(&self, what: &str, err: ConsoleError) -> Error {
        match err {
            ConsoleError::Closed { .. } => self.exited_error(what).unwrap_or(Error::Console(err)),
            ConsoleError::Interrupted { .. } => Error::Interrupted {
                what: what.to_string(),
            },
            e => Error::Console(e),
        }
    }

    /// Waits for `success` on the console; seeing `failure` first fails.
    pub fn wait_for_console_pattern(
        &self,
        success: &str,
        failure: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        let con = self.console_socket()?;
        con.wait_for_either(success, failure, timeout).map_err(|e| {
            self.console_failure(&format!("waiting for {success:?} on the console"), e)
        })
    }

    /// Types `cmd` and Enter on the console.
    pub fn exec_command(&self, cmd: &str) -> Result<()> {
        let con = self.console_socket()?;
        con.send(&format!("{cmd}\r"))
            .map_err(|e| self.console_failure("sending to the console", e))
    }

    /// Types `cmd` and Enter, then waits for `success` (or fails on `failure`).
    pub fn exec_command_and_wait_for_pattern(
        &self,
        cmd: &str,
        success: &str,
        failure: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        self.exec_command(cmd)?;
        self.wait_for_console_pattern(success, failure, timeout)
    }

    /// Sends `interrupt` repeatedly until `pattern` appears.
    pub fn interrupt_interactive_console_until_pattern(
        &self,
        pattern: &str,
        interrupt: &str,
        timeout: Duration,
    ) -> Result<String> {
        let con = self.console_socket()?;
        let deadline = Instant::now() + timeout;
        loop {
            con.send(interrupt)
                .map_err(|e| self.console_failure("sending to the console", e))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match con.wait_for(pattern, left.min(Duration::from_secs(1))) {
                Ok(out) => return Ok(out),
                Err(ConsoleError::Timeout { .. }) if !left.is_zero() => continue,
                Err(ConsoleError::Timeout { tail, .. }) => {
                    return Err(Error::Console(ConsoleError::Timeout {
                        what: format!("console text {pattern:?} while interrupting"),
                        after: timeout,
                        tail,
                    }))
                }
                Err(e) => return Err(self.console_failure(&format!("waiting for {pattern:?}"), e)),
            }
        }
    }

    // ---- qtest ---------------------------------------------------------

    /// Sends one qtest line; returns the reply line.
    pub fn qtest(&mut self, line: &str) -> Result<String> {
        let timeout = self.opts.qmp_timer.max(DEFAULT_WAIT);
        let running = match &mut self.state {
            State::Running(r) => r,
            _ => return Err(self.not_running("qtest")),
        };
        let q = running.qtest.as_mut().ok_or_else(|| {
            Error::Machine(format!(
                "qtest: the machine {} was not made with qtest_machine()",
                self.name
            ))
        })?;
        let res = q.command(line, timeout);
        res.map_err(|e| match e {
            qtest::QtestError::Closed => self
                .exited_error("waiting for a qtest reply")
                .unwrap_or_else(|| Error::Machine("qtest: QEMU closed the qtest socket".into())),
            qtest::QtestError::Timeout(after) => Error::Timeout {
                what: format!("the qtest reply to {line:?}"),
                after,
                seen: Vec::new(),
            },
            qtest::QtestError::Io(m) => Error::host("qtest", m),
        })
    }
}
