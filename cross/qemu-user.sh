#!/bin/sh
# Cargo's runner for the ARM targets (see cross/config.toml): runs an aarch64 or armv7 test or
# binary under qemu-user on a named CPU, and says which.
#
# usage: cross/qemu-user.sh BINARY [ARGS...]
# env:   QEMU_CPU   the emulated CPU (default cortex-a72 for aarch64, cortex-a15 for armv7)
# Tests that start the binary they test (tests/cli.rs) find this script in OCELLI_TEST_RUNNER:
# without binfmt_misc the host cannot run a foreign executable directly.
set -eu
[ $# -ge 1 ] || { sed -n '5,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
OCELLI_TEST_RUNNER=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
export OCELLI_TEST_RUNNER
# The ELF header's e_machine (offset 18) says which emulator to use.
case $(od -An -tx1 -j18 -N1 "$1" | tr -d ' ') in
  b7)
    arch=aarch64
    cpu=${QEMU_CPU:-cortex-a72}
    sysroot=/usr/aarch64-linux-gnu
    # tract picks its aarch64 kernels from the CPU part in /proc/cpuinfo, and qemu-user shows the
    # host's: name the kind after the emulated CPU.
    export TRACT_CPU_AARCH64_KIND="${TRACT_CPU_AARCH64_KIND:-$(echo "$cpu" | tr - _)}"
    export OCELLI_EXPECT_TRACT_KERNEL="${OCELLI_EXPECT_TRACT_KERNEL:-arm64simd}"
    tract="TRACT_CPU_AARCH64_KIND=$TRACT_CPU_AARCH64_KIND"
    ;;
  28)
    arch=arm
    cpu=${QEMU_CPU:-cortex-a15}
    sysroot=/usr/arm-linux-gnueabihf
    # Same cause: without a NEON flag in the host's /proc/cpuinfo tract falls back to VFP kernels.
    export TRACT_CPU_ARM32_NEON="${TRACT_CPU_ARM32_NEON:-true}"
    export OCELLI_EXPECT_TRACT_KERNEL="${OCELLI_EXPECT_TRACT_KERNEL:-armv7neon}"
    tract="TRACT_CPU_ARM32_NEON=$TRACT_CPU_ARM32_NEON"
    ;;
  *)
    echo "qemu-user.sh: $1 is not an aarch64 or armv7 executable" >&2
    exit 2
    ;;
esac
# Logged once per test executable; the child processes of tests/cli.rs stay quiet.
[ -n "${OCELLI_QEMU_QUIET:-}" ] || echo "qemu-user: $(basename "$1") on $cpu, $tract" >&2
export OCELLI_QEMU_QUIET=1
# Never qemu's default CPU ("max"): it reports SVE2, and tract would run SVE kernels no Raspberry
# Pi has, 15-25x slower under emulation.
exec "qemu-$arch-static" -cpu "$cpu" -L "$sysroot" "$@"
