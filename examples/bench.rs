//! The benchmark workloads of `../shared/bench` driven through the library
//! API, without Rhai: what `bench/*.rhai` costs minus the script layer.
//!
//! ```sh
//! cargo build --release --example bench
//! target/release/examples/bench roundtrip 2000
//! ```
//!
//! Workloads (as `py_anchor.py` times them, with its QEMU command lines):
//! `launch N`, `roundtrip N`, `events N`, `parallel P`, `console K`; and,
//! beyond the harness, `command_loop N` (N x `command("query-status")`,
//! the loop `bench/command_loop.rhai` runs), `idle_wait S` (CPU used while
//! waiting S seconds for an event and then for console text that never
//! come) and `idle_rss P` (this process's RSS with P idle machines).
//!
//! Each prints `WORKLOAD <name> <N> <seconds_total> <per_op_microseconds>`
//! (see bench/README.md for the extra workloads' fields). Environment:
//! `VMBENCH_QEMU` (default `qemu-system-x86_64`), `VMBENCH_GUEST` (default
//! `/tmp/vmbench-guest`), `VMBENCH_PROFILE=1` (QEMU and client CPU per
//! operation on stderr, as the harness's clients print it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmscript::machine::{Machine, MachineOptions};
use vmscript::qmp::Address;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TIMEOUT: Duration = Duration::from_secs(30);

