//! The integration tests, in one binary so that the crate and Rhai are
//! linked once for all of them (as ripgrep's tests are). Each module is
//! the tests of one concern; the shared harness is `tests/common`.
//!
//! `tests/leaks.rs` and `tests/soak.rs` stay binaries of their own: they
//! count this process's descriptors and children, which the tests here,
//! running at the same time, would change.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod boot_cache;
mod debug;
mod faults;
mod guest;
mod load;
mod machine;
mod modules;
mod parallel;
mod parent_death;
mod readme;
mod repl;
mod report;
mod run_output;
mod runner;
mod script_api;
mod script_faults;
mod security;
mod setup_script;
