#!/bin/bash
# The systemd test, run inside the emulated Debian arm64 board by ocelli-qemu-test.service once
# the system is up. It only gathers evidence; tests/qemu/check_systemd.py judges it on the host.
# Everything goes to the serial console:
#   ==== ocelli-fact NAME VALUE                         one observation
#   ==== ocelli-frames STEP begin / ... / end client=RC run=RC
#                                                       socket lines read after STEP (run=0: active)
#   ==== ocelli-photo begin / ... / end rc=RC           the lines of the installed package run
#                                                       on astronaut.png
#   ==== ocelli-journal begin / ... / end               the service's journal
# Kernel command line: ocelli.frames=N lines per step.
set -u
here=$(dirname "$0")
frames=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^ocelli\.frames=//p')
frames=${frames:-10}
unit=ocelli.service
socket=/run/ocelli/ocelli.sock
config=/etc/ocelli/ocelli.toml

# However the test ends, the VM powers off at once (once the console has drained): its disk is
# a throw-away snapshot.
trap 'sleep 1; systemctl --force --force poweroff' EXIT

log() { echo "[vm $(cut -d' ' -f1 /proc/uptime)s] $*"; }
fact() { echo "==== ocelli-fact $1 ${2:-}"; }
prop() { systemctl show -p "$1" --value "$unit"; }
# Polls COMMAND every 0.5 s for at most SECONDS; the status says whether it came true.
wait_for() {
  local limit=$1
  shift
  for _ in $(seq $((limit * 2))); do "$@" && return 0; sleep 0.5; done
  return 1
}
# Reads the socket for the `models` line and `frames` frame lines; STEP names the block.
stream() {
  timeout 300 "$here/sockcat" "$socket" $((frames + 1)) > /tmp/frames
  local rc=$?
  echo "==== ocelli-frames $1 begin"
  cat /tmp/frames
  systemctl is-active --quiet "$unit"
  echo "==== ocelli-frames $1 end client=$rc run=$?"
}
# The service's journal for the log; the test stops here when the service never came up.
journal() {
  echo "==== ocelli-journal begin"
  journalctl -u "$unit" -o short-monotonic --no-pager
  echo "==== ocelli-journal end"
}
journal_has() { journalctl -u "$unit" -o cat --no-pager | grep -c -- "$1"; }
more_than() { [ "$(journal_has "$1")" -gt "$2" ]; }

log "systemd $(systemctl --version | head -n1 | cut -d' ' -f2), kernel $(uname -r) $(uname -m)"
fact system_state "$(systemctl is-system-running)"
# vivid as the board's camera: capture nodes only; udev gives them to the video group.
modprobe vivid n_devs=1 node_types=0x1 multiplanar=1
udevadm settle
wait_for 10 test -c /dev/video0
fact video_group "$(stat -c %G /dev/video0 2>/dev/null)"

# Install: postinst enables the unit and starts it; Type=notify returns once READY=1.
start=$(date +%s.%N)
dpkg -i "$here/ocelli.deb" > /tmp/dpkg.log 2>&1
fact install_rc $?
sed 's/^/    /' /tmp/dpkg.log
fact install_seconds "$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $start}")"
fact enabled "$(systemctl is-enabled "$unit")"
fact active "$(prop ActiveState)/$(prop SubState)"
fact socket_mode "$(stat -c '%a %G' "$socket" 2>/dev/null)"
fact user "$(ps -o user= -p "$(prop MainPID)")"
systemctl is-active --quiet "$unit" || { journal; exit 1; }
stream installed

# The installed binary and packaged model on a photo: the installed config with the photo as
# its source and its JSON lines, for check_systemd.py to find the astronaut's face.
awk '/^\[/ { skip = ($0 == "[source]" || $0 == "[output]") } !skip' "$config" > /tmp/photo.toml
printf '\n[source]\nkind = "images"\npath = "%s"\n\n[output]\njsonl = "/tmp/photo.jsonl"\n' \
  "$here/astronaut.png" >> /tmp/photo.toml
rm -f /tmp/photo.jsonl
timeout 300 /usr/bin/ocelli run /tmp/photo.toml > /dev/null 2> /tmp/photo.err
photo_rc=$?
sed 's/^/    /' /tmp/photo.err
echo "==== ocelli-photo begin"
cat /tmp/photo.jsonl
echo "==== ocelli-photo end rc=$photo_rc"

