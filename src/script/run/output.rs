//! A run's `print` and `log` output: captured for the report or sent to
//! stdout, and always written to `script.log` in the artifacts.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::{lock, Run};

/// How many lines of captured output are kept for the report.
const CAPTURE_LINES: usize = 2000;

/// `print` and `log` output: captured for the report or sent to stdout,
/// and always written to `script.log` in the artifacts.
pub(super) struct Output {
    pub(super) capture: AtomicBool,
    pub(super) start: Instant,
    pub(super) lines: Mutex<VecDeque<String>>,
    pub(super) file: Mutex<Option<File>>,
    /// Why `script.log` is incomplete: the first error, after which it
    /// is closed (so it never goes on after a gap).
    pub(super) error: Mutex<Option<(&'static str, String)>>,
}

impl Output {
    pub(super) fn line(&self, line: String) {
        let mut file = lock(&self.file);
        if let Some(f) = file.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                *file = None;
                lock(&self.error).get_or_insert(("writing", e.to_string()));
            }
        }
        drop(file);
        if self.capture.load(Ordering::Relaxed) {
            let mut lines = lock(&self.lines);
            for l in line.lines() {
                if lines.len() == CAPTURE_LINES {
                    lines.pop_front();
                }
                lines.push_back(l.to_string());
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

impl Run {
    /// Captures `print`/`log` output for the report (`true`) or sends it to
    /// stdout; returns the setting it replaces.
    pub fn set_capture(&self, capture: bool) -> bool {
        self.output.capture.swap(capture, Ordering::Relaxed)
    }

    /// `print` output.
    pub fn print(&self, text: &str) {
        self.output.line(text.to_string());
    }

    /// `log` output: timestamped with the time since the run started.
    pub fn log(&self, text: &str) {
        let t = self.output.start.elapsed().as_secs_f64();
        self.output.line(format!("[{t:9.3}s] {text}"));
    }
}
