# Sourced by cross/debian-rootfs.sh (the emulated board's root) and packaging/podman-base.sh (the
# container's base image): Debian 12 arm64 roots built on the host without debootstrap.
#
# debian_unpack ROOTFS DEBS PACKAGE...: unpacks the arm64 closure of PACKAGES into ROOTFS, with
# dpkg's database written from their control files so that dpkg and apt inside the root install
# against it. apt resolves the closure as for an empty arm64 system, from the host's package
# lists; the .debs stay in DEBS.
#
# debootstrap --foreign took 54 s for its first stage and 25 min for the second, which runs every
# maintainer script under emulation. What those scripts would have done and a root needs is done
# here by hand: users and groups from base-passwd, merged /usr, awk.
debian_unpack() {
  local rfs=$1 debs=$2 work
  shift 2
  work=$(mktemp -d)
  mkdir -p "$debs/partial"
  : > "$work/empty"
  local apt_arm64=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures=arm64
                   -o Dir::State::status="$work/empty" -o Dir::Cache::archives="$debs"
                   -o APT::Install-Recommends=false -o Debug::NoLocking=true)
  # "Inst NAME (VERSION ORIGIN [ARCH]) ..." names the file apt stores: NAME_VERSION_ARCH.deb,
  # epoch escaped.
  "${apt_arm64[@]}" -s install "$@" | grep '^Inst ' > "$work/inst"
  sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\]).*/\1 \2 \3/p' "$work/inst" > "$work/closure"
  [ "$(wc -l < "$work/closure")" -eq "$(wc -l < "$work/inst")" ] \
    || { echo "debian_unpack: cannot read apt's plan:" >&2; cat "$work/inst" >&2; return 1; }
  "${apt_arm64[@]}" --download-only install "$@" 2>&1 | grep -v 'unsandboxed' || true

  mkdir -p "$rfs/usr/bin" "$rfs/usr/sbin" "$rfs/usr/lib" "$rfs/var/lib/dpkg/info" \
    "$rfs/var/lib/dpkg/updates" "$rfs/var/lib/dpkg/triggers"
  # Debian 12 installs with merged /usr: the top-level directories are links into /usr.
  for d in bin sbin lib; do ln -s "usr/$d" "$rfs/$d"; done
  : > "$rfs/var/lib/dpkg/status"
  : > "$rfs/var/lib/dpkg/available"
  local pkg version arch deb name f
  while read -r pkg version arch; do
    deb=$debs/${pkg}_${version/:/%3a}_$arch.deb
    [ -f "$deb" ] || { echo "debian_unpack: $deb was not downloaded" >&2; return 1; }
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
  echo "debian_unpack: $(wc -l < "$work/closure") packages, $(du -sh "$rfs" | cut -f1) unpacked in $rfs" >&2
  rm -rf "$work"
}
