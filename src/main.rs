//! The `vmscript` command line: parses, dispatches, prints errors.
//!
//! Exit status: 0 when nothing failed, 1 when a test failed (or `check`
//! found an error), 2 for a usage or setup error, 4 when no test was
//! selected, 128+N when stopped by signal N.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use vmscript::runner::{self, Format, NoTests, Partition};

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
  vmscript run tests/ --tag smoke --timeout-multiplier 3
  vmscript run tests/boot.rhai --debug-on-fail  a REPL in a failed test, its machines alive
  vmscript list tests/ --format json            what run would run, cases included
  vmscript check scripts/examples               compile only
  vmscript doc | grep event_wait                the script API reference
  vmscript doc guest                            one module: bundled, or found like an import

Environment:
  VMSCRIPT_QEMU    the default QEMU binary (after --qemu)
  VMSCRIPT_PATH    colon-separated folders for `import` (after --lib)
  VMSCRIPT_GUEST   the test guest; when unset, <project>/.cache/guest if
                   vmscript runs from <project>/target/<profile>/ and it exists
  NO_COLOR=1 or CLICOLOR=0   no colours in the report (default: on a terminal)
  CLICOLOR_FORCE=1           colours even when stdout is not a terminal

Settings: vmscript.toml in the folder run (or the nearest parent) sets
[run] defaults and [[tests]] overrides; command-line options win.

Exit status: 0 nothing failed, 1 a test failed, 2 usage or setup error,
4 no test selected (see --no-tests), 128+N stopped by signal N.";

const REPL_HELP: &str = "\
In the REPL: :help, :doc NAME (also MODULE and MODULE::f), :load FILE, :save FILE,
:vms (vms() returns the machines), :console NAME (the terminal on a machine's
serial console; Ctrl-] comes back), :events on|off, :quit. Tab completes functions, methods, variables, module
functions (guest::run), QMP command names and argument keys in
vm.command(\"…\", #{…}) and event names in vm.event_wait(\"…\"). The bundled
modules need no import. Ctrl-C interrupts a wait; Ctrl-D leaves and shuts down
every machine started in the session.
History: $XDG_STATE_HOME/vmscript/repl_history (else ~/.local/state/vmscript/).";

const QMP_HELP: &str = "\
Lines: `command-name key=value …` (values are JSON where they parse, else
strings; a.b=1 nests), or a raw JSON message. Tab completes command and
argument names from query-qmp-schema. Events print as they arrive.
-H sends lines as HMP commands; Tab completes them and `info` topics.
`transaction(` starts a transaction: each following line is an action
(`type key=value …`), `)` sends them as one `transaction` command.
-l FILE appends every message and reply to FILE as JSON lines; -N skips
capabilities negotiation (for qemu-ga, which sends no greeting).
Exit status: 0 at end of input, 1 when the connection broke, 2 when it
could not be made.
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
    /// List the tests (test cases included) that `run` would run with the same options, with their tags.
    List {
        #[command(flatten)]
        select: SelectArgs,
        /// human: one test per line, its tags in brackets; json: one object per line.
        #[arg(long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
    },
    /// Compile scripts without running them; report syntax errors as FILE:LINE:COL.
    Check {
        /// Script files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also look for modules in DIR (as `run --lib`).
        #[arg(long = "lib", value_name = "DIR")]
        lib: Vec<PathBuf>,
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
    /// Make the HTML report of an earlier run from its artifacts folder (as `run --report` would have).
    Report {
        /// The run's artifacts folder (`run --artifacts DIR`, or the one a failed run named).
        dir: PathBuf,
        /// Where to write the report [default: DIR/report.html].
        #[arg(short = 'o', long, value_name = "FILE.html")]
        output: Option<PathBuf>,
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
        /// Append every message sent and every reply to FILE, one JSON per line.
        #[arg(short = 'l', long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Skip capabilities negotiation: no greeting, no qmp_capabilities (qemu-ga).
        #[arg(short = 'N', long)]
        no_negotiation: bool,
    },
    /// The boot cache of guest::boot ($XDG_CACHE_HOME/vmscript, else ~/.cache/vmscript).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

/// What `vmscript cache` does.
#[derive(Subcommand)]
enum CacheAction {
    /// One line per saved boot: id, size, last use, QEMU and what it boots.
    List,
    /// Remove every saved boot.
    Clear,
}

/// How `vmscript list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    Human,
    Json,
}

