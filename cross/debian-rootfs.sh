#!/usr/bin/env bash
# Builds the root file system of the emulated Debian 12 arm64 board that boots with systemd as
# init: the arm64 .debs of a minimal system (systemd, udev, dpkg, kmod, procps and the Essential
# set) unpacked on the host with dpkg-deb, the dpkg database written from their control files so
# dpkg inside the VM installs packages against it, and vivid's modules from the VM's kernel.
# The result is an ext4 image, target/qemu/debian-arm64.img, rebuilt only when this script or
# the kernel changes; the .debs stay in target/qemu/debian-debs.
#
# usage: cross/debian-rootfs.sh     (after cross/setup.sh; prints the image path)
#
# Unpacking on the host takes 25-40 s cold, downloads included. debootstrap --foreign instead
# took 54 s for its first stage and 25 min for the second, which runs every maintainer script
# under TCG emulation (no binfmt_misc here to run it on the host). What those scripts would
# have done and a boot needs is done below by hand: users and groups from base-passwd, a machine
# id, merged /usr, awk. The rest (sysusers, tmpfiles, ldconfig) systemd does at boot.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$root/target/qemu
image=$cache/debian-arm64.img
[ -f "$cache/kernel-version" ] || { echo "debian-rootfs: no kernel in $cache: run \`just setup-cross\`" >&2; exit 1; }
kver=$(cat "$cache/kernel-version")

packages=(systemd udev dpkg procps kmod usr-is-merged
          base-files base-passwd bash dash coreutils util-linux mount sed grep findutils tar gzip
          diffutils libc-bin)
stamp="$(sha256sum "$0" | cut -c1-16) $kver"
if [ -f "$image" ] && [ "$(cat "$image.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$image"
  exit 0
fi

# apt resolves the closure as for an empty arm64 system, from the host's package lists.
debs=$cache/debian-debs
mkdir -p "$debs/partial"
empty=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$work" "$empty"' EXIT
apt_arm64=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures=arm64
           -o Dir::State::status="$empty" -o Dir::Cache::archives="$debs"
           -o APT::Install-Recommends=false -o Debug::NoLocking=true)
# "Inst NAME (VERSION ORIGIN [ARCH]) ..." names the file apt stores: NAME_VERSION_ARCH.deb,
# epoch escaped.
"${apt_arm64[@]}" -s install "${packages[@]}" | grep '^Inst ' > "$work/inst"
sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\]).*/\1 \2 \3/p' "$work/inst" > "$work/closure"
[ "$(wc -l < "$work/closure")" -eq "$(wc -l < "$work/inst")" ] \
  || { echo "debian-rootfs: cannot read apt's plan:" >&2; cat "$work/inst" >&2; exit 1; }
"${apt_arm64[@]}" --download-only install "${packages[@]}" 2>&1 | grep -v 'unsandboxed' || true

rfs=$work/rootfs
mkdir -p "$rfs/usr/bin" "$rfs/usr/sbin" "$rfs/usr/lib" "$rfs/var/lib/dpkg/info" \
  "$rfs/var/lib/dpkg/updates" "$rfs/var/lib/dpkg/triggers"
# Debian 12 installs with merged /usr: the top-level directories are links into /usr.
for d in bin sbin lib; do ln -s "usr/$d" "$rfs/$d"; done
: > "$rfs/var/lib/dpkg/status"
: > "$rfs/var/lib/dpkg/available"
while read -r pkg version arch; do
  deb=$debs/${pkg}_${version/:/%3a}_$arch.deb
  [ -f "$deb" ] || { echo "debian-rootfs: $deb was not downloaded" >&2; exit 1; }
  dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$rfs"
  # dpkg's database, as if the package had been configured: its status entry, its file list
  # and its maintainer scripts (Multi-Arch: same packages carry the architecture in the name).
  name=$pkg
  [ "$(dpkg-deb -f "$deb" Multi-Arch)" = same ] && name=$pkg:$(dpkg-deb -f "$deb" Architecture)
  dpkg-deb -f "$deb" | sed '1a Status: install ok installed' >> "$rfs/var/lib/dpkg/status"
  echo >> "$rfs/var/lib/dpkg/status"
  dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./$|/.|' -e 's|^\.||' -e 's|/$||' \
    > "$rfs/var/lib/dpkg/info/$name.list"
  mkdir "$work/control"
  dpkg-deb --control "$deb" "$work/control"
  for f in "$work/control"/*; do
    case ${f##*/} in control) ;; *) cp -p "$f" "$rfs/var/lib/dpkg/info/$name.${f##*/}" ;; esac
  done
  rm -rf "$work/control"
done < "$work/closure"

# base-passwd's postinst: the system users and groups.
cp "$rfs/usr/share/base-passwd/passwd.master" "$rfs/etc/passwd"
cp "$rfs/usr/share/base-passwd/group.master" "$rfs/etc/group"
# update-alternatives, for the one alternative scripts here need.
ln -s mawk "$rfs/usr/bin/awk"
# A fixed machine id: without one, systemd treats every boot as the first and runs firstboot.
echo 0123456789abcdef0123456789abcdef > "$rfs/etc/machine-id"
echo ocelli-vm > "$rfs/etc/hostname"
echo "/dev/vda / ext4 rw,noatime 0 1" > "$rfs/etc/fstab"
ln -sf /lib/systemd/system/multi-user.target "$rfs/etc/systemd/system/default.target"
# The console carries the test's results: no login prompt on it.
ln -sf /dev/null "$rfs/etc/systemd/system/serial-getty@ttyAMA0.service"

# vivid and its dependencies, with a module index depmod writes for the arm64 tree.
mods=$cache/rootfs/lib/modules/$kver
mkdir -p "$rfs/lib/modules/$kver"
cp "$mods"/modules.{order,builtin,builtin.modinfo} "$rfs/lib/modules/$kver/"
for ko in $(modprobe -D -d "$cache/rootfs" -S "$kver" vivid | awk '$1 == "insmod" {print $2}'); do
  rel=${ko#"$mods"/}
  install -D -m 0644 "$ko" "$rfs/lib/modules/$kver/$rel"
done
depmod -b "$rfs" "$kver"

# Room for the package under test and the journal; the VM boots it with -snapshot, so the
# image itself never changes.
rm -f "$image"
mkfs.ext4 -q -F -L ocelli-root -d "$rfs" "$image" 1G >/dev/null
echo "$stamp" > "$image.stamp"
echo "debian-rootfs: $(wc -l < "$work/closure") packages, $(du -sh "$rfs" | cut -f1) unpacked, image $image" >&2
echo "$image"
