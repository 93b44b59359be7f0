//! The console's lines with the time each began, as JSON lines
//! (`{"t":1.234567,"line":"…"}`) beside the raw log, on the clock of the
//! machine's QMP transcript: a test's start when it runs under the
//! runner. The raw log keeps every byte; this file is for reading the
//! console against QMP and the script's log.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

/// Bytes of one line kept before it is written out as a line of its own
/// (a guest that prints without newlines still shows up in time).
const MAX_LINE: usize = 16 << 10;

/// A console log with a timestamp per line.
pub(super) struct TimedLog {
    out: BufWriter<File>,
    clock: Instant,
    /// The current line so far, and when its first byte arrived.
    line: Vec<u8>,
    began: f64,
}

impl TimedLog {
    pub(super) fn new(file: File, clock: Instant) -> TimedLog {
        TimedLog {
            out: BufWriter::new(file),
            clock,
            line: Vec::new(),
            began: 0.0,
        }
    }

    /// Adds a chunk of output; each line ended in it is written.
    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let now = self.clock.elapsed().as_secs_f64();
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.began = now;
            }
            match piece.strip_suffix(b"\n") {
                Some(text) => {
                    self.line.extend_from_slice(text);
                    self.emit()?;
                }
                None => {
                    self.line.extend_from_slice(piece);
                    if self.line.len() >= MAX_LINE {
                        self.emit()?;
                    }
                }
            }
        }
        // Whole lines reach the file as they come: a run that is killed
        // loses no more than the raw log does.
        self.out.flush()
    }

    fn emit(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        let quoted = serde_json::to_string(text).map_err(std::io::Error::other)?;
        writeln!(self.out, "{{\"t\":{:.6},\"line\":{quoted}}}", self.began)?;
        self.line.clear();
        Ok(())
    }
}

impl Drop for TimedLog {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let _ = self.emit();
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> Vec<(f64, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["t"].as_f64().unwrap(),
                    v["line"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_carry_the_time_their_first_byte_arrived() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let clock = Instant::now() - std::time::Duration::from_secs(5);
        let mut log = TimedLog::new(f.reopen().unwrap(), clock);
        log.write(b"boot\r\nlogin: \"x\"").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        log.write(b" \xff done\n\npartial").unwrap();
        drop(log);
        let got = lines(f.path());
        let text: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(text, ["boot", "login: \"x\" \u{fffd} done", "", "partial"]);
        // On the given clock, and a line is as old as its first byte.
        assert!(got[0].0 >= 5.0, "{got:?}");
        assert_eq!(got[0].0, got[1].0, "{got:?}");
        assert!(got[2].0 >= got[1].0 + 0.15, "{got:?}");
    }

    #[test]
    fn a_line_without_an_end_is_written_in_pieces() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut log = TimedLog::new(f.reopen().unwrap(), Instant::now());
        log.write(&vec![b'x'; MAX_LINE + 10]).unwrap();
        let got = lines(f.path());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), MAX_LINE + 10);
    }
}