/// Which tests: shared by `run` and `list`.
#[derive(clap::Args)]
struct SelectArgs {
    /// Script files and folders (a folder runs every *.rhai below it, except under lib/).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Run only tests whose name contains TEXT (repeatable); a test case is named FILE::test_name.
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Run only tests with tag T (repeatable: any of them), tags being set in vmscript.toml.
    #[arg(long, value_name = "T")]
    tag: Vec<String>,
    /// Run no test with tag T (repeatable).
    #[arg(long, value_name = "T")]
    exclude_tag: Vec<String>,
    /// Run only share K of N of the selected tests: count:K/N (every Nth), hash:K/N (by name) or duration:K/N (balanced by earlier runs' durations), for splitting a suite across CI machines.
    #[arg(long, value_name = "SPEC")]
    partition: Option<Partition>,
    /// When no test is selected: fail (exit 4), warn (exit 0) or pass quietly.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = NoTests::Fail)]
    no_tests: NoTests,
    /// Scale every timeout, the per-test one and each wait of a script, by X [else $VMSCRIPT_TIMEOUT_MULTIPLIER, else vmscript.toml's].
    #[arg(long, value_name = "X")]
    timeout_multiplier: Option<f64>,
    /// Per-test timeout in seconds: the test is stopped, its machines killed, and it is reported as timed out [default: vmscript.toml's, else 300].
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Run a failed or timed-out test up to N more times; one that passes then is reported as flaky [default: vmscript.toml's, else 0].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Run only the tests that failed when they last ran (kept in .vmscript/ in the suite's folder).
    #[arg(long)]
    rerun_failed: bool,
}

/// How `vmscript doc` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DocFormat {
    Text,
    Markdown,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Tests run at once [default: vmscript.toml's, else one per CPU; 1 with --no-capture].
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
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
    /// Start no more tests after the first failure (running ones finish).
    #[arg(long)]
    fail_fast: bool,
    /// Announce a test still running after SECS as SLOW, with what it is doing [default: vmscript.toml's, else 60].
    #[arg(long, value_name = "SECS")]
    slow_timeout: Option<f64>,
    /// Output format on stdout (a live progress line is drawn on a terminal with the human format).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// When a test fails or times out, keep its machines and open a REPL in its scope (its variables, vms(), :console NAME) before its cleanup; Ctrl-D goes on with the next test. Runs tests one at a time, without retries; needs a terminal.
    #[arg(long)]
    debug_on_fail: bool,
    /// Also write FILE.html: one self-contained page with every test, failures first, each with its error, steps, console and a timeline of its machines.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// KEY=VALUE pairs read in scripts with param(key).
    #[arg(last = true, value_name = "KEY=VALUE")]
    params: Vec<String>,
}

fn main() -> ExitCode {
    script::temp::treat_empty_tmpdir_as_unset();
    runner::default_guest_env();
    let cli = Cli::parse();
    quiet_stdout_panics();
    let code = match std::panic::catch_unwind(|| dispatch(cli)) {
        Ok(code) => code,
        Err(panic) => match stdout_failure(panic.as_ref()) {
            Some(e) => {
                eprintln!("vmscript: error: {e}");
                2
            }
            None => std::panic::resume_unwind(panic),
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The error of a `println!` that could not write stdout (closed, a pipe
/// whose reader left, a full disk), from its panic's message.
fn stdout_failure(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())?;
    let e = text.strip_prefix("failed printing to stdout: ")?;
    Some(format!("writing to stdout: {e}"))
}

/// The REPL and the QMP shell print with `println!`, which panics when
/// stdout cannot be written: main turns that panic on its own thread into
/// one error line (after the machines are cleaned up as the stack
/// unwinds), so its default message is not shown.
fn quiet_stdout_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Only main catches it; elsewhere the panic is shown as it was.
        let on_main = std::thread::current().name() == Some("main");
        if !on_main || stdout_failure(info.payload()).is_none() {
            default(info);
        }
    }));
}

