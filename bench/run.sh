#!/usr/bin/env bash
# Benchmarks vmscript against the Python anchor and the C floor of the
# shared harness (../shared/bench), and the script layer against the Rust
# API. Builds the release binaries first. See bench/README.md.
#
#   bash bench/run.sh [harness]   the harness: Python, C floor and the bench/*.rhai
#                                 scripts, interleaved, one table (~3 min)
#   bash bench/run.sh rust        the same with examples/bench (Rust API, no Rhai)
#                                 as the contender
#   bash bench/run.sh layer       script vs Rust API, interleaved, per workload
#                                 (command_loop included): what Rhai costs
#   bash bench/run.sh idle        CPU while waiting 10 s, RSS with 16 idle machines
#   bash bench/run.sh guest       guest::run latency and copy throughput, the guest
#                                 agent's channel against the console (N=20, 64 MiB)
#   bash bench/run.sh smoke       every bench script once with a small N (for CI)
#   bash bench/run.sh compare OLD [NEW]
#                                 another vmscript binary (OLD, e.g. built from an
#                                 earlier commit) against NEW (default: this tree's
#                                 release build) and the C floor,
#                                 interleaved per workload (REPS, default 5): a
#                                 before/after table for a change
#   bash bench/run.sh suite       guest_suite: the Python anchor and vmscript with
#                                 the boot cache off, cold and warm, interleaved
#                                 (REPS, default 3; N_SUITE, default 16)
#
# Environment: everything the harness takes (REPS, WORKLOADS, N_ROUNDTRIP,
# EXTRAS, ...; see ../shared/bench/README.md), VMBENCH_HARNESS (the harness
# folder, default ../shared/bench), VMBENCH_GUEST, CARGO_TARGET_DIR.
# `layer` takes REPS (default 7) and WORKLOADS (default: all + command_loop).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
harness=${VMBENCH_HARNESS:-$root/../shared/bench}
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
vmscript=$target/release/vmscript
rustbench=$target/release/examples/bench
mode=${1:-harness}

build() {
  cargo build --release --bin vmscript --example bench >&2
}

