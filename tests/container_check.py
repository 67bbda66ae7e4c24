#!/usr/bin/env python3
"""Reads the stream of the containerised ocelli (tests/container.sh) from the host's side of its
socket volume and checks it.

usage: python3 tests/container_check.py --schema docs/schema/frame.schema.json [--frames N] SOCKET

Reads the models line and N frame lines (default 3). Every line must be valid against the
schema, frame ids must rise by one, the detector must have run on every frame, and every frame
must find the person on astronaut.png where onnxruntime does. Prints a summary; exit status 1
names every failure.
"""

import argparse
import json
import os
import socket
import sys

import jsonschema

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qemu"))
from check import check_format  # noqa: E402
from check_systemd import iou  # noqa: E402

# YOLOX-Nano's person on astronaut.png (512x512), score 0.926, by its authors' postprocessing on
# onnxruntime with the rpi4 preset's preprocessing (tests/reference/detectors.py): the
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for a line")
    ap.add_argument("socket")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
