#!/usr/bin/env bash
# What a test case costs the runner: runs a file of N empty `test_*`
# cases (default 200) and prints the wall and CPU time per case. Each case
# gets a fresh engine, temp dir, artifacts folder and watchdog; the file is
# compiled once for the whole run.
#
#   bash bench/cases.sh [N] [JOBS]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
vmscript=$target/release/vmscript
n=${1:-200}
jobs=${2:-2}
[ -x "$vmscript" ] || (cd "$root" && cargo build --release --quiet)

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 "$n"); do echo "fn test_$i() {}"; done > "$dir/cases.rhai"

TIMEFORMAT='%R %U %S'
times=$( { time "$vmscript" run -j "$jobs" --no-tests fail "$dir/cases.rhai" > "$dir/out"; } 2>&1 )
tail -n 1 "$dir/out"
read -r wall user sys <<< "$times"
awk -v n="$n" -v j="$jobs" -v w="$wall" -v u="$user" -v s="$sys" 'BEGIN {
    printf "%d cases, -j %d: %.2fs wall (%.1f ms a case), %.2fs CPU (%.1f ms a case)\n",
        n, j, w, 1000 * w / n, u + s, 1000 * (u + s) / n
}'
