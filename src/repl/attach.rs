//! `:console NAME`: the terminal attached to a machine's serial console.
//! Keys go to the guest as typed (raw mode: Ctrl-C, Tab and arrows
//! included), the guest's output shows as it comes, and `Ctrl-]` gives
//! the terminal back to the prompt, as with telnet.
//!
//! The console keeps its one reader: this follows the transcript the
//! reader fills ([`Console::output_since`]) and consumes nothing, so the
//! logs and later waits see everything that was shown here.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};

use crate::machine::{Console, ConsoleError};

/// The key that detaches: `Ctrl-]`.
pub const DETACH: u8 = 0x1d;

/// How long a look at the keyboard lasts before the console's output is
/// shown again.
const TICK: Duration = Duration::from_millis(20);

/// How an attachment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detached {
    /// `Ctrl-]` was pressed.
    ByKey,
    /// The keyboard's input ended.
    EndOfInput,
    /// The console closed (QEMU went away) or would not take input.
    Closed(String),
}

/// Puts the terminal back as it was when dropped.
struct RawMode(Termios);

impl RawMode {
    fn enter() -> Result<RawMode, String> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| format!("reading the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| format!("setting the terminal to raw mode: {e}"))?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

/// Attaches the terminal to `console` (of machine `name`) until `Ctrl-]`;
/// an error when stdin is no terminal.
pub fn attach(console: &Console, name: &str) -> Result<Detached, String> {
    if !std::io::stdin().is_terminal() {
        return Err(":console needs a terminal".into());
    }
    println!("[attached to {name}'s console; Ctrl-] returns to the prompt]");
    let raw = RawMode::enter()?;
    let ended = follow(console);
    drop(raw);
    match &ended {
        Detached::Closed(why) => println!("\n[{name}'s console closed: {why}]"),
        _ => println!("\n[detached from {name}'s console]"),
    }
    Ok(ended)
}

/// Copies keys to the guest and its output to the terminal until
/// `Ctrl-]`, the end of input or the console's end.
fn follow(console: &Console) -> Detached {
    let stdin = std::io::stdin();
    let mut at = console.end_offset();
    let mut keys = [0u8; 4096];
    loop {
        let (text, end) = console.output_since(at);
        at = end;
        if !text.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        if console.is_closed() && console.output_since(at).0.is_empty() {
            return Detached::Closed("QEMU closed it".into());
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(TICK.as_millis()).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Detached::Closed(format!("reading the keyboard: {e}")),
        }
        let n = match nix::unistd::read(stdin.as_raw_fd(), &mut keys) {
            Ok(0) => return Detached::EndOfInput,
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Detached::Closed(format!("reading the keyboard: {e}")),
        };
        let (typed, detach) = match keys[..n].iter().position(|&b| b == DETACH) {
            Some(i) => (&keys[..i], true),
            None => (&keys[..n], false),
        };
        if !typed.is_empty() {
            if let Err(e) = console.send_bytes(typed) {
                return Detached::Closed(match e {
                    ConsoleError::Closed { .. } => "QEMU closed it".into(),
                    e => e.to_string(),
                });
            }
        }
        if detach {
            return Detached::ByKey;
        }
    }
}
