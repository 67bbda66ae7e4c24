#!/bin/busybox sh
# /init of the emulated camera test (cross/qemu-camera.sh packs it into the initramfs).
#
# Loads vivid, then for each pixel format named by `ocelli.formats=A,B,..` on the kernel command
# line runs `ocelli run` on /dev/video0 and reads `ocelli.frames=N` lines from its socket with
# /bin/sockcat (tests/qemu/sockcat.c). The lines go to the console between markers for
# tests/qemu/check.py:
#   ==== ocelli-frames FORMAT begin
#   {...one JSON line per frame...}
#   ==== ocelli-frames FORMAT end client=RC run=RC
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /run

log() { echo "[init $(cut -d' ' -f1 /proc/uptime)s] $*"; }
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^ocelli\.$1=//p"; }

formats=$(arg formats | tr ',' ' ')
frames=$(arg frames)
frames=${frames:-100}
config=/ocelli/board-configs/qemu-virt.toml
socket=$(sed -n 's/.*socket *= *{ *path *= *"\([^"]*\)".*/\1/p' "$config")

log "kernel $(uname -r) $(uname -m), $(nproc) cpu(s)"
# Modules are numbered in load order (dependencies first).
for m in /modules/*.ko; do insmod "$m" || log "insmod $m failed"; done
i=0
while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
log "vivid loaded: $(ls /dev/video* | tr '\n' ' ')"

/ocelli/ocelli probe /dev/video0

for f in $formats; do
  cfg=/ocelli/board-configs/qemu-virt-$f.toml
  sed "s/^format = .*/format = \"$f\"/" "$config" > "$cfg"
  log "$f: ocelli run"
  /ocelli/ocelli run "$cfg" 2> "/tmp/run-$f.log" &
  pid=$!
  i=0
  while [ ! -S "$socket" ] && [ $i -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  # A bounded wait: a runtime that stops emitting must not hang the VM until the host's timeout.
  timeout 600 sockcat "$socket" "$frames" > "/tmp/frames-$f.jsonl"
  client_rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid
  run_rc=$?
  log "$f: ocelli run exited $run_rc; its log:"
  sed 's/^/    /' "/tmp/run-$f.log"
  echo "==== ocelli-frames $f begin"
  cat "/tmp/frames-$f.jsonl"
  echo "==== ocelli-frames $f end client=$client_rc run=$run_rc"
  rm -f "$socket"
done

log "done"
poweroff -f
