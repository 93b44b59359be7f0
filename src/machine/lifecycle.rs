//! A machine's lifecycle as values: [`State::Running`] holds what exists
//! only while QEMU runs, [`State::Exited`] what a finished run leaves.
//! A launch makes a [`Running`]; [`Machine::shutdown`] and its variants end
//! it, and the cleanup turns it into an [`Exited`], so nothing of one run
//! is reset by hand before the next.
//!
//! Starting QEMU is [`super::launch`]'s; talking to it is
//! [`super::monitor`]'s and [`super::guest_io`]'s.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::monitor::Transcript;
use super::process::Process;
use super::qtest::Qtest;
use super::{Console, Error, Interrupters, Machine, Result};
use crate::qmp;
use crate::sync::lock;

/// Where a machine is in its lifecycle.
pub(super) enum State {
    /// Made (and perhaps configured), never launched.
    Configured,
    /// QEMU runs (or has exited and awaits its cleanup).
    Running(Running),
    /// QEMU has exited and everything of the run is released.
    Exited(Exited),
}

/// What a launch fixed, still reported once the run is over.
#[derive(Debug, Default)]
pub(super) struct Launched {
    pub sock_dir: std::path::PathBuf,
    pub log_dir: std::path::PathBuf,
    /// The whole command line.
    pub full_args: Vec<String>,
    /// The QMP greeting (`null` without a monitor).
    pub greeting: Value,
}

/// What exists only while QEMU runs.
pub(super) struct Running {
    pub launched: Launched,
    /// Removed at the cleanup, or earlier once empty.
    pub temp_dir: Option<tempfile::TempDir>,
    pub process: Arc<Process>,
    pub qmp: Option<qmp::Client>,
    pub console: Option<Console>,
    pub agent: Option<super::Agent>,
    pub qtest: Option<Qtest>,
    pub transcript: Option<Arc<Mutex<Transcript>>>,
    /// `quit` was sent, or QEMU is expected to exit by itself: the
    /// shutdown only waits.
    pub quit_issued: bool,
}

/// What a finished run leaves.
pub(super) struct Exited {
    pub launched: Launched,
    /// QEMU's exit code (negative for a signal); `None` when it never ran.
    pub code: Option<i32>,
    /// QEMU's output; `None` when it never ran.
    pub log: Option<String>,
    /// How QEMU crashed, when the shutdown found it killed by a signal
    /// nobody here sent.
    pub crash: Option<String>,
    /// The events the monitor still held when it closed, oldest first.
    /// The client itself is gone, and with it its descriptors.
    pub events: VecDeque<Value>,
}

impl Exited {
    /// A launch that failed before QEMU started.
    pub fn never_ran(launched: Launched) -> Exited {
        Exited {
            launched,
            code: None,
            log: None,
            crash: None,
            events: VecDeque::new(),
        }
    }
}

impl Running {
    /// After `quit`: waits (up to `deadline`) for QEMU to hang up the
    /// monitor, as it does on its way out, then closes our end. Every
    /// event QEMU sent stays queued ([`Machine::get_qmp_events`] still has
    /// them after the cleanup).
    fn close_qmp_after_quit(&mut self, deadline: Instant) {
        let Some(client) = self.qmp.as_mut() else {
            return;
        };
        if client.wait_closed(deadline.saturating_duration_since(Instant::now())) {
            client.close();
        }
    }

    /// Removes the temp dir now if nothing is left in it (its monitor
    /// socket goes once QEMU has connected): QEMU takes milliseconds to
    /// exit after `quit`, time in which the removal costs nothing. A dir
    /// still holding anything (a qtest socket, the script's files) stays
    /// for the cleanup, after QEMU's exit.
    fn remove_temp_dir_if_empty(&mut self) {
        let Some(t) = &self.temp_dir else { return };
        if std::fs::remove_dir(t.path()).is_ok() {
            // Gone: dropping the TempDir must not try again (and must not
            // remove a new dir someone made under the same name).
            if let Some(t) = self.temp_dir.take() {
                let _ = t.keep();
            }
        }
    }
}

impl Machine {
    /// Whether QEMU is running.
    pub fn is_running(&self) -> bool {
        self.running()
            .is_some_and(|r| r.process.exit_code().is_none())
    }

    /// QEMU's exit code once it has exited (negative for a signal).
    pub fn exitcode(&self) -> Option<i32> {
        match &self.state {
            State::Running(r) => r.process.exit_code(),
            State::Exited(e) => e.code,
            State::Configured => None,
        }
    }

    /// QEMU's pid while it runs.
    pub fn get_pid(&self) -> Option<i32> {
        self.running()
            .filter(|r| r.process.exit_code().is_none())
            .map(|r| r.process.pid())
    }

    /// QEMU's output, once it has exited and been cleaned up.
    pub fn get_log(&self) -> Option<&str> {
        self.exited().and_then(|e| e.log.as_deref())
    }

    /// How QEMU crashed (`"QEMU was killed by signal 11 (SIGSEGV)"`), when
    /// the last shutdown found it killed by a signal vmscript did not send.
    pub fn crash(&self) -> Option<&str> {
        self.exited().and_then(|e| e.crash.as_deref())
    }

