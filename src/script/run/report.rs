//! What is left of a run once it has finished ([`RunReport`]), and how a
//! QEMU crash found at cleanup turns into the test's result.

use std::path::PathBuf;

use super::StepRecord;
use crate::script::errors;

/// A machine's logs, for the failure report.
#[derive(Debug, Clone)]
pub struct MachineLogs {
    pub name: String,
    pub qemu_log: PathBuf,
    pub console_log: Option<PathBuf>,
}

/// What is left of a run once it has finished.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Every launched machine's logs.
    pub machines: Vec<MachineLogs>,
    /// The captured `print`/`log` lines (the last ones).
    pub output: Vec<String>,
    /// Cleanup problems (a machine that would not die, a temp dir that
    /// would not go).
    pub problems: Vec<String>,
    /// Machines the cleanup found crashed (killed by a signal vmscript did
    /// not send), one line each naming the machine and the signal.
    pub crashes: Vec<String>,
    /// Artifacts that could not be written or were cut short (a full or
    /// read-only disk), one line each naming the file and the error.
    pub lost: Vec<String>,
    /// Every `step()` the script took, in the order they started.
    pub steps: Vec<StepRecord>,
}

/// A test during which QEMU crashed does not pass: a pass becomes an
/// `AbnormalShutdown` naming the machine and the signal; a failure gets it
/// as context.
pub(crate) fn with_crashes(
    status: crate::script::Status,
    report: &RunReport,
    shown: &str,
) -> crate::script::Status {
    if report.crashes.is_empty() {
        return status;
    }
    let crashes = report.crashes.join("; ");
    match status {
        crate::script::Status::Failed(mut f) => {
            f.context.push(format!("crashed: {crashes}"));
            crate::script::Status::Failed(f)
        }
        _ => crate::script::Status::Failed(errors::Failure::plain(
            shown,
            "AbnormalShutdown",
            crashes,
        )),
    }
}
