//! A soak through the Rust machine API: 500 launch/command/shutdown cycles
//! on 4 threads, with this process's descriptors, threads, children, heap
//! and RSS sampled whenever no machine is in flight. Alone in its test
//! binary, so the counts are only its own.
//!
//! `VMSCRIPT_SOAK_CYCLES` changes the number of cycles (for a longer soak
//! by hand).

mod common;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vmscript::machine::Machine;
use vmscript::script::memory::{self, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const THREADS: usize = 4;
/// Cycles each thread runs between two samples.
const ROUND: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: usize,
    threads: usize,
    children: usize,
    heap: usize,
    rss: usize,
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb << 10
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// A sample once the threads of the last machines (reapers, QMP watchers)
/// have ended: they exit right after their machine is cleaned up.
fn sample() -> Sample {
    let deadline = Instant::now() + Duration::from_secs(2);
    while thread_names()
        .iter()
        .any(|n| n == "qemu-reaper" || n == "qmp-watch")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Sample {
        fds: open_fds(),
        threads: threads(),
        children: children().len(),
        heap: memory::in_use(),
        rss: rss(),
    }
}

fn cycle() {
    let mut vm = Machine::new(none_options(&[])).unwrap();
    vm.launch().unwrap();
    let st = vm.command("query-status", None, true).unwrap();
    assert_eq!(st["status"], "running");
    vm.shutdown(false, secs(30.0)).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}

#[test]
fn five_hundred_cycles_on_four_threads_leave_every_count_flat() {
    let cycles: usize = std::env::var("VMSCRIPT_SOAK_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    let rounds = cycles.div_ceil(THREADS * ROUND);
    // Warm up what is made once: the spawner thread, allocator arenas.
    for _ in 0..2 {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(cycle);
            }
        });
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let barrier = barrier.clone();
            s.spawn(move || {
                for _ in 0..rounds {
                    for _ in 0..ROUND {
                        cycle();
                    }
                    barrier.wait(); // round done
                    barrier.wait(); // sampled
                }
            });
        }
        for _ in 0..rounds {
            barrier.wait();
            samples.lock().unwrap().push(sample());
            barrier.wait();
        }
    });
    let took = start.elapsed();
    let samples = samples.lock().unwrap().clone();
    let n = samples.len();
    eprintln!(
        "{} cycles in {took:?}; first {:?}; last {:?}",
        rounds * THREADS * ROUND,
        samples[0],
        samples[n - 1]
    );
    let early = &samples[..n / 4];
    let late = &samples[n - n / 4..];
    let max = |s: &[Sample], f: fn(&Sample) -> usize| s.iter().map(f).max().unwrap();
    let mean = |s: &[Sample], f: fn(&Sample) -> usize| s.iter().map(f).sum::<usize>() / s.len();
    for s in &samples {
        assert_eq!(s.children, 0, "{s:?}");
        assert_eq!(s.fds, samples[0].fds, "descriptors: {samples:#?}");
        assert_eq!(s.threads, samples[0].threads, "threads: {samples:#?}");
    }
    // The heap: flat within 1 MiB (event queues, logs, greetings all go
    // with their machine).
    let (heap_early, heap_late) = (mean(early, |s| s.heap), mean(late, |s| s.heap));
    assert!(
        heap_late <= heap_early + (1 << 20),
        "the heap grew from {heap_early} to {heap_late} bytes: {samples:#?}"
    );
    // RSS: the allocator keeps freed pages, so only growth beyond 16 MiB
    // above the early peak counts.
    let (rss_early, rss_late) = (max(early, |s| s.rss), mean(late, |s| s.rss));
    assert!(
        rss_late <= rss_early + (16 << 20),
        "RSS grew from {rss_early} to {rss_late} bytes: {samples:#?}"
    );
}
