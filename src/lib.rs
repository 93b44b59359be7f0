//! vmscript drives QEMU virtual machines from Rhai scripts.
//!
//! The crate is layered, and each layer knows only those below it:
//!
//! - [`qmp`]: the QMP wire protocol on one socket (no processes).
//! - [`machine`]: a QEMU process with its QMP monitor, events and serial
//!   console, as a plain Rust API modelled on QEMU's Python `QEMUMachine`.
//! - [`bootcache`]: boot once, save the booted state, restore it after.
//! - [`script`]: the Rhai bindings over [`machine`], and running one script.
//! - [`runner`]: `vmscript run`: finding, running and reporting tests.
//! - [`repl`]: `vmscript repl` (a script session, line by line) and
//!   `vmscript qmp` (a QMP shell for a QEMU started elsewhere).
//!
//! The first two are usable from Rust without Rhai. Beneath them all,
//! [`sync`] holds the one way every layer waits (a deadline, an interrupt,
//! several waiters).

pub mod bootcache;
pub mod machine;
pub mod qmp;
pub mod repl;
pub mod runner;
pub mod script;
pub mod sync;
