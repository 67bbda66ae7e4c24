#!/usr/bin/env python3
"""OpenCV's side of benches/morph.rs, and the side-by-side table.

    cargo bench -p ocelli --bench morph
    python3 benches/opencv_morph_bench.py [CRITERION_DIR]

times cv2.erode / cv2.dilate single-threaded (cv2.setNumThreads(1)) on the inputs the
Criterion bench uses (the camera photo tiled to the size; masks thresholded at 128, as u8
0/255 images for OpenCV), then prints a Markdown table: case, ours (Criterion's median),
OpenCV, ratio ours / OpenCV, and the load average from `uptime`. Both sides report the
median time of single calls (a batch of calls on a shared machine also times other
processes). CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = [REPO.parent / "shared/models/images/camera.png", REPO / "models/cache/images/camera.png"]
SIZES = [(640, 480), (1920, 1080)]
ELEMENTS = [("rect3", cv2.MORPH_RECT, 3), ("rect5", cv2.MORPH_RECT, 5), ("rect15", cv2.MORPH_RECT, 15),
            ("ellipse5", cv2.MORPH_ELLIPSE, 5), ("cross3", cv2.MORPH_CROSS, 3)]
OPS = [("erode", cv2.erode), ("dilate", cv2.dilate)]


def median_us(f, budget=1.0, min_runs=50):
    f()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < min_runs:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e6


def ours_us(criterion, case):
    path = criterion / "morph" / case / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e3


def main():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    criterion = Path(sys.argv[1]) if len(sys.argv) > 1 else target / "criterion"
    photo = next((p for p in PHOTO if p.exists()), None)
    if photo is None:
        sys.exit(f"camera.png not found in {', '.join(map(str, PHOTO))}")
    camera = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE)
    cv2.setNumThreads(1)
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    for w, h in SIZES:
        grey = np.tile(camera, (h // camera.shape[0] + 1, w // camera.shape[1] + 1))[:h, :w].copy()
        binary = np.where(grey >= 128, 255, 0).astype(np.uint8)
        out = np.empty_like(grey)
        for name, shape, size in ELEMENTS:
            element = cv2.getStructuringElement(shape, (size, size))
            for op_name, op in OPS:
                for kind, img in [("u8", grey), ("bits", binary)]:
                    case = f"{kind}-{op_name}-{name}-{w}x{h}"
                    cv = median_us(lambda: op(img, element, dst=out))
                    rows.append((case, ours_us(criterion, case), cv))
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"OpenCV {cv2.__version__}, single thread; criterion results from {criterion}")
    print(f"`uptime` before: {load_before}")
    print(f"`uptime` after: {load_after}\n")
    print("| case | ours (µs) | OpenCV (µs) | ours / OpenCV |")
    print("|---|---:|---:|---:|")
    for case, ours, cv in rows:
        ours_s = f"{ours:.1f}" if ours is not None else "—"
        ratio = f"{ours / cv:.2f}" if ours is not None else "—"
        print(f"| {case} | {ours_s} | {cv:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
