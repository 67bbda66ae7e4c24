#!/usr/bin/env python3
"""Single-threaded OpenCV timings for the cases of benches/geom.rs, for docs/perf.md.

    python3 benches/opencv_geom_bench.py [CASE ...]
    python3 benches/opencv_geom_bench.py --side-by-side BENCH_BINARY [ROUNDS]

--side-by-side takes the Criterion bench executable (`cargo bench --bench geom --no-run` prints
its path) and, case by case, runs it for that case (and its `_portable` variant) then times
OpenCV right after, so both see the same machine load; with several rounds each side keeps its
fastest median. It prints a Markdown table: ours, ours with the portable kernel builds, OpenCV,
ratio, and the load averages (`uptime`) at the start and end.

Inputs are built the same way as in benches/geom.rs: astronaut.png (from ../shared/models/images,
relative to the repository root) resized to 640x480 with INTER_LINEAR, its grey version, and a
YUYV frame whose luma is that grey image and whose chroma comes from the red (U) and blue (V)
channels. Prints one line per case: name and median time per call in microseconds, measured
like Criterion does (batches of calls, median over 30 batches).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "models" / "images" / "astronaut.png"


def inputs():
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"missing {PHOTO}")
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    yuyv = np.empty((480, 640, 2), np.uint8)
    yuyv[:, :, 0] = grey
    yuyv[:, 0::2, 1] = rgb[:, 0::2, 0]
    yuyv[:, 1::2, 1] = rgb[:, 1::2, 2]
    return rgb, grey, yuyv


def homography():
    src = np.float32([[0, 0], [639, 0], [639, 479], [0, 479]])
    dst = np.float32([[32, 24], [600, 10], [620, 470], [20, 440]])
    return cv2.getPerspectiveTransform(src, dst)


def bench(fn, samples=30, sample_time=0.066):
    """Median time per call over `samples` batches, each about `sample_time` long: the same
    protocol as the Criterion bench (whose samples also include preemption by other load)."""
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.5:  # warm up and estimate the call time
        fn()
        calls += 1
    per_batch = max(1, int(sample_time / ((time.perf_counter() - start) / calls)))
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        times.append((time.perf_counter() - t0) / per_batch)
    return float(np.median(times)) * 1e6


def main():
    cv2.setNumThreads(1)
    rgb, grey, yuyv = inputs()
    mean, std = (123.675, 116.28, 103.53), 57.0
    h = homography()

    def fused():
        frame = cv2.cvtColor(yuyv, cv2.COLOR_YUV2RGB_YUYV)
        small = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_LINEAR)
        boxed = cv2.copyMakeBorder(small, 0, 80, 0, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
        return cv2.dnn.blobFromImage(boxed, 1.0 / std, (320, 320), mean, swapRB=True)

    cases = {
        "yuyv_letterbox_nchw_320": fused,
        "yuyv_to_rgb_640x480": lambda: cv2.cvtColor(yuyv, cv2.COLOR_YUV2RGB_YUYV),
        "rgb_to_grey_640x480": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        "resize_linear_640x480_to_416x312": lambda: cv2.resize(rgb, (416, 312), interpolation=cv2.INTER_LINEAR),
        "resize_area_640x480_to_416x312": lambda: cv2.resize(rgb, (416, 312), interpolation=cv2.INTER_AREA),
        "warp_perspective_linear_640x480": lambda: cv2.warpPerspective(rgb, h, (640, 480), flags=cv2.INTER_LINEAR),
        "warp_affine_linear_640x480": lambda: cv2.warpAffine(rgb, h[:2], (640, 480), flags=cv2.INTER_LINEAR),
        "gaussian_5x5_grey_640x480": lambda: cv2.GaussianBlur(grey, (5, 5), 0),
        "gaussian_5x5_rgb_640x480": lambda: cv2.GaussianBlur(rgb, (5, 5), 0),
        "box_3x3_grey_640x480": lambda: cv2.blur(grey, (3, 3)),
        "median_3_grey_640x480": lambda: cv2.medianBlur(grey, 3),
        "median_5_grey_640x480": lambda: cv2.medianBlur(grey, 5),
        "sobel_dx_3_grey_640x480": lambda: cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3),
        "canny_50_150_grey_640x480": lambda: cv2.Canny(grey, 50, 150),
        "canny_50_150_l2_grey_640x480": lambda: cv2.Canny(grey, 50, 150, L2gradient=True),
    }
    args = sys.argv[1:]
    if args[:1] == ["--side-by-side"]:
        return side_by_side(cases, args[1], int(args[2]) if len(args) > 2 else 1)
    for name, fn in cases.items():
        if not args or name in args:
            print(f"{name} {bench(fn):.1f}")


def criterion_median(name):
    path = ROOT / "target" / "criterion" / name / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1000.0


def side_by_side(cases, binary, rounds):
    env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}  # results under ROOT/target
    start_load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    best = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            subprocess.run([binary, "--bench", f"^{name}(_portable)?$"], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            timings = (criterion_median(name), criterion_median(name + "_portable"), bench(fn))
            best[name] = [min(a, b) if a is not None and b is not None else a
                          for a, b in zip(timings, best.get(name, timings))]
    end_load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"Load average (1/5/15 min): {start_load} at the start, {end_load} at the end; {rounds} round(s).")
    print()
    print("| case | ours (µs) | ours, portable (µs) | OpenCV (µs) | ours / OpenCV |")
    print("|---|---:|---:|---:|---:|")
    for name, (ours, portable, opencv) in best.items():
        portable = f"{portable:.0f}" if portable is not None else "–"
        print(f"| {name} | {ours:.0f} | {portable} | {opencv:.0f} | {ours / opencv:.2f} |")


if __name__ == "__main__":
    main()