case $mode in
  harness)
    build
    CONTENDER="$vmscript run --no-capture bench/{workload}.rhai -- N={n}" \
      CONTENDER_NAME=${CONTENDER_NAME:-vmscript} CONTENDER_DIR=$root \
      bash "$harness/run.sh"
    ;;
  rust)
    build
    CONTENDER="$rustbench {workload} {n}" \
      CONTENDER_NAME=${CONTENDER_NAME:-rust-api} CONTENDER_DIR=$root \
      bash "$harness/run.sh"
    ;;
  layer)
    build
    bash "$harness/setup.sh" >&2
    reps=${REPS:-7}
    workloads=${WORKLOADS:-"launch roundtrip events parallel console command_loop"}
    out=$(mktemp /tmp/vmbench-layer.XXXXXX)
    for rep in $(seq "$reps"); do
      echo "--- rep $rep/$reps" >&2
      for w in $workloads; do
        case $w in
          launch) n=20 ;; roundtrip) n=2000 ;; events) n=500 ;; parallel) n=16 ;;
          console) n=1024 ;; command_loop) n=10000 ;; *) n=${N:-100} ;;
        esac
        # alternate who goes first
        if [ $((rep % 2)) = 1 ]; then order="rust script"; else order="script rust"; fi
        for who in $order; do
          if [ "$who" = rust ]; then
            "$rustbench" "$w" "$n"
          else
            "$vmscript" run --no-capture "bench/$w.rhai" -- "N=$n"
          fi | grep '^WORKLOAD ' | sed "s/^/$who /" | tee -a "$out" >&2
        done
      done
    done
    python3 bench/lib/table.py "$out" rust script
    ;;
  idle)
    build
    bash "$harness/setup.sh" >&2
    "$vmscript" run --no-capture bench/idle.rhai -- N="${N:-10}" | grep '^WORKLOAD '
    "$rustbench" idle_wait "${N:-10}" | sed 's/^WORKLOAD /WORKLOAD rust-api:/'
    "$rustbench" idle_rss 16 | sed 's/^WORKLOAD /WORKLOAD rust-api:/'
    ;;
  guest)
    cargo build --release --bin vmscript >&2
    "$vmscript" run --no-capture bench/guest_channel.rhai -- N="${N:-20}" MIB="${MIB:-64}"
    ;;
  suite)
    cargo build --release --bin vmscript >&2
    bash "$harness/setup.sh" >&2
    reps=${REPS:-3}
    n=${N_SUITE:-16}
    py=/tmp/vmbench-venv/bin/python
    out=$(mktemp /tmp/vmbench-suite.XXXXXX)
    for rep in $(seq "$reps"); do
      for who in python off cold warm; do
        echo "--- rep $rep/$reps: $who" >&2
        if [ "$who" = python ]; then
          line=$("$py" "$harness/py_anchor.py" guest_suite "$n" | grep '^WORKLOAD') ||
            { echo "$who: the run failed" >&2; continue; }
        else
          line=$("$vmscript" run --no-capture bench/guest_suite.rhai -- "N=$n" "MODE=$who" \
            "VMSCRIPT=$vmscript" | grep '^WORKLOAD') ||
            { echo "$who: the run failed" >&2; continue; }
        fi
        echo "$who $line" | tee -a "$out" >&2
      done
    done
    echo "raw results: $out" >&2
    # Median wall time of the suite per contender, and the ratios.
    awk '{ t[$1] = t[$1] " " $5 }
      END {
        split("python off cold warm", names, " ")
        for (i = 1; i <= 4; i++) {
          k = split(substr(t[names[i]], 2), v, " ")
          for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (v[b] < v[a]) { x = v[a]; v[a] = v[b]; v[b] = x }
          med[names[i]] = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        }
        printf "| contender | suite wall s (median of %d) | per test s | Python / this | cache-off / this |\n", k
        print "|---|---|---|---|---|"
        for (i = 1; i <= 4; i++) {
          m = med[names[i]]
          printf "| %s | %.1f | %.2f | %.1fx | %.1fx |\n", names[i], m, m / '"$n"', med["python"] / m, med["off"] / m
        }
      }' "$out"
    ;;
  compare)
    base=${2:?usage: bash bench/run.sh compare OLD_VMSCRIPT_BINARY [NEW_VMSCRIPT_BINARY]}
    if [ -n "${3:-}" ]; then vmscript=$3; else cargo build --release --bin vmscript >&2; fi
    for b in "$base" "$vmscript"; do
      [ -x "$b" ] || { echo "compare: $b is not an executable" >&2; exit 2; }
    done
    bash "$harness/setup.sh" >&2
    limit=${VMBENCH_LIMIT:-/tmp/vmbench-limit}
    reps=${REPS:-5}
    workloads=${WORKLOADS:-"launch roundtrip events parallel console"}
    out=$(mktemp /tmp/vmbench-compare.XXXXXX)
    for rep in $(seq "$reps"); do
      echo "--- rep $rep/$reps" >&2
      for w in $workloads; do
        case $w in
          launch) n=20 ;; roundtrip) n=2000 ;; events) n=500 ;; parallel) n=16 ;;
          console) n=1024 ;; *) n=${N:-100} ;;
        esac
        # Each contender goes first in turn, so none always runs on a
        # machine the one before it left warm (or busy).
        case $((rep % 3)) in
          1) order="floor before after" ;; 2) order="before after floor" ;;
          *) order="after floor before" ;;
        esac
        for who in $order; do
          case $who in
            floor) timeout 180 "$limit" "$w" "$n" ;;
            before) timeout 180 "$base" run --no-capture "bench/$w.rhai" -- "N=$n" ;;
            after) timeout 180 "$vmscript" run --no-capture "bench/$w.rhai" -- "N=$n" ;;
          esac | grep '^WORKLOAD ' | sed "s/^/$who /" | tee -a "$out" >&2 ||
            echo "$who $w: the run failed" >&2
        done
      done
    done
    python3 bench/lib/table.py "$out" floor before after
    ;;
  smoke)
    cargo build --release --bin vmscript >&2
    # Every script once, with N small (console: 2 KiB; idle: 2 s waits).
    "$vmscript" run bench -- N=2
    ;;
  *)
    echo "usage: bash bench/run.sh [harness|rust|layer|idle|guest|suite|smoke|compare OLD]" >&2
    exit 2
    ;;
esac