fn qemu() -> String {
    std::env::var("VMBENCH_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

fn guest() -> PathBuf {
    std::env::var_os("VMBENCH_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/vmbench-guest"))
}

fn report(name: &str, n: u64, secs: f64, per_op_us: f64) {
    println!("WORKLOAD {name} {n} {secs:.6} {per_op_us:.3}");
}

/// `py_anchor.py`'s `-M none` machine: QEMU connects to a unix socket we
/// listen on, `-machine none -nodefaults`.
fn none_machine() -> Result<Machine> {
    let mut o = MachineOptions::new(qemu());
    o.monitor_address = Some(Address::Unix(PathBuf::from("monitor.sock")));
    o.args = vec!["-nodefaults".into()];
    let mut vm = Machine::new(o)?;
    vm.set_machine("none")?;
    Ok(vm)
}

/// CPU seconds (user + system, all threads) of this process.
fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds used so far by process `pid` (10 ms ticks).
fn proc_cpu(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// With `VMBENCH_PROFILE` set: wall, QEMU CPU and our CPU per operation.
struct Profile {
    name: &'static str,
    pid: i32,
    wall: Instant,
    qemu: f64,
    me: f64,
}

impl Profile {
    fn start(name: &'static str, pid: i32) -> Profile {
        Profile {
            name,
            pid,
            qemu: proc_cpu(pid),
            me: self_cpu(),
            wall: Instant::now(),
        }
    }

    fn done(&self, n: u64) {
        if std::env::var_os("VMBENCH_PROFILE").is_none() {
            return;
        }
        let per = |x: f64| x / n as f64 * 1e6;
        eprintln!(
            "PROFILE {} n={n} wall_us/op={:.1} qemu_cpu_us/op={:.1} client_cpu_us/op={:.1}",
            self.name,
            per(self.wall.elapsed().as_secs_f64()),
            per(proc_cpu(self.pid) - self.qemu),
            per(self_cpu() - self.me),
        );
    }
}

fn launch(n: u64) -> Result<()> {
    let mut phases = [0.0; 3];
    let t0 = Instant::now();
    for _ in 0..n {
        let mut vm = none_machine()?;
        let a = Instant::now();
        vm.launch()?;
        let b = Instant::now();
        vm.shutdown(false, TIMEOUT)?;
        let c = Instant::now();
        drop(vm);
        for (p, d) in phases.iter_mut().zip([b - a, c - b, c.elapsed()]) {
            *p += d.as_secs_f64();
        }
    }
    let t = t0.elapsed().as_secs_f64();
    if std::env::var_os("VMBENCH_PROFILE").is_some() {
        let us = |x: f64| x / n as f64 * 1e6;
        eprintln!(
            "PROFILE launch n={n} us/launch: launch {:.0}, shutdown {:.0}, drop {:.0}, other {:.0}",
            us(phases[0]),
            us(phases[1]),
            us(phases[2]),
            us(t - phases.iter().sum::<f64>()),
        );
    }
    report("launch", n, t, t / n as f64 * 1e6);
    Ok(())
}

fn roundtrip(n: u64) -> Result<()> {
    let mut vm = none_machine()?;
    vm.launch()?;
    let prof = Profile::start("roundtrip", vm.get_pid().unwrap_or(0));
    let t0 = Instant::now();
    for _ in 0..n {
        let r = vm.qmp("query-status", None, true)?;
        if r.get("return").is_none() {
            return Err(format!("query-status failed: {r}").into());
        }
    }
    let t = t0.elapsed().as_secs_f64();
    prof.done(n);
    vm.shutdown(false, TIMEOUT)?;
    report("roundtrip", n, t, t / n as f64 * 1e6);
    Ok(())
}

/// The loop `bench/command_loop.rhai` runs, for the script layer's cost.
fn command_loop(n: u64) -> Result<()> {
    let mut vm = none_machine()?;
    vm.launch()?;
    let prof = Profile::start("command_loop", vm.get_pid().unwrap_or(0));
    let t0 = Instant::now();
    for _ in 0..n {
        vm.command("query-status", None, true)?;
    }
    let t = t0.elapsed().as_secs_f64();
    prof.done(n);
    vm.shutdown(false, TIMEOUT)?;
    report("command_loop", n, t, t / n as f64 * 1e6);
    Ok(())
}

fn events(n: u64) -> Result<()> {
    let pairs = n / 2;
    let mut vm = none_machine()?;
    vm.launch()?;
    let wait = Duration::from_secs(10);
    let prof = Profile::start("events", vm.get_pid().unwrap_or(0));
    let t0 = Instant::now();
    for _ in 0..pairs {
        vm.qmp("stop", None, true)?;
        vm.event_wait("STOP", wait, None)?;
        vm.qmp("cont", None, true)?;
        vm.event_wait("RESUME", wait, None)?;
    }
    let t = t0.elapsed().as_secs_f64();
    prof.done(pairs * 2);
    vm.shutdown(false, TIMEOUT)?;
    report("events", pairs * 2, t, t / (pairs * 2) as f64 * 1e6);
    Ok(())
}

fn parallel(p: u64) -> Result<()> {
    let one = || -> Result<()> {
        let mut vm = none_machine()?;
        vm.launch()?;
        for _ in 0..100 {
            vm.qmp("query-status", None, true)?;
        }
        vm.shutdown(false, TIMEOUT)?;
        Ok(())
    };
    let t0 = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..p).map(|_| s.spawn(one)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    let t = t0.elapsed().as_secs_f64();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    report("parallel", p, t, t / p as f64 * 1e6);
    Ok(())
}

/// `py_anchor.py`'s console guest: q35 under TCG, serial on a socket.
fn guest_machine() -> Result<Machine> {
    let g = guest();
    let (kernel, initrd) = (g.join("vmlinuz"), g.join("initrd.gz"));
    if !kernel.exists() || !initrd.exists() {
        return Err(format!(
            "no guest in {}: run bash ../shared/bench/setup.sh",
            g.display()
        )
        .into());
    }
    let mut o = MachineOptions::new(qemu());
    o.monitor_address = Some(Address::Unix(PathBuf::from("monitor.sock")));
    o.args = [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-reboot",
        "-kernel",
        path_str(&kernel),
        "-initrd",
        path_str(&initrd),
        "-append",
        "console=ttyS0 quiet panic=-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut vm = Machine::new(o)?;
    vm.set_machine("q35")?;
    vm.set_console(None, 0)?;
    Ok(vm)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("guest paths are UTF-8")
}

fn console(kib: u64) -> Result<()> {
    let mut vm = guest_machine()?;
    let t0 = Instant::now();
    vm.launch()?;
    vm.wait_for_console_pattern("VMBENCH-READY", None, Duration::from_secs(120))?;
    let t1 = Instant::now();
    let prof = Profile::start("console_stream(per KiB)", vm.get_pid().unwrap_or(0));
    let cmd = format!("dd if=/dev/zero bs=1024 count={kib} 2>/dev/null | base64; echo END$((6*7))");
    let out =
        vm.exec_command_and_wait_for_pattern(&cmd, "END42", None, Duration::from_secs(600))?;
    let t2 = Instant::now();
    let nbytes = out.len() as u64;
    prof.done((nbytes / 1024).max(1));
    vm.shutdown(false, TIMEOUT)?;
    let boot = (t1 - t0).as_secs_f64();
    let stream = (t2 - t1).as_secs_f64();
    report("console_boot", 1, boot, boot * 1e6);
    report(
        "console_stream",
        nbytes / 1024,
        stream,
        stream / (nbytes as f64 / 1024.0) * 1e6,
    );
    Ok(())
}

/// CPU used while waiting `secs` for an event that never comes, then
/// `secs` for console text that never comes (on a booted, idle guest).
/// Prints `idle_event` and `idle_console`: N = seconds waited,
/// seconds_total = our CPU seconds, per_op = our CPU µs per second waited.
fn idle_wait(secs: u64) -> Result<()> {
    let wait = Duration::from_secs(secs);
    let mut vm = guest_machine()?;
    vm.launch()?;
    vm.wait_for_console_pattern("VMBENCH-READY", None, Duration::from_secs(120))?;
    // Let the shell settle (its prompt) before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let _ = vm.console_socket()?.read();

    let c0 = self_cpu();
    let r = vm.event_wait("NEVER_HAPPENS", wait, None);
    let cpu = self_cpu() - c0;
    if !matches!(r, Err(vmscript::machine::Error::Timeout { .. })) {
        return Err(format!("expected a timeout, got {r:?}").into());
    }
    report("idle_event", secs, cpu, cpu / secs as f64 * 1e6);

    let con = vm.console_socket()?;
    let c0 = self_cpu();
    let r = con.wait_for("NEVER-PRINTED", wait);
    let cpu = self_cpu() - c0;
    if r.is_ok() {
        return Err("the console printed what it never prints".into());
    }
    report("idle_console", secs, cpu, cpu / secs as f64 * 1e6);
    vm.shutdown(false, TIMEOUT)?;
    Ok(())
}

/// This process's resident set with `p` idle `-M none` machines launched.
/// Prints `idle_rss`: N = machines, seconds_total = RSS in MB,
/// per_op = RSS growth per machine in KiB.
fn idle_rss(p: u64) -> Result<()> {
    let before = rss_kib();
    let mut vms = Vec::new();
    for _ in 0..p {
        let mut vm = none_machine()?;
        vm.launch()?;
        vm.qmp("query-status", None, true)?;
        vms.push(vm);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib();
    for mut vm in vms {
        vm.shutdown(false, TIMEOUT)?;
    }
    report(
        "idle_rss",
        p,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / p.max(1) as f64,
    );
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    type Workload = fn(u64) -> Result<()>;
    let table: &[(&str, Workload, u64)] = &[
        ("launch", launch, 20),
        ("roundtrip", roundtrip, 2000),
        ("events", events, 500),
        ("parallel", parallel, 16),
        ("console", console, 1024),
        ("command_loop", command_loop, 10000),
        ("idle_wait", idle_wait, 10),
        ("idle_rss", idle_rss, 16),
    ];
    let names: Vec<&str> = table.iter().map(|t| t.0).collect();
    let Some((_, run, default)) = args
        .first()
        .and_then(|w| table.iter().find(|t| t.0 == w.as_str()))
    else {
        eprintln!("usage: bench {{{}}} [N]", names.join("|"));
        return ExitCode::from(2);
    };
    let n = match args.get(1).map(|s| s.parse::<u64>()) {
        None => *default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("bench: N must be a positive integer");
            return ExitCode::from(2);
        }
    };
    match run(n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
