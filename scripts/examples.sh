#!/usr/bin/env bash
# Builds the test guest and vmscript, then runs the example scripts against
# a real booted guest. Arguments go on to `vmscript run`
# (e.g. --filter console, -j 1). What the machine lacks is installed first
# when run as root, else named in a `sudo apt-get install` line
# (scripts/setup.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/setup.sh
. scripts/setup.sh

guest=$(bash scripts/build-guest.sh | tail -n 1)
export VMSCRIPT_GUEST=$guest

cargo build --release
exec "${CARGO_TARGET_DIR:-target}/release/vmscript" run scripts/examples "$@"
