#!/usr/bin/env bash
# Builds everything and runs every test: the Rust tests (which boot real
# QEMUs) and, once the runner exists, the example and ported scripts and
# the stdlib's scripts.
# What the machine lacks is installed first when run as root, else named in
# a `sudo apt-get install` line (scripts/setup.sh).
# Exit status: 0 when everything passed, non-zero otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

banner() { printf '\n==> %s\n' "$*"; }

# guest::boot's boot cache goes to a folder of this run, removed at the
# end: the user's own cache (~/.cache/vmscript) is never touched.
XDG_CACHE_HOME=$(mktemp -d "${TMPDIR:-/tmp}/vmscript-test-cache.XXXXXX")
export XDG_CACHE_HOME
trap 'rm -rf "$XDG_CACHE_HOME"' EXIT

# The HTML report's test renders it in Debian's chromium, headless.
export VMSCRIPT_SETUP_EXTRA="chromium ${VMSCRIPT_SETUP_EXTRA:-}"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh

banner "build the test guest"
guest=$(bash scripts/build-guest.sh | tail -n 1)
export VMSCRIPT_GUEST=$guest

banner "cargo build --release"
cargo build --release

# Each test boots its own QEMU under TCG; two at a time keeps a small CI
# machine from timing out.
banner "cargo test --release"
cargo test --release -- --test-threads=2

vmscript=${CARGO_TARGET_DIR:-target}/release/vmscript
dirs=()
for dir in scripts/examples scripts/ports scripts/stdlib; do
  [ -d "$dir" ] && dirs+=("$dir")
done
if [ "${#dirs[@]}" -eq 0 ]; then
  banner "no scripts/examples, scripts/ports or scripts/stdlib: skipping the script tests"
elif ! "$vmscript" run --help >/dev/null 2>&1; then
  banner "vmscript has no 'run' command yet: skipping the script tests"
else
  banner "vmscript check ${dirs[*]} bench"
  "$vmscript" check "${dirs[@]}" bench
  banner "vmscript run ${dirs[*]}"
  "$vmscript" run "${dirs[@]}"
fi

# Benchmarks measure nothing here: each script runs once with a tiny N to
# prove it still works (bench/README.md says how to measure).
banner "vmscript run bench -- N=2"
"$vmscript" run bench -- N=2

# What a test case costs the runner (bench/README.md), with 20 cases.
banner "bash bench/cases.sh 20"
bash bench/cases.sh 20