# A stalled pipeline: the frame loop stops sending WATCHDOG=1, systemd kills and restarts it.
stalled=$(prop MainPID)
fact stalled_pid "$stalled"
kill -STOP "$stalled"
start=$(date +%s)
restarted() { [ "$(prop NRestarts)" -ge 1 ] && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$stalled" ]; }
wait_for 120 restarted
fact restart_seconds $(($(date +%s) - start))
fact restarts "$(prop NRestarts)"
fact restarted_pid "$(prop MainPID)"
fact watchdog_logged "$(journal_has 'Watchdog timeout')"
wait_for 30 test -S "$socket"
stream restarted

# Reloads: each broken config is refused with a logged error, the running pipeline goes on
# (same process, frame ids carry on); then a good config is applied.
cp "$config" /tmp/good.toml
broken() {
  case $1 in
    syntax) sed 's/^\[source\]$/[source/' /tmp/good.toml ;;
    missing-model) sed 's|^model = .*|model = "/usr/share/ocelli/models/missing.onnx"|' /tmp/good.toml ;;
  esac
}
for kind in syntax missing-model; do
  pid=$(prop MainPID)
  refused=$(journal_has 'reload refused')
  "$here/sockcat" "$socket" 2 > /tmp/before  # the models line, then the latest frame
  fact "reload_${kind}_last_id" "$(sed -n 's/.*"frame_id":\([0-9]*\).*/\1/p' /tmp/before)"
  broken "$kind" > "$config"
  systemctl reload "$unit"
  fact "reload_${kind}_rc" $?
  wait_for 60 more_than 'reload refused' "$refused"
  fact "reload_${kind}_refused" $(($(journal_has 'reload refused') - refused))
  fact "reload_${kind}_pid" "$pid $(prop MainPID)"
  stream "reload-$kind"
done
cp /tmp/good.toml "$config"
applied=$(journal_has 'ocelli: reloaded')
systemctl reload "$unit"
wait_for 60 more_than 'ocelli: reloaded' "$applied"
fact reload_good_applied $(($(journal_has 'ocelli: reloaded') - applied))
fact restarts_after_reloads "$(prop NRestarts)"

# A fleet update over MQTT from the host's broker (10.0.2.2 on QEMU's user network): the
# service gets the fleet key and the broker, a signed bundle switches its model, then a second
# one is cut short by a SIGKILL during its health check and the restarted service runs the first.
broker=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^ocelli\.broker=//p')
modprobe virtio_net
nic_up() { nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1); [ -n "$nic" ]; }
wait_for 10 nic_up
# The image has no network tools: the initramfs's busybox, copied beside this script, sets it up.
"$here/busybox" ip link set "$nic" up
"$here/busybox" ip addr add 10.0.2.15/24 dev "$nic"
"$here/busybox" ip route add default via 10.0.2.2
fact update_nic "$nic"
install -m 0644 "$here/fleet.key.pub" /etc/ocelli/fleet.key.pub
# The packaged unit allows no network: the drop-in docs/config.md gives for [output.mqtt].
net=/etc/systemd/system/ocelli.service.d/network.conf
mkdir -p "$(dirname "$net")"
printf '[Service]\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nPrivateNetwork=no\nIPAddressDeny=\n' > "$net"
systemctl daemon-reload
printf '\n[output.mqtt]\nhost = "10.0.2.2"\nport = %s\ndevice = "qemu-board"\n\n[update]\ntrusted_keys = ["fleet.key.pub"]\nmqtt = true\nhealth_frames = 5\nmax_slowdown = 5.0\n' \
  "$broker" >> "$config"
status=/var/lib/ocelli/updates/status.json
# Asks the host to publish bundle NAME to this board's update topic (cross/qemu-systemd.sh),
# and waits for the journal line WANTED.
update() {
  local done
  done=$(journal_has "$1")
  echo "==== ocelli-publish $2"
  wait_for 300 more_than "$1" "$done"
}
systemctl restart "$unit"
fact update_active "$(prop ActiveState)"
update 'update 1 from ocelli/qemu-board/update: done applied' update-1.bundle
fact update_applied "$(cat "$status" 2>/dev/null)"
stream updated
hold=/run/systemd/system/ocelli.service.d/hold.conf
mkdir -p "$(dirname "$hold")"
printf '[Service]\nEnvironment=OCELLI_UPDATE_HOLD=health-check\n' > "$hold"
systemctl daemon-reload
systemctl restart "$unit"
update 'update held at health-check' update-2.bundle
held=$(prop MainPID)
rm "$hold"
systemctl daemon-reload
systemctl kill -s KILL "$unit"
back() { [ "$(prop MainPID)" != "$held" ] && [ "$(prop ActiveState)" = active ] && grep -q interrupted "$status"; }
wait_for 120 back
fact update_pids "$held $(prop MainPID)"
fact update_after_kill "$(cat "$status" 2>/dev/null)"
stream update-killed
update 'update 2 from ocelli/qemu-board/update: done applied' update-2.bundle
fact update_again "$(cat "$status" 2>/dev/null)"
# The key and the drop-in are the administrator's files, which a purge rightly leaves: they go
# now, the rest below.
rm /etc/ocelli/fleet.key.pub "$net"
systemctl daemon-reload

# SIGTERM: the frame in flight finishes, the socket goes, exit status 0.
systemctl stop "$unit"
fact stop "$(prop Result) $(prop ExecMainCode) $(prop ExecMainStatus)"
fact socket_after_stop "$(test -e "$socket" && echo present || echo gone)"

# Purge: the unit, the config and the service's state go with the package.
systemctl start "$unit"
dpkg --purge ocelli > /tmp/dpkg.log 2>&1
fact purge_rc $?
sed 's/^/    /' /tmp/dpkg.log
fact after_purge "$(systemctl is-active "$unit") $(ls -d /lib/systemd/system/ocelli.service /etc/ocelli /var/lib/private/ocelli /usr/bin/ocelli 2>/dev/null | wc -l)"

journal
log "done"
