#!/usr/bin/env bash
# What a fresh Debian 12 machine needs before vmscript can be built and
# tested: the system packages and cargo. scripts/examples.sh,
# scripts/test-all.sh and .ci/run source this file first, so that nothing
# is built on a machine that cannot run the result; `bash scripts/setup.sh`
# runs it alone.
#
# - As root on Debian: installs what is missing (one `apt-get update`, then
#   `apt-get install`), waiting for the apt/dpkg locks as unattended
#   upgrades may hold them right after boot.
# - Not root: prints one line `sudo apt-get install …` naming what is
#   missing, and fails.
# - When nothing is missing: prints nothing and runs no apt command.
# - cargo: looked for on PATH, then in ~/.cargo/env (rustup); a clear
#   error when there is none.
#
# Environment:
#   VMSCRIPT_SETUP_EXTRA  more Debian packages to require (space-separated)
#
# Sourced, it fails by exiting the script that sourced it, and leaves
# cargo on that script's PATH.

# The packages every test needs. qemu-utils (qemu-img, qemu-io) is handled
# apart: it must be of the same version as qemu-system-x86.
vmscript_setup_packages=(qemu-system-x86 busybox-static cpio ca-certificates tmux)
# Packages every caller needs but not every test; chromium, which only the
# test suite needs, is asked for by scripts/test-all.sh and .ci/run through
# VMSCRIPT_SETUP_EXTRA. None yet.
vmscript_setup_optional=()

vmscript_setup_say() { echo "setup: $*" >&2; }

# The installed version of a package, or nothing.
vmscript_setup_installed() {
  dpkg-query -W -f='${Status}\t${Version}\n' "$1" 2>/dev/null |
    awk -F'\t' '$1 == "install ok installed" { print $2; exit }' || true
}

# The packages to install: each missing package, then qemu-utils (or
# qemu-utils=VERSION) when it is missing or of another version than
# qemu-system-x86, as Debian's qemu-system-x86 removes a newer qemu-utils.
vmscript_setup_missing() {
  local p extra qemu utils candidate
  # shellcheck disable=SC2206 # a list of names, split on purpose
  extra=(${VMSCRIPT_SETUP_EXTRA:-})
  for p in "${vmscript_setup_packages[@]}" "${vmscript_setup_optional[@]}" "${extra[@]}"; do
    [ -n "$(vmscript_setup_installed "$p")" ] || echo "$p"
  done
  qemu=$(vmscript_setup_installed qemu-system-x86)
  utils=$(vmscript_setup_installed qemu-utils)
  if [ -n "$qemu" ]; then
    [ "$utils" = "$qemu" ] || echo "qemu-utils=$qemu"
  elif [ -z "$utils" ]; then
    echo qemu-utils
  else
    # qemu-system-x86 will be installed at its candidate version.
    candidate=$(apt-cache policy qemu-system-x86 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && [ "$candidate" != "$utils" ]; then
      echo "qemu-utils=$candidate"
    fi
  fi
}

vmscript_setup_apt_install() {
  apt-get install -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 \
    --no-install-recommends "$@"
}

# Installs the packages named (as root).
vmscript_setup_install() {
  local pkgs=() p qemu
  # qemu-utils=VERSION is installed after qemu-system-x86, below.
  for p in "$@"; do
    case $p in
      qemu-utils=*) ;;
      *) pkgs+=("$p") ;;
    esac
  done
  vmscript_setup_say "installing ${*}"
  export DEBIAN_FRONTEND=noninteractive
  # One retry: a mirror being synced answers with a hash mismatch for a moment.
  apt-get update -o DPkg::Lock::Timeout=300 ||
    { sleep 15; apt-get update -o DPkg::Lock::Timeout=300; } || return 1
  if [ "${#pkgs[@]}" -gt 0 ]; then
    vmscript_setup_apt_install "${pkgs[@]}" || return 1
  fi
  # Installing qemu-system-x86 may have removed a newer qemu-utils:
  # install it again at qemu-system-x86's version.
  qemu=$(vmscript_setup_installed qemu-system-x86)
  if [ -n "$qemu" ] && [ "$(vmscript_setup_installed qemu-utils)" != "$qemu" ]; then
    vmscript_setup_apt_install --allow-downgrades "qemu-utils=$qemu" ||
      vmscript_setup_apt_install qemu-utils || return 1
  fi
}

vmscript_setup_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  # rustup installs cargo in ~/.cargo/bin, which a non-login shell may not
  # have on its PATH.
  if [ -n "${HOME:-}" ] && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 && return 0
  vmscript_setup_say "cargo not found: install Rust with rustup (https://rustup.rs), open a new shell, and run this again"
  return 1
}

vmscript_setup() {
  local missing=() left=()
  if command -v dpkg-query >/dev/null 2>&1; then
    mapfile -t missing < <(vmscript_setup_missing)
    if [ "${#missing[@]}" -gt 0 ]; then
      if [ "$(id -u)" != 0 ]; then
        echo "sudo apt-get install --no-install-recommends ${missing[*]}    # what vmscript's tests need" >&2
        return 1
      fi
      vmscript_setup_install "${missing[@]}" || {
        vmscript_setup_say "installing ${missing[*]} failed"
        return 1
      }
      mapfile -t left < <(vmscript_setup_missing)
      if [ "${#left[@]}" -gt 0 ]; then
        vmscript_setup_say "still missing after apt-get install: ${left[*]}"
        return 1
      fi
    fi
  else
    # Not Debian: the commands themselves are what matters.
    local c
    for c in qemu-system-x86_64 qemu-img cpio tmux; do
      command -v "$c" >/dev/null 2>&1 || left+=("$c")
    done
    if [ "${#left[@]}" -gt 0 ]; then
      vmscript_setup_say "not a Debian system (no dpkg-query) and these commands are missing: ${left[*]}; install QEMU 7.2 (with qemu-img), a static busybox, cpio and tmux"
      return 1
    fi
  fi
  vmscript_setup_cargo
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  vmscript_setup
else
  vmscript_setup || exit 1
fi
