//! The `vmscript` command line: parses, dispatches, prints errors.
//!
//! Exit status: 0 when nothing failed, 1 when a test failed (or `check`
//! found an error), 2 for a usage or setup error, 128+N when stopped by
//! signal N.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use vmscript::runner::{self, Format, Partition};

use vmscript::{qmp, repl, script};

/// Counts heap bytes so that a runaway script is stopped with a clear error
/// before it takes the machine's memory.
#[global_allocator]
static ALLOC: vmscript::script::memory::CountingAlloc = vmscript::script::memory::CountingAlloc;

const EXAMPLES: &str = "\
Examples:
  vmscript run scripts/examples                 run every *.rhai below a folder
  vmscript run boot.rhai --timeout 60 --no-capture
  vmscript run tests/ --filter migration -- guest=/srv/guest
  vmscript run tests/ -j 4 --retries 2 --junit junit.xml --partition hash:1/3
  vmscript check scripts/examples               compile only
  vmscript doc | grep event_wait                the script API reference
  vmscript doc guest                            one module: bundled, or found like an import

Environment:
  VMSCRIPT_QEMU    the default QEMU binary (after --qemu)
  VMSCRIPT_PATH    colon-separated folders for `import` (after --lib)
  VMSCRIPT_GUEST   the test guest; when unset, <project>/.cache/guest if
                   vmscript runs from <project>/target/<profile>/ and it exists

Exit status: 0 nothing failed, 1 a test failed, 2 usage or setup error,
128+N stopped by signal N.";