/// Writes `text` to stdout, or says why it could not (exit status 2).
fn print_out(text: &str) -> Result<(), i32> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            eprintln!("vmscript: error: writing to stdout: {e}");
            2
        })
}

fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => run(args),
        Command::List { select, format } => list(select, format),
        Command::Check { paths, lib } => check(&paths, &lib),
        Command::Doc {
            module,
            format,
            lib,
        } => doc(module.as_deref(), format, &lib),
        Command::Report { dir, output } => report(&dir, output),
        Command::Repl {
            qemu,
            lib,
            artifacts,
        } => repl_session(qemu, lib, artifacts),
        Command::Qmp {
            address,
            hmp,
            timeout,
            log,
            no_negotiation,
        } => qmp_shell(address, hmp, timeout, log, no_negotiation),
        Command::Cache { action } => cache(action),
    }
}

fn cache(action: CacheAction) -> i32 {
    let Some(store) = vmscript::bootcache::Store::from_env() else {
        eprintln!("vmscript: error: no cache dir: neither XDG_CACHE_HOME nor HOME is set");
        return 2;
    };
    match action {
        CacheAction::List => {
            let lines: Vec<String> = store
                .list()
                .iter()
                .map(vmscript::bootcache::describe_entry)
                .collect();
            let text = if lines.is_empty() {
                format!("no saved boots in {}\n", store.root().display())
            } else {
                lines.join("\n") + "\n"
            };
            print_out(&text).map_or_else(|code| code, |()| 0)
        }
        CacheAction::Clear => match store.clear() {
            Ok(n) => print_out(&format!(
                "removed {n} saved boot(s) from {}\n",
                store.root().display()
            ))
            .map_or_else(|code| code, |()| 0),
            Err(e) => {
                eprintln!("vmscript: error: clearing {}: {e}", store.root().display());
                2
            }
        },
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: {s} is not a number of seconds"))
}

/// The options of `run` and `list` that choose the tests.
fn selection(s: SelectArgs) -> Result<runner::Options, String> {
    if let Some(m) = s.timeout_multiplier {
        if !(m.is_finite() && m > 0.0) {
            return Err(format!("--timeout-multiplier: {m} is not a number above 0"));
        }
    }
    Ok(runner::Options {
        paths: s.paths,
        filters: s.filter,
        tags: s.tag,
        exclude_tags: s.exclude_tag,
        partition: s.partition,
        no_tests: s.no_tests,
        timeout_multiplier: s.timeout_multiplier,
        timeout: s.timeout.map(|t| secs(t, "--timeout")).transpose()?,
        retries: s.retries,
        rerun_failed: s.rerun_failed,
        ..runner::Options::default()
    })
}

fn list(select: SelectArgs, format: ListFormat) -> i32 {
    match selection(select)
        .and_then(|o| runner::list(&o, format == ListFormat::Json).map_err(|e| e.0))
    {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}

fn run(args: RunArgs) -> i32 {
    if args.debug_on_fail {
        if let Err(e) = repl::debug_available() {
            eprintln!("vmscript: error: {e}");
            return 2;
        }
    }
    sweep_stale_temp_dirs();
    start_watchdog();
    let options = (|| -> Result<runner::Options, String> {
        Ok(runner::Options {
            jobs: args.jobs.map_or(0, usize::from),
            qemu: args.qemu,
            artifacts: args.artifacts,
            keep_artifacts: args.keep_artifacts,
            capture: !args.no_capture,
            lib_dirs: args.lib,
            fail_fast: args.fail_fast,
            slow_timeout: args
                .slow_timeout
                .map(|t| secs(t, "--slow-timeout"))
                .transpose()?,
            format: args.format,
            junit: args.junit,
            report: args.report,
            params: runner::parse_params(&args.params).map_err(|e| e.0)?,
            progress: true,
            debugger: args
                .debug_on_fail
                .then(|| script::Debugger::new(repl::debug)),
            ..selection(args.select)?
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

fn report(dir: &Path, output: Option<PathBuf>) -> i32 {
    let output = output.unwrap_or_else(|| dir.join("report.html"));
    let written = runner::reporter::html::render_saved(dir).and_then(|html| {
        std::fs::write(&output, html).map_err(|e| format!("writing {}: {e}", output.display()))
    });
    match written {
        Ok(()) => match print_out(&format!("{}\n", output.display())) {
            Ok(()) => 0,
            Err(code) => code,
        },
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}

fn check(paths: &[PathBuf], lib: &[PathBuf]) -> i32 {
    let tests = match runner::discover::discover(paths) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            return 2;
        }
    };
    let api = script::api_functions();
    let mut failed = 0;
    for t in &tests {
        let text = match script::check_file(&t.path, &api, lib) {
            Ok(findings) if findings.is_empty() => continue,
            Ok(findings) => findings.join("\n"),
            Err(f) => f.to_string(),
        };
        if let Err(code) = print_out(&format!("{text}\n")) {
            return code;
        }
        failed += 1;
    }
    if let Err(code) = print_out(&format!(
        "{} ok, {failed} with errors\n",
        tests.len() - failed
    )) {
        return code;
    }
    i32::from(failed > 0)
}

fn doc(module: Option<&str>, format: DocFormat, lib: &[PathBuf]) -> i32 {
    let text = match module {
        Some(name) => script::module_docs(name, lib).map(|m| match format {
            DocFormat::Text => script::docs::render_module(&m),
            DocFormat::Markdown => script::docs::render_markdown(&[], &[m]),
        }),
        None => script::stdlib_docs().map(|modules| {
            let api = script::reference();
            match format {
                DocFormat::Text => script::docs::render_all(&api, &modules),
                DocFormat::Markdown => script::docs::render_markdown(&api, &modules),
            }
        }),
    };
    match text {
        Ok(t) => print_out(&t).map_or_else(|code| code, |()| 0),
        Err(e) => {
            eprintln!("vmscript: error: {e}");
            2
        }
    }
}

fn qmp_shell(
    address: String,
    hmp: bool,
    timeout: f64,
    log: Option<PathBuf>,
    no_negotiation: bool,
) -> i32 {
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
        log,
        no_negotiation,
    };
    match repl::qmp_shell::run(&opts) {
        Ok(repl::qmp_shell::Ended::Normally) => 0,
        Ok(repl::qmp_shell::Ended::Lost(e)) => {
            eprintln!("vmscript: error: {address}: the connection is lost: {e}");
            1
        }
        Err(e) => {
            eprintln!("vmscript: error: {address}: {e}");
            2
        }
    }
}

/// What an earlier vmscript that was killed (SIGKILL) left in `$TMPDIR`:
/// its temp folders go; its artifacts folder goes when empty, else is
/// named (once).
fn sweep_stale_temp_dirs() {
    let tmp = std::env::temp_dir();
    script::temp::sweep_stale(&tmp);
    for d in runner::artifacts::sweep_stale(&tmp) {
        eprintln!(
            "vmscript: a run that was killed left the logs of its last tests in {}",
            d.display()
        );
    }
}

/// Starts the process that kills what vmscript started should vmscript
/// be killed: now, while vmscript is small, since it is a fork and keeps
/// the pages it was forked with.
fn start_watchdog() {
    vmscript::machine::process::Watchdog::get();
}

fn repl_session(qemu: Option<PathBuf>, lib: Vec<PathBuf>, artifacts: Option<PathBuf>) -> i32 {
    sweep_stale_temp_dirs();
    start_watchdog();
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
