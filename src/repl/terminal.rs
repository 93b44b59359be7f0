//! What `vmscript repl` and `vmscript qmp` share at the terminal: lines
//! shown above the prompt while the line editor owns it, the history
//! file, and the thread that receives signals. What a line means, what an
//! event is and what a signal does stay with each front end.

use std::path::Path;

use rustyline::history::FileHistory;
use rustyline::{Editor, ExternalPrinter, Helper};
use signal_hook::iterator::{Handle, Signals};

/// Prints lines above the prompt from any thread: through the line
/// editor's external printer, which redraws the prompt and what is typed
/// after the line. Without a terminal there is none ([`AbovePrompt::is_live`]).
pub struct AbovePrompt(Option<Box<dyn ExternalPrinter + Send>>);

impl AbovePrompt {
    pub fn new<H: Helper>(editor: &mut Editor<H, FileHistory>) -> AbovePrompt {
        AbovePrompt(
            editor
                .create_external_printer()
                .ok()
                .map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>),
        )
    }

    /// Whether lines go above a live prompt (a terminal).
    pub fn is_live(&self) -> bool {
        self.0.is_some()
    }

    /// Shows `line` above the prompt, or as a plain line without one.
    pub fn print(&mut self, line: String) {
        match self.0.as_mut() {
            Some(p) => {
                let _ = p.print(format!("{line}\n"));
            }
            None => println!("{line}"),
        }
    }
}

/// Saves the history to `path`, making its folder. A history that cannot
/// be saved is not worth interrupting the user for.
pub fn save_history(history: &mut FileHistory, path: &Path) {
    use rustyline::history::History;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = history.save(path);
}

/// Receives `signals` on a thread of its own, named `name`, which runs
/// `watch` until the returned handle is closed.
pub fn watch_signals(
    signals: &[i32],
    name: &str,
    watch: impl FnOnce(Signals) + Send + 'static,
) -> std::io::Result<Handle> {
    let signals = Signals::new(signals)?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 << 10)
        .spawn(move || watch(signals))?;
    Ok(handle)
}
