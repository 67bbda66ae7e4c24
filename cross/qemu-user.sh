#!/bin/sh
# Cargo's runner for the ARM targets (see cross/config.toml): runs a test or binary under
# qemu-user on a named CPU, and says which.
#
# usage: cross/qemu-user.sh aarch64|arm BINARY [ARGS...]
# env:   QEMU_CPU   the emulated CPU (default cortex-a72 for aarch64, cortex-a15 for arm)
set -eu
arch=$1
shift
case $arch in
  aarch64)
    cpu=${QEMU_CPU:-cortex-a72}
    sysroot=/usr/aarch64-linux-gnu
    # tract picks its aarch64 kernels from the CPU part in /proc/cpuinfo, and qemu-user shows the
    # host's: name the kind after the emulated CPU.
    export TRACT_CPU_AARCH64_KIND="${TRACT_CPU_AARCH64_KIND:-$(echo "$cpu" | tr - _)}"
    export OCELLI_EXPECT_TRACT_KERNEL="${OCELLI_EXPECT_TRACT_KERNEL:-arm64simd}"
    echo "qemu-user: $(basename "$1") on $cpu, TRACT_CPU_AARCH64_KIND=$TRACT_CPU_AARCH64_KIND" >&2
    ;;
  arm)
    cpu=${QEMU_CPU:-cortex-a15}
    sysroot=/usr/arm-linux-gnueabihf
    # Same cause: without a NEON flag in the host's /proc/cpuinfo tract falls back to VFP kernels.
    export TRACT_CPU_ARM32_NEON="${TRACT_CPU_ARM32_NEON:-true}"
    export OCELLI_EXPECT_TRACT_KERNEL="${OCELLI_EXPECT_TRACT_KERNEL:-armv7neon}"
    echo "qemu-user: $(basename "$1") on $cpu, TRACT_CPU_ARM32_NEON=$TRACT_CPU_ARM32_NEON" >&2
    ;;
  *)
    echo "qemu-user.sh: unknown architecture $arch (aarch64 or arm)" >&2
    exit 2
    ;;
esac
# Never qemu's default CPU ("max"): it reports SVE2, and tract would run SVE kernels no Raspberry
# Pi has, 15-25x slower under emulation.
exec "qemu-$arch-static" -cpu "$cpu" -L "$sysroot" "$@"
