#!/usr/bin/env bash
# Builds the Debian package of Ocelli for one architecture and board preset.
#
# usage: packaging/build-deb.sh ARCH BINARY [PRESET] [VERSION]
#   ARCH     arm64 | armhf
#   BINARY   the stripped ocelli binary for ARCH (`just dist` writes target/dist/ocelli-TRIPLE)
#   PRESET   a board-configs/ name; default rpi4 (arm64), rpi3-armv7 (armhf)
#   VERSION  default: the runtime crate's version
# The package holds the binary, the systemd unit, /etc/ocelli/ocelli.toml from the preset (a
# conffile, kept across upgrades), the preset's models under /usr/share/ocelli/models, and the
# model fetcher as ocelli-fetch-models. Writes target/dist/ocelli_VERSION_ARCH.deb.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
arch=$1 binary=$2
case $arch in
  arm64) preset=${3:-rpi4} triple=aarch64-unknown-linux-gnu ;;
  armhf) preset=${3:-rpi3-armv7} triple=armv7-unknown-linux-gnueabihf ;;
  *) echo "build-deb: unknown architecture $arch (arm64, armhf)" >&2; exit 2 ;;
esac
version=${4:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/runtime/Cargo.toml" | head -n1)}
config=$root/board-configs/$preset.toml
[ -f "$config" ] || { echo "build-deb: no preset $config" >&2; exit 2; }
# The preset's `[board] target` names the triple it is built for: refuse it for another ARCH.
board_target=$(sed -n '/^\[board\]/,/^\[/s/^target = "\(.*\)"/\1/p' "$config")
[ -z "$board_target" ] || [ "$board_target" = "$triple" ] ||
  { echo "build-deb: $config: [board] target is $board_target, not $triple for $arch" >&2; exit 2; }
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable (run just dist)" >&2; exit 2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$binary" "$stage/usr/bin/ocelli"
install -D -m 0644 "$root/packaging/ocelli.service" "$stage/lib/systemd/system/ocelli.service"
# The preset's memory budget becomes the unit's MemoryMax=, so the kernel enforces what it states.
memory_mb=$(sed -n 's/^memory_mb = \([0-9]*\).*/\1/p' "$config")
if [ -n "$memory_mb" ]; then
  sed -i "/^# below this line by packaging\/build-deb.sh/a MemoryMax=${memory_mb}M" \
    "$stage/lib/systemd/system/ocelli.service"
fi
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/ocelli/README.md"
install -D -m 0644 "$root/docs/config.md" "$stage/usr/share/doc/ocelli/config.md"
install -D -m 0644 "$root/docs/protocol.md" "$stage/usr/share/doc/ocelli/protocol.md"
install -D -m 0755 "$root/models/fetch.sh" "$stage/usr/share/ocelli/fetch.sh"
# Without the test-only entries (a comment starting "# Test-only" and the entry after it): a
# board fetches nothing whose licence is not the package's concern.
mkdir -p "$stage/usr/share/ocelli"
awk '/^# Test-only/ { skip = 1 } skip && !/^#/ { skip = 0; next } !skip' "$root/models/sources.tsv" \
  > "$stage/usr/share/ocelli/sources.tsv"
chmod 0644 "$stage/usr/share/ocelli/sources.tsv"
cat > "$stage/usr/bin/ocelli-fetch-models" <<'SH'
#!/bin/sh
# Fetches more reference models (see /usr/share/ocelli/sources.tsv) into /var/lib/ocelli/models.
exec /usr/share/ocelli/fetch.sh --cache /var/lib/ocelli/models "$@"
SH
chmod 0755 "$stage/usr/bin/ocelli-fetch-models"

# The preset's models ship in the package; its config points at them.
mkdir -p "$stage/usr/share/ocelli/models" "$stage/etc/ocelli"
for model in $(sed -n 's|^model = "\.\./models/cache/\(.*\)"|\1|p' "$config"); do
  src=$root/models/cache/$model
  [ -f "$src" ] || { echo "build-deb: $src missing (run models/fetch.sh $model)" >&2; exit 1; }
  install -D -m 0644 "$src" "$stage/usr/share/ocelli/models/$model"
done
sed 's|"\.\./models/cache/|"/usr/share/ocelli/models/|' "$config" > "$stage/etc/ocelli/ocelli.toml"
chmod 0644 "$stage/etc/ocelli/ocelli.toml"

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@PRESET@/$preset/" \
  "$root/packaging/deb/control" > "$stage/DEBIAN/control"
echo /etc/ocelli/ocelli.toml > "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$root/packaging/deb/$script" "$stage/DEBIAN/$script"
done
mkdir -p "$root/target/dist"
out=$root/target/dist/ocelli_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
printf '%s %.2f MB\n' "$out" "$(stat -c %s "$out" | awk '{print $1/1048576}')"
