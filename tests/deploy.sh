#!/usr/bin/env bash
# Fleet deployment files, validated statically (tests/container.sh runs the image): the Dockerfile
# lints clean, the systemd unit's exposure is at most 2.0, the Kubernetes manifests fit the API
# schemas, and the DaemonSet's config passes `ocelli check-config` with its models.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ocelli=${OCELLI:-${CARGO_TARGET_DIR:-$root/target}/debug/ocelli}
hadolint "$root/packaging/Dockerfile"
# The unit's sandbox: systemd-analyze's exposure at most 2.0 (--threshold counts tenths), and
# exactly the figure the README states.
exposure=$(systemd-analyze security --offline=yes --threshold=20 "$root/packaging/ocelli.service" | tail -n1)
echo "$exposure"
stated=$(sed -n 's/.*rates its exposure \([0-9.]*\) .*/\1/p' "$root/README.md")
[ -n "$stated" ] || { echo "README.md: no \"rates its exposure N\" sentence" >&2; exit 1; }
[[ $exposure == *"ocelli.service: $stated "* ]] ||
  { echo "README.md states exposure $stated; systemd-analyze: $exposure" >&2; exit 1; }
kubernetes-validate --strict --quiet "$root"/packaging/k8s/*.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$root/packaging/k8s/daemonset.yaml" "$root/models/cache" > "$work/ocelli.toml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
text = docs[0]["data"]["ocelli.toml"]
# The image carries the models under /usr/share/ocelli/models; here they are in the cache.
print(text.replace('"/usr/share/ocelli/models/', '"' + sys.argv[2] + "/"))
PY
"$ocelli" check-config "$work/ocelli.toml"
echo "deployment files: Dockerfile, manifests and the DaemonSet's config: ok"
