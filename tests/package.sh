#!/usr/bin/env bash
# The Debian packages install, upgrade and purge cleanly, keeping a user's config edits:
# checked with dpkg into a scratch root (maintainer scripts run with $DPKG_ROOT set).
#
# usage: tests/package.sh ARCH BINARY [PRESET]   (see packaging/build-deb.sh)
# The host's ocelli ($CARGO_TARGET_DIR or target, then debug/ocelli; or $OCELLI) checks the installed config.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
arch=$1 binary=$2 preset=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package test ($arch): $*" >&2; exit 1; }

deb() { "$root/packaging/build-deb.sh" "$arch" "$binary" "$preset" "$1" | awk '{print $1}'; }
old=$(deb 0.0.1) && cp "$old" "$work/old.deb"
new=$(deb 0.0.2) && cp "$new" "$work/new.deb"
rm -f "$old" "$new"

R=$work/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
touch "$R/var/lib/dpkg/status"
# The scratch root has no libc6 package: the dependency is forced, nothing else.
dpkg_r() { dpkg --root="$R" --force-script-chrootless --force-architecture --force-depends "$@" >/dev/null 2>&1; }

dpkg_r -i "$work/old.deb"
for f in usr/bin/ocelli usr/bin/ocelli-fetch-models lib/systemd/system/ocelli.service \
         etc/ocelli/ocelli.toml usr/share/ocelli/fetch.sh usr/share/ocelli/sources.tsv; do
  [ -e "$R/$f" ] || fail "$f not installed"
done
! grep -q '^yolov8n.onnx' "$R/usr/share/ocelli/sources.tsv" || fail "a test-only model source is packaged"
grep -q '^yolox_nano.onnx' "$R/usr/share/ocelli/sources.tsv" || fail "the packaged sources lost yolox_nano.onnx"
grep -q '^Version: 0.0.1$' <(dpkg --root="$R" -s ocelli) || fail "version 0.0.1 not recorded"
memory_mb=$(sed -n 's/^memory_mb = \([0-9]*\).*/\1/p' "$R/etc/ocelli/ocelli.toml")
grep -qx "MemoryMax=${memory_mb:?no memory_mb in the preset}M" "$R/lib/systemd/system/ocelli.service" \
  || fail "the unit's MemoryMax= is not the preset's memory_mb ($memory_mb)"
# The installed config is valid once its absolute paths are read inside the root.
sed "s|\"/usr/share/ocelli/|\"$R/usr/share/ocelli/|" "$R/etc/ocelli/ocelli.toml" > "$work/check.toml"
"${OCELLI:-${CARGO_TARGET_DIR:-$root/target}/debug/ocelli}" check-config "$work/check.toml" >/dev/null || fail "installed config does not check"

# A user's edit of the conffile survives an upgrade.
echo "# edited on the device" >> "$R/etc/ocelli/ocelli.toml"
dpkg_r --force-confold -i "$work/new.deb"
grep -q '^Version: 0.0.2$' <(dpkg --root="$R" -s ocelli) || fail "upgrade to 0.0.2 not recorded"
grep -q "edited on the device" "$R/etc/ocelli/ocelli.toml" || fail "conffile edit lost on upgrade"

# Fetched models and state go with a purge, and nothing of the package stays behind.
mkdir -p "$R/var/lib/ocelli/models" && touch "$R/var/lib/ocelli/models/extra.onnx"
dpkg_r --purge ocelli
left=$(cd "$R" && find . -path ./var/lib/dpkg -prune -o \( -type f -o -type l \) -print)
[ -z "$left" ] || fail "left after purge: $left"
echo "package test ($arch, preset ${preset:-default}): install, upgrade keeping the edited config, purge: ok"
