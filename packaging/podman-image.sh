#!/usr/bin/env bash
# Builds the arm64 image packaging/Dockerfile describes, with podman, without a registry: its
# base, debian:bookworm-slim, is made here. Debian 12 arm64's Essential set and apt (what the
# slim image holds) are unpacked on the host by cross/debian-unpack.sh and imported with
# `podman import` as docker.io/library/debian:bookworm-slim, so the Dockerfile's FROM finds it
# locally. The build's RUN steps (apt-get install tini) run as arm64 under qemu-user through
# binfmt_misc (`just setup-cross`) and reach Debian's mirror through podman's bridge network.
#
# Images live in podman storage under target/podman, with the engine settings this host needs
# (docs/container.md: runc, ulimits within the host's): export CONTAINERS_STORAGE_CONF and
# CONTAINERS_CONF as below to use them. The base is imported again only when this script,
# debian-unpack.sh or the Debian package versions change.
#
# usage: packaging/podman-image.sh TAG      (after `just dist`: target/dist holds the binary)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/cross/debian-unpack.sh"
tag=$1
store=$root/target/podman
mkdir -p "$store"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
  "$store/storage" "$store/run" > "$store/storage.conf"
# crun refuses hybrid cgroup hierarchies (v1 with controllers in the v2 mount); runc takes them.
# podman's default ulimits (nofile 1048576, nproc 4194304) exceed the host's hard limits, which
# root cannot raise without CAP_SYS_RESOURCE; runc fails to set even nproc equal to the hard one.
printf '[containers]\ndefault_ulimits = ["nofile=1024:%s", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\nevents_logger = "file"\n' \
  "$(ulimit -Hn)" > "$store/containers.conf"
export CONTAINERS_STORAGE_CONF=$store/storage.conf CONTAINERS_CONF=$store/containers.conf
[ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || { echo "podman-image: arm64 binaries do not run here (no binfmt_misc entry qemu-aarch64): run \`just setup-cross\`" >&2; exit 1; }

base=docker.io/library/debian:bookworm-slim
essential=$(apt-cache -o APT::Architecture=arm64 -o APT::Architectures=arm64 dumpavail \
  | awk '/^Package:/ { p = $2 } /^Essential: yes/ { print p }' | sort -u)
# usr-is-merged, not usrmerge and the whole of perl, meets init-system-helpers' dependency.
# shellcheck disable=SC2086 # one package name per word
packages=($essential apt mawk usr-is-merged)
stamp=$( (cat "$0" "$root/cross/debian-unpack.sh"; apt-cache -o APT::Architecture=arm64 policy "${packages[@]}") \
  | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{ index .Labels "stamp" }}' "$base" 2>/dev/null)" != "$stamp" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  debian_unpack "$work/rootfs" "$store/debs" "${packages[@]}"
  # As in the slim image: no documentation but copyrights, no translations, now or from dpkg;
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    > "$work/rootfs/etc/dpkg/dpkg.cfg.d/slim"
  # and apt keeps no package caches or translated descriptions in a layer.
  printf '%s\n' 'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' 'Acquire::Languages "none";' \
    > "$work/rootfs/etc/apt/apt.conf.d/slim"
  find "$work/rootfs/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$work/rootfs/usr/share/man" "$work/rootfs/usr/share/info" "$work/rootfs/usr/share/locale"
  # The slim image's apt source.
  cat > "$work/rootfs/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  tar -C "$work/rootfs" --numeric-owner -c . \
    | podman import --arch arm64 --os linux --change "LABEL stamp=$stamp" \
        --change 'CMD ["bash"]' - "$base" >/dev/null
  echo "podman-image: base $base imported" >&2
fi
podman build --platform linux/arm64 -f "$root/packaging/Dockerfile" -t "$tag" "$root" >&2
# Earlier builds' layers, no longer tagged.
podman image prune -f >/dev/null
echo "$tag"
