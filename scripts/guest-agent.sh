#!/bin/sh
# vmscript's guest agent: runs commands and moves files for the host over a
# virtio-serial port named org.vmscript.agent, so that the serial console
# stays for boot messages and people.
#
# Needs a POSIX shell and head, wc, cat, setsid, sleep and kill (busybox has
# them all) and the virtio_console driver. To put it into a guest image of
# your own, copy this file into it and start it in the background at boot
# (`guest-agent.sh &` in /init or an init script); guest::boot adds the
# port to the machine. Without it guest::run types on the console instead.
#
# The protocol, one request at a time. A request is a line, perhaps followed
# by exactly the number of bytes it announces; so is each reply.
#   sync NONCE               -> sync NONCE
#   run TIMEOUT MAX CMDLEN   + CMD
#                            -> ran STATUS TIMEDOUT OUTLEN ERRLEN SENT
#                               + stdout and stderr when SENT is 1 (when
#                               OUTLEN + ERRLEN <= MAX)
#   put SIZE PATHLEN         + PATH + SIZE bytes   -> ok | err MESSAGE
#   get PATHLEN              + PATH   -> data SIZE + SIZE bytes | err MESSAGE
# The agent blocks in reads and writes: while the host is away a write
# waits for it to come back, so the agent burns no CPU while idle.

name=org.vmscript.agent
work=${TMPDIR:-/tmp}/.vmscript-agent

# The port appears once the host has announced it, soon after the driver
# loads; a machine without a virtio-serial device has no port to wait for.
port_of() {
  for f in /sys/class/virtio-ports/*/name; do
    if [ -r "$f" ] && [ "$(cat "$f")" = "$name" ]; then
      f=${f%/name}
      echo "/dev/${f##*/}"
      return 0
    fi
  done
  return 1
}
port=
i=0
while [ $i -lt 200 ]; do
  port=$(port_of) && break
  ls /sys/bus/virtio/drivers/virtio_console/virtio* >/dev/null 2>&1 || [ $i -lt 20 ] || exit 0
  sleep 0.05
  i=$((i + 1))
done
[ -n "$port" ] || exit 0
mkdir -p "$work" || exit 1
# One descriptor both ways: a port can be open only once.
exec 3<>"$port" || exit 1

# Exactly N bytes of the port on stdout: dd reads no further than asked
# (head's reads are buffered, and may take bytes meant for what follows).
recv() {
  [ "$1" -ge 65536 ] && dd bs=65536 count=$(($1 / 65536)) iflag=fullblock <&3 2>/dev/null
  [ $(($1 % 65536)) -gt 0 ] && dd bs=$(($1 % 65536)) count=1 iflag=fullblock <&3 2>/dev/null
  return 0
}

greet() {
  echo "vmscript-agent 1" >&3
}

run() { # TIMEOUT MAX CMDLEN
  # The read builtin takes one byte at a time, so no further than asked,
  # and without a process of its own.
  cmd=
  [ "$3" -gt 0 ] && IFS= read -r -d '' -n "$3" cmd <&3
  setsid sh -c "$cmd" </dev/null >"$work/out" 2>"$work/err" &
  pid=$!
  # The watchdog is a session of its own, so that one kill ends it and its
  # sleep (or, before it got that far, the kill of its pid); it kills the
  # command's whole process group.
  setsid sh -c 'sleep "$1"; echo "$2" >"$3"; kill -KILL -"$2" 2>/dev/null || kill -KILL "$2"' \
    watchdog "$1" "$pid" "$work/timedout" </dev/null >/dev/null 2>&1 &
  dog=$!
  wait "$pid"
  status=$?
  kill -KILL -"$dog" 2>/dev/null || kill -KILL "$dog" 2>/dev/null
  wait "$dog"
  # The watchdog leaves the pid it killed.
  timedout=0
  { read -r killed <"$work/timedout"; } 2>/dev/null && [ "$killed" = "$pid" ] && timedout=1
  set -- "$2" $(wc -c "$work/out" "$work/err")
  if [ $(($2 + $4)) -le "$1" ]; then
    echo "ran $status $timedout $2 $4 1" >&3
    [ $(($2 + $4)) -eq 0 ] || cat "$work/out" "$work/err" >&3
  else
    echo "ran $status $timedout $2 $4 0" >&3
  fi
}

put() { # SIZE PATHLEN
  path=$(recv "$2")
  # Every announced byte is read even when the file cannot be written,
  # so that the next request starts where the host thinks it does.
  if msg=$(: 2>&1 >"$path"); then
    if recv "$1" | { dd bs=1048576 of="$path" 2>/dev/null || { cat >/dev/null; exit 1; }; }; then
      echo ok >&3
    else
      echo "err cannot write $path" >&3
    fi
  else
    recv "$1" >/dev/null
    echo "err $(echo "$msg" | sed 's/^.*: //' | head -n 1): $path" >&3
  fi
}

get() { # PATHLEN
  path=$(recv "$1")
  if [ -d "$path" ]; then
    echo "err is a folder: $path" >&3
  elif [ ! -e "$path" ]; then
    echo "err no such file: $path" >&3
  elif ! size=$(wc -c <"$path" 2>/dev/null); then
    echo "err cannot read $path" >&3
  else
    size=$((size))
    echo "data $size" >&3
    dd if="$path" bs=1048576 2>/dev/null >&3
  fi
}

greet
while :; do
  if ! read -r op a b c <&3; then
    # The host hung up: the greeting waits until it is back.
    greet
    continue
  fi
  case $op in
    sync) echo "sync $a" >&3 ;;
    run) run "$a" "$b" "$c" ;;
    put) put "$a" "$b" ;;
    get) get "$a" ;;
    *) echo "err unknown request $op" >&3 ;;
  esac
done
