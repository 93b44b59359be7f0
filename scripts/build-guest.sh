#!/usr/bin/env bash
# Builds the test guest: Debian's stock kernel plus a busybox initramfs.
#
# Output folder: $VMSCRIPT_GUEST, else <project root>/.cache/guest, holding
#   vmlinuz    the kernel of the package linux-image-amd64 currently depends on
#   initrd.gz  a gzip'd newc cpio with a static busybox and an /init
#   KERNEL     the name of the kernel package it came from
#   VERSION    the version of this recipe the guest was built with
#
# The guest's /init mounts proc, sysfs and devtmpfs, loads the virtio
# drivers (PCI, network, block, virtio-serial: modules in Debian's kernel,
# copied from the same kernel package with their dependencies), brings up
# lo, starts the agent (scripts/guest-agent.sh: commands and files on a
# virtio-serial port of their own) in the background, prints the
# line "VMSCRIPT-READY" on the console and runs a shell there, so a test
# boots with -kernel/-initrd/-append "console=ttyS0", waits for the marker
# and types commands.
#
# Idempotent: when the files exist and VERSION matches nothing is done (a
# guest of an older recipe is rebuilt). The guest is built
# in a .tmp folder and renamed into place, under a lock, so a killed build
# never leaves half a guest and two concurrent runs build it once.
# Progress goes to stderr; the last line on stdout is the output folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${VMSCRIPT_GUEST:-$root/.cache/guest}
out=${out%/}

say() { echo "build-guest: $*" >&2; }

# Bump when the guest changes, so that an old cached guest is rebuilt.
# 2: virtio drivers (virtio_pci, virtio_net, virtio_blk) loaded by /init.
# 3: virtio_console and the agent (scripts/guest-agent.sh) on its port.
recipe=3

# The kernel modules /init loads, after their dependencies.
guest_modules=(virtio_pci virtio_net virtio_blk virtio_console)

complete() {
  [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ] && [ -s "$out/KERNEL" ] &&
    [ "$(cat "$out/VERSION" 2>/dev/null)" = "$recipe" ]
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
# The kernel and the folders the guest's modules and their dependencies
# live in.
dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x --wildcards \
  './boot/vmlinuz-*' \
  './lib/modules/*/kernel/drivers/virtio/*' \
  './lib/modules/*/kernel/drivers/net/*.ko*' \
  './lib/modules/*/kernel/drivers/block/*.ko*' \
  './lib/modules/*/kernel/drivers/char/virtio_console.ko*' \
  './lib/modules/*/kernel/net/core/*'
kernels=("$work"/boot/vmlinuz-*)
[ -f "${kernels[0]}" ] || { say "$pkg holds no /boot/vmlinuz-*"; exit 1; }

# A module's file by name (modules.dep is made by depmod at install, so
# the package has none); .ko.xz/.ko.zst/.ko.gz are decompressed, since
# busybox insmod may not read them.
module_file() {
  local name=$1 f
  f=$(find "$work/lib/modules" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit)
  [ -n "$f" ] || { say "$pkg has no module $name"; return 1; }
  case $f in
    *.ko) ;;
    *.ko.xz)
      if command -v xz >/dev/null 2>&1; then xz -d "$f"; else "$busybox" unxz "$f"; fi || return 1
      f=${f%.xz}
      ;;
    *.ko.zst)
      zstd -q -d --rm "$f" || return 1
      f=${f%.zst}
      ;;
    *.ko.gz)
      gzip -d "$f" || return 1
      f=${f%.gz}
      ;;
    *) say "$f: unknown module compression"; return 1 ;;
  esac
  echo "$f"
}

# Depth-first: a module's dependencies (its modinfo "depends=" field)
# before the module itself, each once.
declare -A module_seen=()
module_order=()
add_module() {
  local name=$1 f deps d
  [ -n "${module_seen[$name]:-}" ] && return 0
  module_seen[$name]=1
  f=$(module_file "$name")
  deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -n 1)
  for d in ${deps//,/ }; do
    add_module "$d"
  done
  module_order+=("$name")
  cp "$f" "$rd/lib/modules/$name.ko"
}

say "making the initramfs"
rd=$work/rd
mkdir -p "$rd/bin" "$rd/dev" "$rd/proc" "$rd/sys" "$rd/tmp" "$rd/root" "$rd/lib/modules"
cp "$busybox" "$rd/bin/busybox"
cp "$root/scripts/guest-agent.sh" "$rd/bin/vmscript-agent"
chmod 755 "$rd/bin/vmscript-agent"
for m in "${guest_modules[@]}"; do
  add_module "$m"
done
say "modules: ${module_order[*]}"
printf '%s\n' "${module_order[@]}" >"$rd/lib/modules/order"
cat >"$rd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
ip link set lo up
vmscript-agent </dev/null >/dev/null 2>&1 &
echo "VMSCRIPT-READY"
exec setsid cttyhack sh
INIT
chmod 755 "$rd/init"

mkdir "$tmp_out"
cp "${kernels[0]}" "$tmp_out/vmlinuz"
(cd "$rd" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 --ignore-devno --renumber-inodes 2>/dev/null) |
  gzip -9 -n >"$tmp_out/initrd.gz"
echo "$pkg" >"$tmp_out/KERNEL"
echo "$recipe" >"$tmp_out/VERSION"

# Swap the finished guest in; a stale partial folder (only possible when
# someone removed files by hand) is replaced.
rm -rf "$out"
mv -T "$tmp_out" "$out"
say "built $out ($pkg)"
echo "$out"
