//! The machine's QMP side: commands, events and the QMP transcript, with
//! QMP failures turned into the machine's errors (a hang-up because QEMU
//! exited names its exit code).
//!
//! The wire protocol itself is [`crate::qmp`]'s. While QEMU runs, events
//! queue in the QMP client; when the run ends, what it still held moves
//! to the [`super::lifecycle::Exited`] state (and the client, with its
//! descriptors, goes), so they can still be read.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::lifecycle::{Running, State};
use super::tail::last_lines;
use super::{events, Error, EventWait, Machine, Result, DEFAULT_WAIT};
use crate::qmp;
use crate::sync::lock;

/// The QMP transcript file and the first error writing it, after which
/// it stops (so it never ends in half a line written later).
pub(super) struct Transcript {
    out: std::io::BufWriter<File>,
    error: Option<String>,
}

impl Transcript {
    fn write(&mut self, parts: &[&[u8]]) {
        use std::io::Write;
        if self.error.is_some() {
            return;
        }
        if let Err(e) = parts.iter().try_for_each(|p| self.out.write_all(p)) {
            self.error = Some(e.to_string());
        }
    }

    /// Flushes the file; the first error writing it, if any.
    pub fn flush(&mut self) -> Option<String> {
        use std::io::Write;
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e.to_string());
            }
        }
        self.error.clone()
    }
}

