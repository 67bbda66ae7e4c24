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
# Then `ocelli record` saves three frames of /dev/video0 as PNG files (`==== ocelli-record`).
# With `ocelli.reconnect=1` a last block, `reconnect`, streams YUYV through a camera loss.
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
frames=${frames:-40}
config=/ocelli/board-configs/qemu-virt.toml
cpus=$(nproc)

log "kernel $(uname -r) $(uname -m), $cpus cpu(s)"
# Modules are numbered in load order, dependencies first, vivid last: video capture nodes only,
# single-planar, one instance per CPU.
load_vivid() {
  insmod /modules/*-vivid.ko n_devs="$cpus" node_types="$(yes 0x1 | head -n "$cpus" | paste -sd,)" \
    multiplanar="$(yes 1 | head -n "$cpus" | paste -sd,)" || log "insmod vivid failed"
  i=0
  while [ ! -e "/dev/video$((cpus - 1))" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  log "vivid loaded: $(ls /dev/video* | tr '\n' ' ')"
}
for m in /modules/*.ko; do
  case $m in
    *-vivid.ko) ;;
    *) insmod "$m" || log "insmod $m failed" ;;
  esac
done
load_vivid
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
  # The `models` line first, then the frames.
  timeout 600 sockcat "$socket" $((frames + 1)) > "/tmp/frames-$f.jsonl"
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

# `ocelli record` on the real driver: 3 frames, one in 2, saved as PNG files. The line for
# tests/qemu/check.py: how many files start with the PNG signature, and the first one's
# width and height (IHDR bytes 16..23).
log "record: ocelli record on /dev/video0"
/ocelli/ocelli record "$config" --out /tmp/rec --frames 3 --every 2 2> /tmp/record.log
record_rc=$?
sed 's/^/    /' /tmp/record.log
pngs=0
for p in /tmp/rec/*.png; do
  [ "$(head -c 4 "$p" | tail -c 3)" = PNG ] && pngs=$((pngs + 1))
done
first=$(ls /tmp/rec/*.png 2>/dev/null | head -n 1)
ihdr=$([ -n "$first" ] && od -An -tu1 -j16 -N8 "$first" | tr -s ' ' | sed 's/^ //')
echo "==== ocelli-record rc=$record_rc png=$pngs ihdr=$ihdr"

# Camera loss mid-stream, on one `ocelli run` and one client connection: vivid's Disconnect
# button (an unplugged USB camera: ENODEV from then on), then the driver unloaded and loaded
# again. The stream must carry the loss and go on from the new device, with reconnects = 1.
wait_for() { # TRIES CONDITION...: poll every 0.2 s
  n=$1; shift
  while ! "$@"; do n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.2; done
}
count() { grep -c "\"type\":\"$1\"" /tmp/frames-reconnect.jsonl 2>/dev/null; }
at_least() { [ "$(count "$1")" -ge "$2" ]; }
unload_vivid() { rmmod vivid 2>/dev/null; }
if [ "$(arg reconnect)" = 1 ]; then
  cfg=/ocelli/board-configs/qemu-virt-reconnect.toml
  socket=/tmp/ocelli-reconnect.sock
  sed -e "s|path = \"[^\"]*\"|path = \"$socket\"|" "$config" > "$cfg"
  printf '[reconnect]\ndelays_s = [0.5]\nframe_timeout_s = 5\n' >> "$cfg"
  log "reconnect: ocelli run on /dev/video0"
  /ocelli/ocelli run "$cfg" 2> /tmp/run-reconnect.log &
  pid=$!
  wait_for 3000 test -S "$socket"
  # Room for the outage's notices (one per 0.5 s) besides the frames.
  timeout 600 sockcat "$socket" $((frames + 50)) > /tmp/frames-reconnect.jsonl &
  client=$!
  wait_for 3000 at_least frame $((frames / 3)) || log "reconnect: no frames before the disconnect"
  # vivid comes back by itself once its last user closes the device: hide the node first, as
  # udev does on unplug, so that ocelli's reopening fails until the driver is back.
  mv /dev/video0 /dev/video0.unplugged
  v4l2button /dev/video0.unplugged Disconnect && log "reconnect: vivid disconnected"
  wait_for 300 at_least source 2 || log "reconnect: no failed reopening after the disconnect"
  # ocelli closed the dead device before trying to reopen it: the module is free to go.
  wait_for 100 unload_vivid && log "reconnect: vivid unloaded"
  rm -f /dev/video0.unplugged
  load_vivid
  wait $client
  client_rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid
  run_rc=$?
  log "reconnect: done, ocelli run exited $run_rc"
  sed 's/^/    /' /tmp/run-reconnect.log
  echo "==== ocelli-frames reconnect begin"
  cat /tmp/frames-reconnect.jsonl
  echo "==== ocelli-frames reconnect end client=$client_rc run=$run_rc"
fi

log "done"
poweroff -f