const REPL_HELP: &str = "\
In the REPL: :help, :doc NAME, :load FILE, :save FILE, :vms, :events on|off, :quit.
Tab completes functions, methods, variables, QMP command names in vm.qmp(\"…\")
and event names in vm.event_wait(\"…\"). Ctrl-C interrupts a wait; Ctrl-D leaves
and shuts down every machine started in the session.
History: $XDG_STATE_HOME/vmscript/repl_history (else ~/.local/state/vmscript/).";

const QMP_HELP: &str = "\
Lines: `command-name key=value …` (values are JSON where they parse, else
strings; a.b=1 nests), or a raw JSON message. Tab completes command and
argument names from query-qmp-schema. Events print as they arrive.
-H sends lines as HMP commands; Tab completes them and `info` topics.
History: $XDG_STATE_HOME/vmscript/qmp_history and hmp_history (else in
~/.local/state/vmscript/).";

/// Drive QEMU virtual machines from Rhai scripts.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run test scripts: a test passes when it ends without an uncaught error.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Compile scripts without running them; report syntax errors as FILE:LINE:COL.
    Check {
        /// Script files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print every script function and bundled module with signatures and documentation.
    Doc {
        /// Document only this module, found as `import "MODULE"` finds it
        /// from the current folder (then --lib, $VMSCRIPT_PATH, the stdlib).
        module: Option<String>,
        /// Output format; markdown is docs/reference.md.
        #[arg(long, value_enum, default_value_t = DocFormat::Text)]
        format: DocFormat,
        /// A folder to look in for MODULE (repeatable; also $VMSCRIPT_PATH).
        #[arg(long, value_name = "DIR")]
        lib: Vec<PathBuf>,
    },
    /// Rhai with the whole script API, line by line: boot a VM, poke it, then :save the script.
    #[command(after_help = REPL_HELP)]
    Repl {
        /// The QEMU binary machine() uses by default [else $VMSCRIPT_QEMU, else qemu-system-<arch>].
        #[arg(long, value_name = "BINARY")]
        qemu: Option<PathBuf>,
        /// A folder to look in for `import "name"` (repeatable; also $VMSCRIPT_PATH).
        #[arg(long, value_name = "DIR")]
        lib: Vec<PathBuf>,
        /// Keep the machines' logs in DIR [default: a temp folder removed at the end].
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
    },
    /// A QMP shell on a running QEMU: a unix socket path or HOST:PORT.
    #[command(after_help = QMP_HELP)]
    Qmp {
        /// The monitor: QEMU started with -qmp unix:PATH,server=on,wait=off or -qmp tcp:HOST:PORT,server=on,wait=off.
        address: String,
        /// Send lines as HMP commands (human-monitor-command).
        #[arg(short = 'H', long)]
        hmp: bool,
        /// Connect and negotiate timeout, seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

/// How `vmscript doc` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DocFormat {
    Text,
    Markdown,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Script files and folders (a folder runs every *.rhai below it, except under lib/).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Tests run at once [default: one per CPU; 1 with --no-capture].
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Per-test timeout in seconds: the test is stopped, its machines killed, and it is reported as timed out.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    timeout: f64,
    /// The QEMU binary machine() uses by default [else $VMSCRIPT_QEMU, else qemu-system-<arch>].
    #[arg(long, value_name = "BINARY")]
    qemu: Option<PathBuf>,
    /// Keep every test's logs in DIR/<test>/ [default: a temp folder, where only failed tests' logs stay].
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Keep the artifacts of passing tests too.
    #[arg(long)]
    keep_artifacts: bool,
    /// Send print/log output straight to stdout instead of capturing it (runs one test at a time).
    #[arg(long)]
    no_capture: bool,
    /// A folder to look in for `import "name"` (repeatable; also $VMSCRIPT_PATH).
    #[arg(long, value_name = "DIR")]
    lib: Vec<PathBuf>,
    /// Run only tests whose name contains TEXT (repeatable).
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Start no more tests after the first failure (running ones finish).
    #[arg(long)]
    fail_fast: bool,
    /// Run a failed or timed-out test up to N more times; one that passes then is reported as flaky.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Run only share K of N of the selected tests: count:K/N (every Nth) or hash:K/N (by name), for splitting a suite across CI machines.
    #[arg(long, value_name = "SPEC")]
    partition: Option<Partition>,
    /// Output format on stdout (a live progress line is drawn on a terminal with the human format).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// KEY=VALUE pairs read in scripts with param(key).
    #[arg(last = true, value_name = "KEY=VALUE")]
    params: Vec<String>,
}

fn main() -> ExitCode {
    script::temp::treat_empty_tmpdir_as_unset();
    runner::default_guest_env();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => run(args),
        Command::Check { paths } => check(&paths),
        Command::Doc {
            module,
            format,
            lib,
        } => doc(module.as_deref(), format, &lib),
        Command::Repl {
            qemu,
            lib,
            artifacts,
        } => repl_session(qemu, lib, artifacts),
        Command::Qmp {
            address,
            hmp,
            timeout,
        } => qmp_shell(address, hmp, timeout),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: {s} is not a number of seconds"))
}

fn run(args: RunArgs) -> i32 {
    sweep_stale_temp_dirs();
    let options = (|| -> Result<runner::Options, String> {
        Ok(runner::Options {
            paths: args.paths,
            jobs: args.jobs.map_or(0, usize::from),
            timeout: secs(args.timeout, "--timeout")?,
            qemu: args.qemu,
            artifacts: args.artifacts,
            keep_artifacts: args.keep_artifacts,
            capture: !args.no_capture,
            lib_dirs: args.lib,
            filters: args.filter,
            fail_fast: args.fail_fast,
            retries: args.retries,
            partition: args.partition,
            format: args.format,
            junit: args.junit,
            params: runner::parse_params(&args.params).map_err(|e| e.0)?,
            progress: true,
        })
    })();
    match options.map(|o| runner::run(&o).map_err(|e| e.0)) {
        Ok(Ok(summary)) => summary.exit_code(),
        Ok(Err(e)) | Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}

fn check(paths: &[PathBuf]) -> i32 {
    let tests = match runner::discover::discover(paths) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            return 2;
        }
    };
    let mut failed = 0;
    for t in &tests {
        if let Err(f) = script::check_file(&t.path) {
            println!("{f}");
            failed += 1;
        }
    }
    println!("{} ok, {failed} with errors", tests.len() - failed);
    i32::from(failed > 0)
}

fn doc(module: Option<&str>, format: DocFormat, lib: &[PathBuf]) -> i32 {
    let text = match module {
        Some(name) => script::module_docs(name, lib).map(|m| match format {
            DocFormat::Text => script::docs::render_module(&m),
            DocFormat::Markdown => script::docs::render_markdown(&[], &[m]),
        }),
        None => script::reference()
            .map_err(|e| e.to_string())
            .and_then(|api| Ok((api, script::stdlib_docs()?)))
            .map(|(api, modules)| match format {
                DocFormat::Text => script::docs::render_all(&api, &modules),
                DocFormat::Markdown => script::docs::render_markdown(&api, &modules),
            }),
    };
    match text {
        Ok(t) => {
            print!("{t}");
            0
        }
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}

fn qmp_shell(address: String, hmp: bool, timeout: f64) -> i32 {
    let timeout = match secs(timeout, "--timeout") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            return 2;
        }
    };
    let opts = repl::qmp_shell::ShellOptions {
        address: qmp::Address::parse(&address),
        hmp,
        history: repl::history_path(if hmp { "hmp_history" } else { "qmp_history" }),
        timeout,
    };
    match repl::qmp_shell::run(&opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vmscript: error: {address}: {e}");
            2
        }
    }
}

/// What an earlier vmscript that was killed (SIGKILL) left in `$TMPDIR`.
fn sweep_stale_temp_dirs() {
    script::temp::sweep_stale(&std::env::temp_dir());
}

fn repl_session(qemu: Option<PathBuf>, lib: Vec<PathBuf>, artifacts: Option<PathBuf>) -> i32 {
    sweep_stale_temp_dirs();
    let opts = repl::ReplOptions {
        session: repl::session::SessionOptions {
            qemu,
            lib_dirs: lib,
            artifacts,
        },
        history: repl::history_path("repl_history"),
    };
    match repl::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}
