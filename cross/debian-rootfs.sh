#!/usr/bin/env bash
# Builds the root file system of the emulated Debian 12 arm64 board that boots with systemd as
# init: the arm64 .debs of a minimal system (systemd, udev, dpkg, kmod, procps and the Essential
# set) unpacked on the host (cross/debian-unpack.sh), and vivid's and virtio-net's modules from
# the VM's kernel.
# The result is an ext4 image, target/qemu/debian-arm64.img, rebuilt only when this script or
# the kernel changes; the .debs stay in target/qemu/debian-debs.
#
# usage: cross/debian-rootfs.sh     (after cross/setup.sh; prints the image path)
#
# Unpacking on the host takes 25-40 s cold, downloads included. What maintainer scripts would
# have done and a boot needs beyond debian_unpack is done below: a machine id. The rest
# (sysusers, tmpfiles, ldconfig) systemd does at boot.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/cross/debian-unpack.sh"
cache=$root/target/qemu
image=$cache/debian-arm64.img
[ -f "$cache/kernel-version" ] || { echo "debian-rootfs: no kernel in $cache: run \`just setup-cross\`" >&2; exit 1; }
kver=$(cat "$cache/kernel-version")

packages=(systemd udev dpkg procps kmod usr-is-merged
          base-files base-passwd bash dash coreutils util-linux mount sed grep findutils tar gzip
          diffutils libc-bin)
stamp="$(cat "$0" "$root/cross/debian-unpack.sh" | sha256sum | cut -c1-16) $kver"
if [ -f "$image" ] && [ "$(cat "$image.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rfs=$work/rootfs
debian_unpack "$rfs" "$cache/debian-debs" "${packages[@]}"

# A fixed machine id: without one, systemd treats every boot as the first and runs firstboot.
echo 0123456789abcdef0123456789abcdef > "$rfs/etc/machine-id"
echo ocelli-vm > "$rfs/etc/hostname"
echo "/dev/vda / ext4 rw,noatime 0 1" > "$rfs/etc/fstab"
ln -sf /lib/systemd/system/multi-user.target "$rfs/etc/systemd/system/default.target"
# The console carries the test's results: no login prompt on it.
ln -sf /dev/null "$rfs/etc/systemd/system/serial-getty@ttyAMA0.service"

# vivid (the camera) and virtio-net (the fleet test's broker on the host) with their dependencies,
# and a module index depmod writes for the arm64 tree.
mods=$cache/rootfs/lib/modules/$kver
mkdir -p "$rfs/lib/modules/$kver"
cp "$mods"/modules.{order,builtin,builtin.modinfo} "$rfs/lib/modules/$kver/"
for ko in $(modprobe -a -D -d "$cache/rootfs" -S "$kver" vivid virtio_net | awk '$1 == "insmod" {print $2}'); do
  rel=${ko#"$mods"/}
  install -D -m 0644 "$ko" "$rfs/lib/modules/$kver/$rel"
done
depmod -b "$rfs" "$kver"

# Room for the package under test and the journal; the VM boots it with -snapshot, so the
# image itself never changes.
rm -f "$image"
mkfs.ext4 -q -F -L ocelli-root -d "$rfs" "$image" 1G >/dev/null
echo "$stamp" > "$image.stamp"
echo "debian-rootfs: image $image" >&2
echo "$image"