    pub(super) fn running(&self) -> Option<&Running> {
        match &self.state {
            State::Running(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn running_mut(&mut self) -> Option<&mut Running> {
        match &mut self.state {
            State::Running(r) => Some(r),
            _ => None,
        }
    }

    fn exited(&self) -> Option<&Exited> {
        match &self.state {
            State::Exited(e) => Some(e),
            _ => None,
        }
    }

    /// What the current or last launch fixed.
    pub(super) fn launched(&self) -> Option<&Launched> {
        match &self.state {
            State::Running(r) => Some(&r.launched),
            State::Exited(e) => Some(&e.launched),
            State::Configured => None,
        }
    }

    /// Shuts QEMU down: `quit` over QMP and up to `timeout` for it to exit,
    /// then SIGKILL (at once when `hard`). Cleanup always happens; a failed
    /// graceful path is reported as [`Error::AbnormalShutdown`] afterwards,
    /// and so is a QEMU found killed by a signal that vmscript did not send
    /// (a crash: SIGSEGV, SIGABRT, a SIGKILL from elsewhere), before or
    /// during the shutdown, with the signal named ([`Machine::crash`]).
    pub fn shutdown(&mut self, hard: bool, timeout: Duration) -> Result<()> {
        let Some(running) = self.running_mut() else {
            return Ok(());
        };
        let process = running.process.clone();
        let deadline = Instant::now() + timeout;
        let mut problem: Option<String> = None;
        if hard {
            process.kill();
        } else if process.exit_code().is_none() {
            if let (Some(client), false) = (running.qmp.as_ref(), running.quit_issued) {
                match client.execute("quit", None, timeout) {
                    Ok(_) => {}
                    // The hang-up can beat the reply; QEMU is exiting anyway.
                    Err(qmp::Error::Closed { .. }) => {}
                    Err(e) => problem = Some(format!("quit failed ({e}), so QEMU was killed")),
                }
                running.quit_issued = true;
                running.close_qmp_after_quit(deadline);
                running.remove_temp_dir_if_empty();
            } else if running.qmp.is_none() && !running.quit_issued {
                // No monitor to ask: a polite signal instead, QEMU's own
                // way to a clean exit.
                process.signal(libc::SIGTERM);
            }
            if process
                .wait_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_none()
            {
                problem.get_or_insert_with(|| {
                    format!(
                        "QEMU did not exit within {}s, so it was killed",
                        timeout.as_secs_f64()
                    )
                });
                process.kill();
            }
        }
        self.cleanup();
        if let (State::Exited(exited), None) = (&mut self.state, &problem) {
            // `quit` and a guest poweroff end in an exit code: a signal
            // that vmscript did not send is a crash, even after `quit`.
            if let Some(code) = exited.code.filter(|c| *c < 0) {
                if !hard && !process.was_sent(-code) {
                    let crash = format!("QEMU was killed by signal {}", signal_name(-code));
                    exited.crash = Some(crash.clone());
                    problem = Some(crash);
                }
            }
        }
        match problem {
            Some(cause) => Err(Error::AbnormalShutdown { cause }),
            None => Ok(()),
        }
    }

    /// Hard shutdown: SIGKILL and cleanup.
    pub fn kill(&mut self) {
        let _ = self.shutdown(true, Duration::ZERO);
    }

    /// Waits up to `timeout` for QEMU to exit by itself (guest poweroff),
    /// then cleans up; kills it and reports [`Error::AbnormalShutdown`]
    /// when it does not.
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        if let Some(r) = self.running_mut() {
            r.quit_issued = true;
        }
        self.shutdown(false, timeout)
    }

    /// Ends the run: releases monitor, console, qtest and temp dir, reads
    /// the log, and leaves what the run left as [`State::Exited`].
    pub(super) fn cleanup(&mut self) {
        if !matches!(self.state, State::Running(_)) {
            return;
        }
        let State::Running(mut running) = std::mem::replace(&mut self.state, State::Configured)
        else {
            unreachable!("checked above")
        };
        if running.process.exit_code().is_none() {
            running.process.kill();
        }
        let code = running.process.exit_code();
        let events = running.qmp.take().map_or_else(VecDeque::new, |mut client| {
            client.close();
            client.drain_events().into()
        });
        let log_dir = &running.launched.log_dir;
        if let Some(console) = running.console.take() {
            console.close();
            if let Some(e) = console.log_error() {
                let path = self.log_file(log_dir, "console.log");
                self.artifact_errors
                    .push(format!("writing {}: {e}", path.display()));
            }
        }
        running.qtest.take();
        if let Some(w) = running.transcript.take() {
            if let Some(e) = lock(&w).flush() {
                let path = self.log_file(log_dir, "qmp.jsonl");
                self.artifact_errors
                    .push(format!("writing {}: {e}", path.display()));
            }
        }
        if let Some(e) = running.process.log_error() {
            self.artifact_errors.push(e);
        }
        let log = std::fs::read(self.log_file(log_dir, "log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.kill_handle.set(None);
        self.interrupt_handle.set(Interrupters::default());
        // Logs outside the temp dir stay; the temp dir (and the sockets in it) go.
        if let Some(t) = running.temp_dir.take() {
            let _ = t.close();
        }
        self.state = State::Exited(Exited {
            launched: running.launched,
            code,
            log: Some(log),
            crash: None,
            events,
        });
    }
}

/// A signal's number and name: `11 (SIGSEGV)`.
fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("{signal} ({})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}
