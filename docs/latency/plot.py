#!/usr/bin/env python3
"""Runs the host demo (YOLOX-Nano and YuNet over the reference photos, looped) with the HTTP
endpoint on, scrapes /metrics, and plots the stage latency histograms.

usage: docs/latency/plot.py [--ocelli BIN] [--seconds S] [--scrape FILE]

With --scrape, plots an existing scrape instead of running the demo. Writes
docs/latency/metrics.txt (the scrape) and docs/latency/latency-histogram.png.
Needs the models and photos (`just fetch`) and matplotlib (requirements-dev.txt).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STAGES = ["capture", "preprocess", "inference", "postprocess", "emit"]
SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_scrape(ocelli, seconds):
    port = free_port()
    demo = (ROOT / "board-configs/host-demo.toml").read_text()
    # Loop the photos, keep the detectors and the socket, serve metrics, write no files.
    head, _, _ = demo.partition("[output]")
    head = head.replace('path = "../models/cache/images"',
                        f'path = "{ROOT}/models/cache/images"\nloop = true')
    head = head.replace('"../models/cache/', f'"{ROOT}/models/cache/')
    sock = Path(tempfile.mkdtemp()) / "ocelli.sock"
    config = head + (f'[output]\nsocket = {{ path = "{sock}" }}\n'
                     f'http = {{ listen = "127.0.0.1:{port}" }}\n')
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    proc = subprocess.Popen([ocelli, "run", f.name], stdout=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        os.unlink(f.name)


def buckets(scrape):
    """{stage: [(le, cumulative count)]} from the exposition text."""
    out = {s: [] for s in STAGES}
    for line in scrape.splitlines():
        m = SAMPLE.match(line)
        if not m or m.group(1) != "ocelli_stage_latency_seconds_bucket":
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        out[labels["stage"]].append((float(labels["le"]), float(m.group(3))))
    return out


def plot(scrape, png):
    frames = re.search(r"^ocelli_frames_total (\S+)$", scrape, re.M).group(1)
    fps = float(re.search(r"^ocelli_fps (\S+)$", scrape, re.M).group(1))
    fig, axes = plt.subplots(len(STAGES), 1, figsize=(8, 9), sharex=True)
    for ax, stage in zip(axes, STAGES):
        b = buckets(scrape)[stage]
        bounds = [le for le, _ in b]
        counts = [c - (b[i - 1][1] if i else 0) for i, (_, c) in enumerate(b)]
        labels = ["≤" + (f"{le * 1e3:g} ms" if le != float("inf") else "+Inf") for le in bounds]
        ax.bar(range(len(b)), counts, color="#4c72b0")
        ax.set_ylabel(stage, rotation=0, ha="right", va="center")
        ax.set_xticks(range(len(b)), labels, rotation=45, ha="right", fontsize=8)
    axes[0].set_title(f"Stage latency per frame: host demo, {frames} frames, {fps:.1f} fps")
    axes[-1].set_xlabel("bucket (upper bound)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--ocelli", default=str(target / "debug/ocelli"))
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--scrape", type=Path)
    args = ap.parse_args()
    if args.scrape:
        scrape = args.scrape.read_text()
    else:
        scrape = demo_scrape(args.ocelli, args.seconds)
        (HERE / "metrics.txt").write_text(scrape)
    plot(scrape, HERE / "latency-histogram.png")
    print(f"wrote {HERE / 'latency-histogram.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
