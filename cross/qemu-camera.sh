#!/usr/bin/env bash
# The emulated camera test: boots Debian's arm64 kernel in qemu-system-aarch64 (TCG) with an
# initramfs holding busybox, vivid and its dependencies, the aarch64 `ocelli` and a small model;
# tests/qemu/init.sh streams detections for each pixel format, then through a camera loss (vivid
# disconnected, unloaded and loaded again); tests/qemu/check.py validates them.
#
# usage: cross/qemu-camera.sh BINARY [FORMAT...]
#   BINARY: ocelli built for aarch64-unknown-linux-gnu (`just dist` leaves it in target/dist/)
#   FORMAT: V4L2 FourCCs to stream (default: every vivid format the runtime converts)
# env: QEMU_FRAMES (default 40) lines read per format; QEMU_TIMEOUT (default 900) seconds.
# Needs `cross/setup.sh` first (kernel and busybox under target/qemu/). The console log is kept
# in target/qemu/console.log.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$root/target/qemu
[ $# -ge 1 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
binary=$(realpath "$1"); shift
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(YUYV NV12 RGB3 BGR3 GREY)
frames=${QEMU_FRAMES:-40}
config=$root/board-configs/qemu-virt.toml

[ -f "$cache/kernel-version" ] || { echo "qemu-camera: no kernel in $cache: run \`just setup-cross\`" >&2; exit 1; }
kver=$(cat "$cache/kernel-version")
rootfs=$cache/rootfs
[ -x "$binary" ] || { echo "qemu-camera: $binary: no such binary: run \`just dist\`" >&2; exit 1; }
aarch64-linux-gnu-readelf -h "$binary" 2>/dev/null | grep -q "Machine: *AArch64" || { echo "qemu-camera: $binary is not an aarch64 binary" >&2; exit 1; }

# The model the config names, relative to the config as everywhere else.
model=$(sed -n 's/^model = "\(.*\)"/\1/p' "$config")
"$root/models/fetch.sh" "$(basename "$model")"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,modules,ocelli/board-configs,ocelli/models/cache}
cp "$rootfs/bin/busybox" "$stage/bin/"
for tool in sockcat v4l2button; do
  aarch64-linux-gnu-gcc -static -O2 -o "$stage/bin/$tool" "$root/tests/qemu/$tool.c"
done
i=10
for ko in $(modprobe -D -d "$rootfs" -S "$kver" vivid | awk '$1 == "insmod" {print $2}'); do
  name=$(basename "$ko")
  # busybox insmod takes plain ELF modules only.
  case $name in
    *.ko.xz) xz -dc "$ko" > "$stage/modules/$i-${name%.xz}" ;;
    *.ko.zst) zstd -qdc "$ko" > "$stage/modules/$i-${name%.zst}" ;;
    *.ko.gz) gzip -dc "$ko" > "$stage/modules/$i-${name%.gz}" ;;
    *) cp "$ko" "$stage/modules/$i-$name" ;;
  esac
  i=$((i + 1))
done
cp "$binary" "$stage/ocelli/ocelli"
# A glibc binary: bring its loader and libraries from the cross sysroot.
for lib in $(aarch64-linux-gnu-readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') ld-linux-aarch64.so.1; do
  mkdir -p "$stage/lib"
  cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$stage/lib/"
done
cp "$config" "$stage/ocelli/board-configs/"
# The preset gives its socket to the video group, which must exist here too.
mkdir -p "$stage/etc" && echo "video:x:44:" > "$stage/etc/group"
cp "$root/board-configs/$model" "$stage/ocelli/board-configs/$model"
cp "$root/tests/qemu/init.sh" "$stage/init"
chmod +x "$stage/init"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$cache/initramfs.cpio.gz")
echo "qemu-camera: initramfs $(du -h "$cache/initramfs.cpio.gz" | cut -f1), kernel $kver, formats ${formats[*]}"

start=$(date +%s)
set +e
# /dev/kvm is present on these hosts but guests hang there: TCG only.
timeout "${QEMU_TIMEOUT:-900}" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 \
  -accel tcg -nic none -nographic -no-reboot \
  -kernel "$rootfs/boot/vmlinuz-$kver" -initrd "$cache/initramfs.cpio.gz" \
  -append "console=ttyAMA0 rdinit=/init quiet panic=-1 ocelli.formats=$(IFS=,; echo "${formats[*]}") ocelli.frames=$frames ocelli.reconnect=1" \
  | tee "$cache/console.log" | grep -v '^{'
qemu_rc=${PIPESTATUS[0]}
set -e
echo "qemu-camera: VM wall time $(($(date +%s) - start)) s, qemu exit status $qemu_rc"
# The checker runs whatever the exit status: it names the formats that did not complete.
size=$(sed -n 's/^width = \([0-9]*\)/\1/p' "$config")x$(sed -n 's/^height = \([0-9]*\)/\1/p' "$config")
python3 "$root/tests/qemu/check.py" --schema "$root/docs/schema/frame.schema.json" \
  --frames "$frames" --size "$size" "$cache/console.log" "${formats[@]}" reconnect
