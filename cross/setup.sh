#!/usr/bin/env bash
# Installs what cross builds, qemu-user tests and the emulated camera need, and caches Debian's
# arm64 kernel and busybox for the VM under target/qemu/. Idempotent: a second run only checks.
#
# usage: cross/setup.sh        (root on Debian 12; run by `just setup-cross`)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$root/target/qemu

pkgs=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
      qemu-user-static qemu-user qemu-system-arm kmod cpio libclang-dev xz-utils zstd e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# The kernel and busybox for the VM are arm64 packages: apt must know that architecture.
arch_added=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  arch_added=1
fi
if [ ${#missing[@]} -gt 0 ] || [ -n "$arch_added" ] || ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ARM binaries run by the kernel through qemu-user (the container image's RUN steps and
# processes): qemu-user-static's binfmt_misc entries, registered by hand where no init does it.
# Their F flag opens the interpreter now, so it also serves inside containers.
[ -f /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
for arch in aarch64 arm; do
  [ -f "/proc/sys/fs/binfmt_misc/qemu-$arch" ] || cat "/usr/lib/binfmt.d/qemu-$arch.conf" > /proc/sys/fs/binfmt_misc/register
done

# armv7-unknown-linux-musleabihf is left out: rustup ships no rust-std for it on current stable.
rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl 2>&1 \
  | grep -v 'is up to date' || true

# The kernel ABI package behind the meta-package, e.g. linux-image-6.1.0-41-arm64.
kpkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
kpkg=${kpkg%%:*}
kver=${kpkg#linux-image-}
[ -n "$kver" ] || { echo "setup-cross: no arm64 kernel package found (apt-get update?)" >&2; exit 1; }
mkdir -p "$cache/debs"
for pkg in "$kpkg" busybox-static; do
  if ! ls "$cache/debs/${pkg}_"*_arm64.deb >/dev/null 2>&1; then
    (cd "$cache/debs" && apt-get download -qq "$pkg:arm64")
  fi
done
# Unpack once per kernel version; modules.dep is not shipped, depmod writes it for any arch.
rootfs=$cache/rootfs
if [ ! -f "$rootfs/lib/modules/$kver/modules.dep" ]; then
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  for deb in "$cache/debs/${kpkg}_"*_arm64.deb "$cache/debs/busybox-static_"*_arm64.deb; do
    dpkg -x "$deb" "$rootfs"
  done
  depmod -b "$rootfs" "$kver"
fi
echo "$kver" > "$cache/kernel-version"
echo "setup-cross: toolchains ready; VM kernel $kver and busybox in $cache"
