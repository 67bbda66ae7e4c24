#!/usr/bin/env bash
# The image of packaging/Dockerfile, run for real with podman: built on a local base
# (packaging/podman-image.sh), started as packaging/k8s/daemonset.yaml starts it (its user, a
# read-only root, no capabilities, its memory limit, the socket directory a volume of the
# host's, its ConfigMap mounted over /etc/ocelli), the camera replaced by a looping photo. The host
# reads detections from the socket (tests/container_check.py: the person on astronaut.png where
# onnxruntime finds it), then stops the container: SIGTERM to tini, which forwards it, must end
# it with status 0 and the socket removed. ocelli finishes the frame in hand first: about 5 s
# under emulation here, hence a minute's grace, not the DaemonSet's 10 s (made for a board).
#
# usage: tests/container.sh     (root, after `just dist` and `just setup-cross`)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fail() { echo "container test: $*" >&2; exit 1; }
tag=localhost/ocelli:test
work=$(mktemp -d)
name=ocelli-test-$$
export CONTAINERS_STORAGE_CONF=$root/target/podman/storage.conf CONTAINERS_CONF=$root/target/podman/containers.conf
trap 'podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

"$root/packaging/podman-image.sh" "$tag" > "$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; fail "the image did not build"; }
echo "container test: image $tag built"

# The DaemonSet's pod: its ConfigMap (the camera replaced by the photo), security settings and
# volumes; the host directory its hostPath names is owned by the container's user.
mkdir -p "$work/etc" "$work/run"
chown 65534:44 "$work/run"
mapfile -t pod < <(python3 "$root/tests/container_check.py" pod "$root/packaging/k8s/daemonset.yaml" \
  "$root/models/cache/images" "$work/run" "$work/etc")
[ ${#pod[@]} -gt 0 ] || fail "no pod read from packaging/k8s/daemonset.yaml"
for i in "${!pod[@]}"; do [ "${pod[i]}" = IMAGE ] && pod[i]=$tag; done
grace=60
# The board's CPU, as every other emulated test runs: qemu's default (`max`) has SVE, whose
# emulation made one YOLOX-Nano inference take 80 s instead of 5 on an Intel Xeon host, longer
# than the grace. binfmt_misc's qemu reads QEMU_CPU from the emulated process's environment.
podman run -d --arch arm64 --env QEMU_CPU=cortex-a72 --name "$name" --network none "${pod[@]}" >/dev/null
for _ in $(seq 120); do
  [ -S "$work/run/ocelli.sock" ] && break
  [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] \
    || { podman logs "$name" >&2; fail "the container exited before serving its socket"; }
  sleep 1
done
[ -S "$work/run/ocelli.sock" ] || { podman logs "$name" >&2; fail "no socket in the volume after 120 s"; }
[ "$(stat -c '%a %u:%g' "$work/run/ocelli.sock")" = "660 65534:44" ] \
  || fail "socket is $(stat -c '%a %u:%g' "$work/run/ocelli.sock"), expected 660 65534:44 (the pod's user, video)"

# PID 1 is tini (run by qemu-user through binfmt_misc), ocelli its child.
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q '/usr/bin/tini -- /usr/bin/ocelli run' \
  || fail "the container's first process is not tini: $(tr '\0' ' ' < "/proc/$pid/cmdline")"

python3 "$root/tests/container_check.py" stream --schema "$root/docs/schema/frame.schema.json" \
  "$work/run/ocelli.sock" || { podman logs "$name" >&2; fail "the stream failed its checks"; }

start=$(date +%s%N)
podman stop -t "$grace" "$name" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
status=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$status" = 0 ] || { podman logs "$name" >&2; fail "exit status $status after SIGTERM (137: killed after ${grace} s)"; }
[ ! -e "$work/run/ocelli.sock" ] || fail "socket left in the volume after SIGTERM"
echo "container test: SIGTERM through tini: exit status 0 in ${ms} ms, socket removed: ok"
