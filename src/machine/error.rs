//! The machine layer's errors, one variant per fact a user needs.

use std::time::Duration;

use super::console::ConsoleError;
use super::tail::last_bytes;
use crate::qmp;

/// What went wrong with a machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Misuse of the API or an unexpected machine state.
    #[error("{0}")]
    Machine(String),
    /// A call that needs QEMU running, made before launch or after exit.
    #[error("{what}: the machine {machine} is not running")]
    NotRunning { what: String, machine: String },
    /// A configuration request that cannot be turned into arguments.
    #[error("{0}")]
    AddDevice(String),
    /// QEMU did not start, or did not get as far as a negotiated monitor.
    #[error("failed to launch QEMU ({cause}); exit code {}; command: {}; output: {}",
        .exitcode.map_or("none".to_string(), |c| c.to_string()), .command.join(" "), last_bytes(.output, 2000))]
    LaunchFailure {
        cause: String,
        exitcode: Option<i32>,
        command: Vec<String>,
        output: String,
    },
    /// The graceful shutdown failed and QEMU had to be killed.
    #[error("abnormal shutdown: {cause}")]
    AbnormalShutdown { cause: String },
    /// QEMU answered a command with an error.
    #[error("{command}: {class}: {desc}")]
    MonitorResponse {
        command: String,
        class: String,
        desc: String,
        reply: Box<serde_json::Value>,
    },
    /// QMP connection trouble.
    #[error("{0}")]
    Qmp(#[source] qmp::Error),
    /// QEMU exited while we waited for something.
    #[error("QEMU exited with code {} while {what}; last output:\n{log_tail}",
        .code.map_or("unknown".to_string(), |c| c.to_string()))]
    Exited {
        what: String,
        code: Option<i32>,
        log_tail: String,
    },
    /// Nothing matching arrived in time.
    #[error("timed out after {} waiting for {what}{}", secs(.after), seen_list(.seen))]
    Timeout {
        what: String,
        after: Duration,
        seen: Vec<String>,
    },
    /// The serial console failed.
    #[error("{0}")]
    Console(#[source] ConsoleError),
    /// A host operation (files, sockets) failed.
    #[error("{what}: {message}")]
    Host { what: String, message: String },
    /// An [`super::InterruptHandle`] ended the wait; QEMU is still running.
    #[error("interrupted while {what}")]
    Interrupted { what: String },
}

impl Error {
    /// The name of the matching `QEMUMachine` exception, used as the
    /// script-visible error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Interrupted { .. } | Error::Console(ConsoleError::Interrupted { .. }) => {
                "Interrupted"
            }
            Error::Machine(_) | Error::NotRunning { .. } | Error::Exited { .. } => {
                "QEMUMachineError"
            }
            Error::AddDevice(_) => "QEMUMachineAddDeviceError",
            Error::LaunchFailure { .. } => "VMLaunchFailure",
            Error::AbnormalShutdown { .. } => "AbnormalShutdown",
            Error::MonitorResponse { .. } => "MonitorResponseError",
            Error::Qmp(_) => "QMPError",
            Error::Timeout { .. } => "Timeout",
            Error::Console(ConsoleError::Timeout { .. }) => "Timeout",
            Error::Console(_) => "ConsoleError",
            Error::Host { .. } => "HostError",
        }
    }

    pub(crate) fn host(what: impl Into<String>, err: impl std::fmt::Display) -> Error {
        Error::Host {
            what: what.into(),
            message: err.to_string(),
        }
    }
}

/// A QMP timeout or interrupt is the machine's own; the rest is QMP trouble.
impl From<qmp::Error> for Error {
    fn from(e: qmp::Error) -> Self {
        match e {
            qmp::Error::Timeout { what, after } => Error::Timeout {
                what: what
                    .strip_prefix("waiting for ")
                    .unwrap_or(&what)
                    .to_string(),
                after,
                seen: Vec::new(),
            },
            qmp::Error::Interrupted { what } => Error::Interrupted { what },
            e => Error::Qmp(e),
        }
    }
}

impl From<ConsoleError> for Error {
    fn from(e: ConsoleError) -> Self {
        Error::Console(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn secs(d: &Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn seen_list(seen: &[String]) -> String {
    if seen.is_empty() {
        "; nothing else arrived".into()
    } else {
        format!("; seen meanwhile: {}", seen.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qmp_timeout_is_the_machines_timeout() {
        let e = Error::from(qmp::Error::Timeout {
            what: "waiting for the reply to query-status".into(),
            after: Duration::from_secs(2),
        });
        assert!(
            matches!(&e, Error::Timeout { what, after, seen }
                if what == "the reply to query-status" && after.as_secs() == 2 && seen.is_empty()),
            "{e:?}"
        );
        assert_eq!(e.kind(), "Timeout");
    }

    #[test]
    fn a_qmp_interrupt_is_the_machines_interrupt() {
        let e = Error::from(qmp::Error::Interrupted {
            what: "waiting for an event".into(),
        });
        assert!(matches!(&e, Error::Interrupted { what } if what == "waiting for an event"));
        assert_eq!(e.kind(), "Interrupted");
    }

    #[test]
    fn other_qmp_trouble_stays_qmp_trouble() {
        let e = Error::from(qmp::Error::Closed {
            what: "reading".into(),
        });
        assert!(matches!(e, Error::Qmp(qmp::Error::Closed { .. })), "{e:?}");
        assert_eq!(e.kind(), "QMPError");
    }
}
