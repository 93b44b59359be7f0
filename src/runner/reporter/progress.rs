//! The live progress line on a terminal: elapsed time, tests done out of
//! all, passed and failed, and the tests running now with their times.
//! Drawn on stderr, cleared before any other output and drawn again after
//! it, and cut to the terminal's width so that it never wraps. The counts
//! of passed and failed tests are coloured unless `NO_COLOR` or
//! `CLICOLOR=0` says not to.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::super::results::Counts;

/// What the line shows.
#[derive(Debug, Clone, Default)]
pub struct ProgressState {
    pub elapsed: Duration,
    pub total: usize,
    pub counts: Counts,
    /// The running tests: name, try number and time so far, oldest first.
    pub running: Vec<(String, u32, Duration)>,
}

/// Whether to draw the line: stderr is a terminal that can erase a line.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// The line, at most `width` characters.
pub fn render(s: &ProgressState, width: usize) -> String {
    let c = &s.counts;
    let mut line = format!(
        "[{:>5}s] {}/{} done: {} passed, {} failed",
        s.elapsed.as_secs(),
        c.done(),
        s.total,
        c.passed,
        c.failed
    );
    if c.skipped > 0 {
        line.push_str(&format!(", {} skipped", c.skipped));
    }
    if !s.running.is_empty() {
        let names: Vec<String> = s
            .running
            .iter()
            .map(|(name, number, d)| {
                let t = if *number > 1 {
                    format!(" (try {number})")
                } else {
                    String::new()
                };
                format!("{name}{t} {}s", d.as_secs())
            })
            .collect();
        line.push_str(&format!(
            " | {} running: {}",
            s.running.len(),
            names.join(", ")
        ));
    }
    if line.chars().count() > width {
        let mut cut: String = line.chars().take(width.saturating_sub(3)).collect();
        cut.push_str("...");
        return cut;
    }
    line
}

/// `line` (as [`render`] made it) with its counts of passed and failed
/// tests coloured, when there are any.
pub fn styled(line: &str, c: &Counts) -> String {
    let mut out = line.to_string();
    // The counts come first, before any test's name.
    let failed = format!(" {} failed", c.failed);
    if c.failed > 0 {
        if let Some(i) = out.find(&failed) {
            let style = anstyle::AnsiColor::Red.on_default().bold();
            out.replace_range(
                i + 1..i + failed.len(),
                &format!("{style}{}{style:#}", &failed[1..]),
            );
        }
    }
    let passed = format!(" {} passed", c.passed);
    if c.passed > 0 {
        if let Some(i) = out.find(&passed) {
            let style = anstyle::AnsiColor::Green.on_default();
            out.replace_range(
                i + 1..i + passed.len(),
                &format!("{style}{}{style:#}", &passed[1..]),
            );
        }
    }
    out
}

/// The terminal's width in columns (80 when unknown).
fn width() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(ws) if ws.ws_col > 0 => usize::from(ws.ws_col),
        _ => 80,
    }
}

/// The line on stderr.
#[derive(Debug, Default)]
pub struct Progress {
    /// What is on the screen now, if anything.
    shown: Option<String>,
    /// The last line drawn, to draw again after other output.
    last: Option<String>,
    /// Whether stderr gets colours.
    colour: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            colour: anstream::AutoStream::choice(&std::io::stderr())
                != anstream::ColorChoice::Never,
            ..Progress::default()
        }
    }

    /// Draws `state` in place of the current line.
    pub fn draw(&mut self, state: &ProgressState) {
        // One column spare: writing the last column makes some terminals wrap.
        let mut line = render(state, width().saturating_sub(1));
        if self.colour {
            line = styled(&line, &state.counts);
        }
        if self.shown.as_deref() == Some(line.as_str()) {
            return;
        }
        self.put(&line);
        self.last = Some(line);
    }

    /// Erases the line.
    pub fn clear(&mut self) {
        if self.shown.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[K");
            let _ = err.flush();
        }
    }

    /// Draws the last line again (after other output).
    pub fn redraw(&mut self) {
        if let Some(line) = self.last.clone() {
            self.put(&line);
        }
    }

    fn put(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.shown = Some(line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_and_running_tests_within_the_width() {
        let s = ProgressState {
            elapsed: Duration::from_secs(12),
            total: 8,
            counts: Counts {
                passed: 3,
                failed: 1,
                ..Counts::default()
            },
            running: vec![
                ("boot.rhai".into(), 1, Duration::from_secs(8)),
                ("migrate.rhai".into(), 2, Duration::from_secs(3)),
            ],
        };
        assert_eq!(
            render(&s, 200),
            "[   12s] 4/8 done: 3 passed, 1 failed | 2 running: boot.rhai 8s, migrate.rhai (try 2) 3s"
        );
        let short = render(&s, 40);
        assert_eq!(short.chars().count(), 40);
        assert!(short.ends_with("..."));
        assert_eq!(
            styled(&short, &s.counts),
            "[   12s] 4/8 done: \x1b[32m3 passed\x1b[0m, \x1b[1m\x1b[31m1 failed\x1b[0m..."
        );
    }
}
