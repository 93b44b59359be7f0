//! What a failed test leaves in its artifacts before its machines are
//! stopped: a screenshot of each machine with a display, and the guest
//! files `collect_on_failure` named; and the file names they are saved
//! under.

use std::path::PathBuf;

use crate::machine::{self, Machine};

use super::{lock, Run, SharedMachine};

impl Run {
    /// Saves a screenshot of every running machine that has a display, as
    /// `NAME-failure.png` in its artifacts, when a test has failed and
    /// before its machines are stopped. A machine without a display
    /// answers with an error, which is no problem.
    pub fn screenshot_machines(&self) {
        for m in lock(&self.machines).iter() {
            let Ok(mut m) = m.try_lock() else { continue };
            if m.is_running() && !m.log_dir().as_os_str().is_empty() {
                let path = screenshot_path(&m, "failure");
                let _ = m.screendump(&path);
            }
        }
    }

    /// Copies `paths` from `machine`'s guest into the artifacts should the
    /// test fail ([`Run::collect_guest_files`]).
    pub fn collect_on_failure(&self, machine: SharedMachine, paths: Vec<String>) {
        lock(&self.collect).push((machine, paths));
    }

    /// Copies the guest files `collect_on_failure` named into
    /// `NAME-files/` in each machine's artifacts, when a test has failed
    /// and before its machines are stopped; what cannot be copied (no
    /// agent, no such file) is named in `NAME-files/ERRORS`.
    pub fn collect_guest_files(&self) {
        let wanted = std::mem::take(&mut *lock(&self.collect));
        for (m, paths) in wanted {
            let Ok(m) = m.try_lock() else { continue };
            if !m.is_running() || m.log_dir().as_os_str().is_empty() {
                continue;
            }
            let dir = m
                .log_dir()
                .join(format!("{}-files", file_name_part(m.name())));
            let agent = m.guest_agent().ok().flatten();
            drop(m);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let mut errors = Vec::new();
            for p in paths {
                let to = dir.join(file_name_part(p.trim_start_matches('/')));
                let r = match &agent {
                    Some(a) => a.available().and_then(|ok| {
                        if ok {
                            a.copy_from(&p, &to)
                        } else {
                            Err(machine::Error::host(&p, "the guest agent does not answer"))
                        }
                    }),
                    None => Err(machine::Error::host(&p, "the machine has no guest agent")),
                };
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            if !errors.is_empty() {
                let _ = std::fs::write(dir.join("ERRORS"), errors.join("\n") + "\n");
            }
        }
    }
}

/// The path of a screenshot named `name` of machine `m`: in its artifacts
/// folder, `NAME-name.png`, with what cannot be in a file name replaced.
pub fn screenshot_path(m: &Machine, name: &str) -> PathBuf {
    m.log_dir()
        .join(format!("{}-{}.png", m.name(), file_name_part(name)))
}

/// `name` with every character but ASCII letters, digits, `-`, `_` and
/// `.` replaced by `_`: a part of a file name that is safe anywhere.
pub fn file_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