impl Machine {
    /// Opens the QMP transcript when the options ask for one: the file,
    /// and the observer that writes every message to it with a timestamp.
    /// A file that cannot be made is an artifact error, not a failure.
    pub(super) fn open_transcript(&mut self) -> Option<(Arc<Mutex<Transcript>>, qmp::Observer)> {
        if !self.opts.qmp_transcript {
            return None;
        }
        let path = self.qmp_transcript_path();
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                self.artifact_errors
                    .push(format!("creating {}: {e}", path.display()));
                return None;
            }
        };
        let w = Arc::new(Mutex::new(Transcript {
            out: std::io::BufWriter::new(file),
            error: None,
        }));
        let writer = w.clone();
        let start = self.opts.clock.unwrap_or_else(Instant::now);
        let observer: qmp::Observer = Arc::new(move |dir: qmp::Direction, bytes: &[u8]| {
            let mut w = lock(&writer);
            let dir = match dir {
                qmp::Direction::Sent => "sent",
                qmp::Direction::Received => "received",
            };
            let t = start.elapsed().as_secs_f64();
            // Only parsed (so valid JSON) messages reach the observer.
            let head = format!("{{\"t\":{t:.6},\"dir\":\"{dir}\",\"msg\":");
            w.write(&[head.as_bytes(), bytes, b"}\n"]);
        });
        Some((w, observer))
    }

    // ---- commands ------------------------------------------------------

    /// Sends a command; returns the whole reply. `conv_keys` turns `_` into
    /// `-` in top-level argument keys.
    pub fn qmp(
        &mut self,
        cmd: &str,
        args: Option<&Map<String, Value>>,
        conv_keys: bool,
    ) -> Result<Value> {
        let converted;
        let args = match args {
            Some(a) if conv_keys && a.keys().any(|k| k.contains('_')) => {
                converted = a
                    .iter()
                    .map(|(k, v)| (k.replace('_', "-"), v.clone()))
                    .collect::<Map<String, Value>>();
                Some(&converted)
            }
            a => a,
        };
        if cmd == "quit" {
            if let Some(r) = self.running_mut() {
                r.quit_issued = true;
            }
        }
        let client = self.client(cmd)?;
        client
            .execute(cmd, args, self.opts.qmp_timer.max(DEFAULT_WAIT))
            .map_err(|e| self.qmp_failure(&format!("waiting for the reply to {cmd}"), e))
    }

    /// Sends a command; returns its `return` value, or
    /// [`Error::MonitorResponse`] for an error reply.
    pub fn command(
        &mut self,
        cmd: &str,
        args: Option<&Map<String, Value>>,
        conv_keys: bool,
    ) -> Result<Value> {
        let reply = self.qmp(cmd, args, conv_keys)?;
        qmp::split_reply(reply).map_err(|e| Error::MonitorResponse {
            command: cmd.to_string(),
            class: e.class,
            desc: e.desc,
            reply: e.reply,
        })
    }

    /// Runs an HMP command line through `human-monitor-command`.
    pub fn hmp(&mut self, command_line: &str) -> Result<String> {
        let mut args = Map::new();
        args.insert("command-line".into(), Value::from(command_line));
        let r = self.command("human-monitor-command", Some(&args), false)?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Saves the display as a PNG at `path` (QMP `screendump`).
    pub fn screendump(&mut self, path: &Path) -> Result<()> {
        let mut args = Map::new();
        args.insert("filename".into(), Value::from(path.display().to_string()));
        args.insert("format".into(), Value::from("png"));
        self.command("screendump", Some(&args), false).map(drop)
    }

    /// Presses the keys of `combination` (`"ctrl-alt-delete"`, `"ret"`)
    /// together, then releases them (QMP `send-key`).
    pub fn send_key(&mut self, combination: &str) -> Result<()> {
        let keys = super::keys::combination(combination)
            .map_err(|e| Error::Machine(format!("send_key: {e}")))?;
        self.send_keys(&keys)
    }

    /// Types `text` key by key as on a US keyboard. Errors name the first
    /// character no key types, before any key is sent.
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        let mut presses = Vec::with_capacity(text.len());
        for c in text.chars() {
            let keys = super::keys::for_char(c).ok_or_else(|| {
                Error::Machine(format!(
                    "type_text: no key types {c:?}; use send_key for other keys"
                ))
            })?;
            presses.push(keys);
        }
        for keys in presses {
            self.send_keys(&keys)?;
        }
        Ok(())
    }

    fn send_keys<S: AsRef<str>>(&mut self, keys: &[S]) -> Result<()> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| serde_json::json!({ "type": "qcode", "data": k.as_ref() }))
            .collect();
        let mut args = Map::new();
        args.insert("keys".into(), Value::from(keys));
        self.command("send-key", Some(&args), false).map(drop)
    }

    /// Passes a descriptor to QEMU over the monitor (SCM_RIGHTS).
    pub fn send_fd_scm(&mut self, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        self.client("send_fd_scm")?
            .send_fd_scm(fd)
            .map_err(|e| self.qmp_failure("sending a file descriptor", e))
    }

    /// Opens `path` and passes it to QEMU over the monitor.
    pub fn send_file_scm(&mut self, path: &Path) -> Result<()> {
        let f = File::options()
            .read(true)
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .map_err(|e| Error::host(format!("opening {}", path.display()), e))?;
        use std::os::fd::AsFd;
        self.send_fd_scm(f.as_fd())
    }

    // ---- events --------------------------------------------------------

    /// One queued event, optionally waiting for it.
    pub fn get_qmp_event(&mut self, wait: EventWait) -> Result<Option<Value>> {
        match &mut self.state {
            State::Configured => Ok(None),
            // What the closed monitor held is all there will be.
            State::Exited(e) => Ok(e.events.pop_front()),
            State::Running(_) => {
                let timeout = match wait {
                    EventWait::No => Duration::ZERO,
                    EventWait::Forever => Duration::from_secs(365 * 86400),
                    EventWait::For(d) => d,
                };
                self.client("get_qmp_event")?
                    .take_event(timeout, |_| true)
                    .map_err(|e| self.qmp_failure("waiting for an event", e))
            }
        }
    }

    /// Every queued event (after waiting for one, if asked).
    pub fn get_qmp_events(&mut self, wait: EventWait) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        if matches!(self.state, State::Running(_)) && wait != EventWait::No {
            out.extend(self.get_qmp_event(wait)?);
        }
        match &mut self.state {
            State::Running(Running { qmp: Some(c), .. }) => out.extend(c.drain_events()),
            State::Exited(e) => out.extend(e.events.drain(..)),
            _ => {}
        }
        Ok(out)
    }

    /// Drops every queued event.
    pub fn clear_events(&mut self) {
        match &mut self.state {
            State::Running(Running { qmp: Some(c), .. }) => c.clear_events(),
            State::Exited(e) => e.events.clear(),
            _ => {}
        }
    }

    /// Waits for an event named `name` that matches `filter`. `Ok(None)`
    /// only for a zero timeout with nothing queued that matches.
    pub fn event_wait(
        &mut self,
        name: &str,
        timeout: Duration,
        filter: Option<&Value>,
    ) -> Result<Option<Value>> {
        self.events_wait(&[(name.to_string(), filter.cloned())], timeout)
    }

    /// Waits for the first event that matches any `(name, filter)` pair.
    /// Events that do not match stay queued, in order.
    pub fn events_wait(
        &mut self,
        events: &[(String, Option<Value>)],
        timeout: Duration,
    ) -> Result<Option<Value>> {
        let matches = |ev: &Value| events::matches_any(ev, events);
        // Described only when it fails: a wait that succeeds formats nothing.
        let what = || events::describe(events);
        if let State::Exited(e) = &mut self.state {
            if let Some(i) = e.events.iter().position(matches) {
                return Ok(e.events.remove(i));
            }
        }
        let client = match &self.state {
            State::Running(Running { qmp: Some(c), .. }) => c,
            _ => return Err(self.no_client(&format!("waiting for {}", what()))),
        };
        match client.take_event(timeout, matches) {
            Ok(Some(ev)) => Ok(Some(ev)),
            Ok(None) if timeout.is_zero() => Ok(None),
            Ok(None) => Err(Error::Timeout {
                what: what(),
                after: timeout,
                seen: client
                    .queued_events()
                    .iter()
                    .map(|e| {
                        e.get("event")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect(),
            }),
            Err(e) => Err(self.qmp_failure(&format!("waiting for {}", what()), e)),
        }
    }

    // ---- failures ------------------------------------------------------

    fn client(&self, what: &str) -> Result<&qmp::Client> {
        self.running()
            .and_then(|r| r.qmp.as_ref())
            .ok_or_else(|| self.no_client(what))
    }

    /// Why there is no QMP client to do `what`.
    fn no_client(&self, what: &str) -> Error {
        if self.running().is_none() {
            self.not_running(what)
        } else {
            Error::Machine(format!(
                "{what}: the machine {} has no QMP monitor",
                self.name
            ))
        }
    }

    /// Turns a QMP failure while doing `what` into what the user should
    /// see: an exit of QEMU names its code and last output; a timeout and
    /// an interrupt are the machine's own.
    fn qmp_failure(&self, what: &str, err: qmp::Error) -> Error {
        match err {
            qmp::Error::Closed { .. } => self.exited_error(what).unwrap_or(Error::Qmp(err)),
            qmp::Error::Interrupted { .. } => Error::Interrupted {
                what: what.to_string(),
            },
            e => e.into(),
        }
    }

    /// [`Error::Exited`] when QEMU has exited (or does so within a moment).
    pub(super) fn exited_error(&self, what: &str) -> Option<Error> {
        let running = self.running()?;
        // The hang-up comes a moment before the exit.
        let code = running.process.wait_timeout(Duration::from_secs(1))?;
        let out = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Some(Error::Exited {
            what: what.to_string(),
            code: Some(code),
            log_tail: last_lines(&out, 10),
        })
    }
}
