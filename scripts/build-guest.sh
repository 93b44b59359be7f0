#!/usr/bin/env bash
# Builds the test guest: Debian's stock kernel plus a busybox initramfs.
#
# Output folder: $VMSCRIPT_GUEST, else <project root>/.cache/guest, holding
#   vmlinuz    the kernel of the package linux-image-amd64 currently depends on
#   initrd.gz  a gzip'd newc cpio with a static busybox and an /init
#   KERNEL     the name of the kernel package it came from
#
# The guest's /init mounts proc, sysfs and devtmpfs, prints the line
# "VMSCRIPT-READY" on the console and runs a shell there, so a test boots
# with -kernel/-initrd/-append "console=ttyS0", waits for the marker and
# types commands.
#
# Idempotent: when the three files exist nothing is done. The guest is built
# in a .tmp folder and renamed into place, under a lock, so a killed build
# never leaves half a guest and two concurrent runs build it once.
# Progress goes to stderr; the last line on stdout is the output folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${VMSCRIPT_GUEST:-$root/.cache/guest}
out=${out%/}

say() { echo "build-guest: $*" >&2; }

complete() {
  [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ -s "$out/KERNEL" ]
}

if complete; then
  echo "$out"
  exit 0
fi

parent=$(dirname "$out")
mkdir -p "$parent"
parent=$(cd "$parent" && pwd)
out=$parent/$(basename "$out")
tmp_out=$out.tmp

# One builder at a time; whoever waited finds the guest already built.
exec 9>"$parent/$(basename "$out").lock"
if ! flock -n 9; then
  say "waiting for another build of $out"
  flock 9
fi
if complete; then
  echo "$out"
  exit 0
fi

# Work next to the output: under the lock, leftovers of a build killed by
# SIGKILL (which no trap sees) are removed before starting again.
rm -rf "$tmp_out" "$out".build.*
work=$(mktemp -d "$out.build.XXXXXX")
cleanup() {
  rm -rf "$work" "$tmp_out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# apt-get download drops to the _apt user when running as root; let it in.
chmod 755 "$work"

# apt-get update and install need root; use sudo when there is one.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root to run: $*"
    return 1
  fi
}

apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  say "apt-get update"
  as_root apt-get update -qq >&2
  apt_updated=1
}

# The initramfs needs the static busybox: the "busybox" package is dynamic.
busybox_static_installed() {
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' &&
    [ -x /bin/busybox ]
}
if ! busybox_static_installed; then
  say "installing busybox-static"
  install_busybox() {
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends busybox-static >&2
  }
  install_busybox || { apt_update && install_busybox; }
fi
busybox=/bin/busybox

# The kernel: the package that linux-image-amd64 currently depends on.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
pkg=$(kernel_package)
if [ -z "$pkg" ]; then
  apt_update
  pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { say "no linux-image-<version>-amd64 package found"; exit 1; }

cd "$work"
say "downloading $pkg"
if ! apt-get download -qq "$pkg" >&2 2>/dev/null; then
  # The index is stale (that version left the mirror): refresh and look again.
  apt_update
  pkg=$(kernel_package)
  [ -n "$pkg" ] || { say "no linux-image-<version>-amd64 package found"; exit 1; }
  say "downloading $pkg"
  apt-get download -qq "$pkg" >&2
fi
debs=("$work/$pkg"_*.deb)
[ -f "${debs[0]}" ] || { say "apt-get download left no .deb for $pkg"; exit 1; }
dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x --wildcards './boot/vmlinuz-*'
kernels=("$work"/boot/vmlinuz-*)
[ -f "${kernels[0]}" ] || { say "$pkg holds no /boot/vmlinuz-*"; exit 1; }

say "making the initramfs"
rd=$work/rd
mkdir -p "$rd/bin" "$rd/dev" "$rd/proc" "$rd/sys" "$rd/tmp" "$rd/root"
cp "$busybox" "$rd/bin/busybox"
cat >"$rd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "VMSCRIPT-READY"
exec setsid cttyhack sh
INIT
chmod 755 "$rd/init"

mkdir "$tmp_out"
cp "${kernels[0]}" "$tmp_out/vmlinuz"
(cd "$rd" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 --ignore-devno --renumber-inodes 2>/dev/null) |
  gzip -9 -n >"$tmp_out/initrd.gz"
echo "$pkg" >"$tmp_out/KERNEL"

# Swap the finished guest in; a stale partial folder (only possible when
# someone removed files by hand) is replaced.
rm -rf "$out"
mv -T "$tmp_out" "$out"
say "built $out ($pkg)"
echo "$out"
