#!/usr/bin/env python3
"""The pod of packaging/k8s/daemonset.yaml as podman arguments, and the check of its stream, for
tests/container.sh.

usage: python3 tests/container_check.py pod DAEMONSET IMAGES SOCKET_DIR CONFIG_DIR
       python3 tests/container_check.py stream --schema docs/schema/frame.schema.json [--frames N] SOCKET

`pod` writes the ConfigMap's files into CONFIG_DIR, the camera replaced by astronaut.png from
IMAGES (mounted read-only at /srv/images) in a loop, and prints the `podman run` arguments that
give the container what the DaemonSet gives it, one per line: its user and groups, a read-only
root, no capabilities, no privilege escalation, its memory limit, its volumes (the hostPath
SOCKET_DIR, the ConfigMap, emptyDir as tmpfs), then the line IMAGE, then its args.

`stream` reads the models line and N frame lines (default 2) from the socket. Every line must be
valid against the schema, frame ids must rise by one, the detector must have run on every frame,
and every frame must find the person on astronaut.png where onnxruntime does. Prints a summary;
exit status 1 names every failure.
"""

import argparse
import json
import os
import re
import socket
import sys

import jsonschema
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qemu"))
from check import check_format  # noqa: E402
from check_systemd import iou  # noqa: E402

# YOLOX-Nano's person on astronaut.png (512x512), score 0.926, by its authors' postprocessing on
# onnxruntime with the DaemonSet's preprocessing (tests/reference/detectors.py): the
# container's must overlap it with an IoU of at least 0.9.
PERSON = (11.5, 20.3, 368.9, 507.2)


def read_lines(path, frames, timeout):
    """The socket's lines up to and including the `frames`-th frame line."""
    lines = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        for line in s.makefile("r", encoding="utf-8"):
            lines.append(line.rstrip("\n"))
            if sum('"type":"frame"' in l for l in lines) == frames:
                break
    return lines


SOURCE = '[source]\nkind = "images"\npath = "/srv/images/astronaut.png"\nloop = true\n\n'


def pod(daemonset, images, socket_dir, config_dir):
    """The podman arguments of the DaemonSet's pod; writes its ConfigMap into config_dir."""
    docs = [d for d in yaml.safe_load_all(open(daemonset)) if d]
    spec = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    configs = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    (container,) = spec["containers"]
    sec, csec = spec["securityContext"], container["securityContext"]
    args = [f"--user={sec['runAsUser']}:{sec['runAsGroup']}"]
    args += [f"--group-add={g}" for g in sec.get("supplementalGroups", [])]
    if csec.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if csec.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    args += [f"--cap-drop={c}" for c in csec["capabilities"]["drop"]]
    memory = container["resources"]["limits"]["memory"]
    args.append("--memory=" + memory.replace("Mi", "m").replace("Gi", "g"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in container["volumeMounts"]:
        v, path = volumes[m["name"]], m["mountPath"]
        ro = ":ro" if m.get("readOnly") else ""
        if "hostPath" in v:
            args.append(f"--volume={socket_dir}:{path}{ro}")
        elif "configMap" in v:
            for name, text in configs[v["configMap"]["name"]].items():
                swapped = re.sub(r"^\[source\]\n(?:.+\n)*\n", SOURCE, text, flags=re.M)
                if swapped == text:
                    sys.exit(f"{daemonset}: no [source] table in {name} of ConfigMap {v['configMap']['name']}")
                with open(os.path.join(config_dir, name), "w") as f:
                    f.write(swapped)
            args.append(f"--volume={config_dir}:{path}{ro}")
        elif "emptyDir" in v:
            args.append(f"--tmpfs={path}")
        else:
            sys.exit(f"{daemonset}: volume {m['name']}: no hostPath, configMap or emptyDir")
    args.append(f"--volume={images}:/srv/images:ro")
    return args + ["IMAGE"] + container.get("args", [])


def stream(args):
    validator = jsonschema.Draft202012Validator(json.load(open(args.schema)))
    lines = read_lines(args.socket, args.frames, args.timeout)
    errors, summary = check_format(lines, 0, 0, validator, args.frames, (512, 512))
    for line in lines:
        msg = json.loads(line)
        if msg.get("type") != "frame":
            continue
        people = [d for d in msg["detections"] if d["label"] == "person"]
        best = max((iou(d["box"], PERSON) for d in people), default=0.0)
        if best < 0.9:
            errors.append(f"frame {msg['frame_id']}: no person overlapping {list(PERSON)} "
                          f"with IoU >= 0.9 (best {best:.3f}): {msg['detections']}")
        else:
            summary += f"; frame {msg['frame_id']}: person {people[0]['score']:.3f} IoU {best:.3f}"
    print(f"container stream: {summary}")
    for e in errors:
        print(f"  FAIL {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pod")
    for name in ["daemonset", "images", "socket_dir", "config_dir"]:
        p.add_argument(name)
    s = sub.add_parser("stream")
    s.add_argument("--schema", required=True)
    s.add_argument("--frames", type=int, default=2)
    s.add_argument("--timeout", type=float, default=120, help="seconds to wait for a line")
    s.add_argument("socket")
    args = ap.parse_args()
    if args.command == "pod":
        print("\n".join(pod(args.daemonset, args.images, args.socket_dir, args.config_dir)))
    else:
        stream(args)


if __name__ == "__main__":
    main()
