#!/bin/busybox sh
# /init of the emulated camera test (cross/qemu-camera.sh packs it into the initramfs).
#
# Loads vivid with one capture device per CPU, then streams each pixel format named by
# `ocelli.formats=A,B,..` on the kernel command line: `ocelli run` on a vivid device with that
# format, while /bin/sockcat (tests/qemu/sockcat.c) reads `ocelli.frames=N` lines from its
# socket. The devices work through the formats in parallel, each format in its own process. The
# lines go to the console between markers for tests/qemu/check.py:
#   ==== ocelli-frames FORMAT begin
#   {...one JSON line per frame...}
#   ==== ocelli-frames FORMAT end client=RC run=RC
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp

log() { echo "[init $(cut -d' ' -f1 /proc/uptime)s] $*"; }
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^ocelli\.$1=//p"; }

formats=$(arg formats | tr ',' ' ')
frames=$(arg frames)
frames=${frames:-100}
config=/ocelli/board-configs/qemu-virt.toml
cpus=$(nproc)

log "kernel $(uname -r) $(uname -m), $cpus cpu(s)"
# Modules are numbered in load order, dependencies first, vivid last: video capture nodes only,
# single-planar, one instance per CPU.
for m in /modules/*.ko; do
  case $m in
    *-vivid.ko) params="n_devs=$cpus node_types=$(yes 0x1 | head -n "$cpus" | paste -sd,) multiplanar=$(yes 1 | head -n "$cpus" | paste -sd,)" ;;
    *) params="" ;;
  esac
  insmod "$m" $params || log "insmod $m failed"
done
i=0
while [ ! -e "/dev/video$((cpus - 1))" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
log "vivid loaded: $(ls /dev/video* | tr '\n' ' ')"
/ocelli/ocelli probe /dev/video0 | grep -v -e 'Size:' -e 'Interval:'

# One format on one device; the result block goes to /tmp/out-FORMAT.
stream() {
  dev=$1 f=$2
  cfg=/ocelli/board-configs/qemu-virt-$f.toml
  socket=/tmp/ocelli-$f.sock
  sed -e "s|^device = .*|device = \"$dev\"|" -e "s|^format = .*|format = \"$f\"|" \
    -e "s|path = \"[^\"]*\"|path = \"$socket\"|" "$config" > "$cfg"
  log "$f: ocelli run on $dev"
  /ocelli/ocelli run "$cfg" 2> "/tmp/run-$f.log" &
  pid=$!
  i=0
  while [ ! -S "$socket" ] && [ $i -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  # Bounded: a runtime that stops emitting must not hold the VM until the host's timeout.
  timeout 600 sockcat "$socket" "$frames" > "/tmp/frames-$f.jsonl"
  client_rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid
  run_rc=$?
  log "$f: done, ocelli run exited $run_rc"
  {
    sed 's/^/    /' "/tmp/run-$f.log"
    echo "==== ocelli-frames $f begin"
    cat "/tmp/frames-$f.jsonl"
    echo "==== ocelli-frames $f end client=$client_rc run=$run_rc"
  } > "/tmp/out-$f"
}

# Deal the formats round-robin to the devices; each device streams its share in turn.
for d in $(seq 0 $((cpus - 1))); do
  (
    k=0
    for f in $formats; do
      [ $((k % cpus)) -eq "$d" ] && stream "/dev/video$d" "$f"
      k=$((k + 1))
    done
  ) &
done
wait
for f in $formats; do cat "/tmp/out-$f" 2>/dev/null || echo "==== ocelli-frames $f missing"; done

log "done"
poweroff -f
