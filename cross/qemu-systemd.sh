#!/usr/bin/env bash
# The systemd test on an emulated board: boots Debian 12 arm64 (cross/debian-rootfs.sh) in
# qemu-system-aarch64 (TCG) with systemd as init and vivid as the camera, installs the arm64
# .deb built from BINARY with the qemu-virt preset, and runs tests/qemu/systemd-test.sh there:
# detections read from the socket, the packaged model finding the face on astronaut.png, a stalled
# pipeline restarted by the watchdog, broken configs refused on SIGHUP, signed bundles received over
# MQTT from a mosquitto on the host (one applied, one cut short by a SIGKILL, then applied), SIGTERM
# and purge. tests/qemu/check_systemd.py judges the console log.
#
# usage: cross/qemu-systemd.sh BINARY
#   BINARY: ocelli built for aarch64-unknown-linux-gnu (`just cross aarch64-unknown-linux-gnu`)
# env: QEMU_FRAMES (default 10) socket lines read per step; QEMU_TIMEOUT (default 900) seconds.
# Needs `cross/setup.sh` first and builds the host's ocelli-compress to sign the bundles. The console
# log is kept in target/qemu/systemd-console.log.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$root/target/qemu
[ $# -eq 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
binary=$(realpath "$1")
frames=${QEMU_FRAMES:-10}
preset=qemu-virt
log=$cache/systemd-console.log
begin=$(date +%s)

[ -f "$cache/kernel-version" ] || { echo "qemu-systemd: no kernel in $cache: run \`just setup-cross\`" >&2; exit 1; }
kver=$(cat "$cache/kernel-version")
[ -x "$binary" ] || { echo "qemu-systemd: $binary: no such binary: run \`just cross aarch64-unknown-linux-gnu\`" >&2; exit 1; }
aarch64-linux-gnu-readelf -h "$binary" 2>/dev/null | grep -q "Machine: *AArch64" || { echo "qemu-systemd: $binary is not an aarch64 binary" >&2; exit 1; }
image=$("$root/cross/debian-rootfs.sh")

stage=$(mktemp -d)
jobs_pids=()
trap 'kill "${jobs_pids[@]}" 2>/dev/null; rm -rf "$stage"' EXIT
model=$(sed -n 's|^model = "\.\./models/cache/\(.*\)"|\1|p' "$root/board-configs/$preset.toml")
update_model=ultraface_version-RFB-320.onnx
"$root/models/fetch.sh" "$model" "$update_model" images/astronaut.png >/dev/null

# The fleet: a key, and two bundles switching the board to UltraFace RFB (versions 1 and 2),
# published by the host's mosquitto when the board asks on its console (`==== ocelli-publish NAME`).
cargo build -q -p ocelli-compress --manifest-path "$root/Cargo.toml"
compress=${CARGO_TARGET_DIR:-$root/target}/debug/ocelli-compress
mkdir -p "$stage/fleet"
"$compress" keygen --out "$stage/fleet/fleet.key" >/dev/null
sed -n '/^\[\[detector\]\]/,/^$/p' "$root/board-configs/$preset.toml" \
  | sed -e "s|^model = .*|model = \"$update_model\"|" -e '/^sha256 = /d' > "$stage/fleet/detectors.toml"
for v in 1 2; do
  "$compress" bundle --key "$stage/fleet/fleet.key" --version $v --config "$stage/fleet/detectors.toml" \
    --out "$stage/fleet/update-$v.bundle" "$root/models/cache/$update_model" >/dev/null
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\n' "$port" > "$stage/fleet/mosquitto.conf"
mosquitto -c "$stage/fleet/mosquitto.conf" >/dev/null 2>&1 &
jobs_pids+=($!)
: > "$log"
tail --pid=$$ -n +1 -F "$log" 2>/dev/null | while read -r line; do
  case $line in
    "==== ocelli-publish "*)
      name=${line#==== ocelli-publish }
      mosquitto_pub -p "$port" -q 1 -t ocelli/qemu-board/update -f "$stage/fleet/${name%$'\r'}" ;;
  esac
done &
jobs_pids+=($!)
deb=$("$root/packaging/build-deb.sh" arm64 "$binary" "$preset" | awk '{print $1}')

# The initramfs: busybox, the virtio disk and ext4 modules in load order, and the payload.
mkdir -p "$stage"/{bin,dev,proc,sys,modules,payload}
cp "$cache/rootfs/bin/busybox" "$stage/bin/"
i=10
for ko in $(modprobe -a -D -d "$cache/rootfs" -S "$kver" virtio_mmio virtio_blk ext4 | awk '$1 == "insmod" {print $2}'); do
  cp "$ko" "$stage/modules/$i-$(basename "$ko")"
  i=$((i + 1))
done
cp "$root/tests/qemu/boot-root.sh" "$stage/init"
mv "$deb" "$stage/payload/ocelli.deb"
cp "$stage/fleet/fleet.key.pub" "$cache/rootfs/bin/busybox" "$stage/payload/"
aarch64-linux-gnu-gcc -static -O2 -o "$stage/payload/sockcat" "$root/tests/qemu/sockcat.c"
cp "$root/tests/qemu/systemd-test.sh" "$root/tests/qemu/ocelli-qemu-test.service" \
  "$root/models/cache/images/astronaut.png" "$stage/payload/"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$cache/systemd-initramfs.cpio.gz")
echo "qemu-systemd: image $(du -h --apparent-size "$image" | cut -f1) ($(du -h "$image" | cut -f1) used), initramfs $(du -h "$cache/systemd-initramfs.cpio.gz" | cut -f1), kernel $kver"

start=$(date +%s)
set +e
# /dev/kvm is present on these hosts but guests hang there: TCG only. snapshot=on keeps the
# image as built: every run boots the same fresh system.
timeout "${QEMU_TIMEOUT:-900}" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
  -accel tcg -netdev user,id=net0 -device virtio-net-device,netdev=net0 -nographic -no-reboot \
  -kernel "$cache/rootfs/boot/vmlinuz-$kver" -initrd "$cache/systemd-initramfs.cpio.gz" \
  -drive "file=$image,format=raw,if=none,id=root,snapshot=on" -device virtio-blk-device,drive=root \
  -append "console=ttyAMA0 rdinit=/init quiet panic=-1 ocelli.frames=$frames ocelli.broker=$port" \
  | tee "$log" | grep -v '^{'
qemu_rc=${PIPESTATUS[0]}
set -e
echo "qemu-systemd: VM wall time $(($(date +%s) - start)) s, qemu exit status $qemu_rc, total $(($(date +%s) - begin)) s"
python3 "$root/tests/qemu/check_systemd.py" --schema "$root/docs/schema/frame.schema.json" \
  --frames "$frames" "$log"
