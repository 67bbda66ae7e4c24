#!/usr/bin/env python3
"""Peak RSS of `ocelli run` per board preset, with the preset's own models and threads, and
the cost of refusing a decompression bomb.

Each preset runs twice: on the reference photos (an images source), and on the synthetic
source at the preset's width and height for FRAMES frames. Outputs go to a JSON-lines file
instead of the preset's socket. A run without detectors gives the runtime's own share.
The peak is the child's ru_maxrss (os.wait4). Prints a Markdown table.

--bomb instead times `ocelli run` on one 20000x20000 PNG (1-bit black, about 50 KB) against
the same run on a 64x48 PNG, alternately, ROUNDS times each: the difference is the refusal.

usage: measure.py OCELLI_BINARY [--frames N] [--bomb [--rounds N]]
"""

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(binary, config, expect_exit=0):
    """(peak RSS in kB, wall seconds, stderr) of `ocelli run config`."""
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "run", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != expect_exit:
        sys.exit(f"{config}: exit {os.waitstatus_to_exitcode(status)}: {err}")
    return usage.ru_maxrss, wall, err


def peak_rss_kb(binary, config):
    return run(binary, config)[0]


def black_png(path, width, height):
    """A 1-bit greyscale PNG of black pixels, written by hand: no decoder sees its rows."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(rows.compress(row) for _ in range(height)) + rows.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def bomb(binary, tmp, rounds):
    rows = []
    for name, (w, h), code in [("bomb", (20000, 20000), 1), ("small", (64, 48), 0)]:
        png = tmp / f"{name}.png"
        black_png(png, w, h)
        config = tmp / f"{name}.toml"
        config.write_text(f'[source]\nkind = "images"\npath = "{png}"\n')
        rows.append((name, png, config, code))
    results = {name: [] for name, *_ in rows}
    for _ in range(rounds):
        for name, png, config, code in rows:
            rss, wall, err = run(binary, config, code)
            results[name].append((wall * 1000, rss / 1024))
            if name == "bomb":
                refusal = err.splitlines()[0]
    print(f"load average {os.getloadavg()[0]:.1f}; bomb file {rows[0][1].stat().st_size} bytes")
    print(f"refusal: {refusal}")
    for name, samples in results.items():
        walls = sorted(s[0] for s in samples)
        rss = max(s[1] for s in samples)
        print(f"{name}: wall median {walls[len(walls) // 2]:.1f} ms "
              f"(min {walls[0]:.1f}, max {walls[-1]:.1f}), peak RSS at most {rss:.1f} MB")


def sections(text):
    """The preset's [board] and [[detector]] sections, with absolute model paths."""
    text = text.replace('"../models/cache/', f'"{ROOT}/models/cache/')
    parts = re.split(r"^(?=\[)", text, flags=re.M)
    return "".join(p for p in parts if p.startswith("[board]") or p.startswith("[[detector]]"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--bomb", action="store_true")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ocelli-memory-"))
    if args.bomb:
        return bomb(args.binary, tmp, args.rounds)
    images = ROOT / "models/cache/images"
    rows = []
    presets = sorted((ROOT / "board-configs").glob("*.toml"))
    for preset in [None] + presets:
        text = preset.read_text() if preset else ""
        size = re.search(r"^width = (\d+)\s*^height = (\d+)", text, flags=re.M)
        w, h = size.groups() if size else ("640", "480")
        body = sections(text)
        out = f'\n[output]\njsonl = "{tmp}/out.jsonl"\n'
        photos = tmp / "photos.toml"
        photos.write_text(f'{body}\n[source]\nkind = "images"\npath = "{images}"\n{out}')
        synthetic = tmp / "synthetic.toml"
        synthetic.write_text(f'{body}\n[source]\nkind = "synthetic"\nwidth = {w}\n'
                             f'height = {h}\nframes = {args.frames}\n{out}')
        name = preset.stem if preset else "(no detectors)"
        rows.append((name, f"{w}x{h}", peak_rss_kb(args.binary, photos),
                     peak_rss_kb(args.binary, synthetic)))
    print("| preset | synthetic size | peak RSS, reference photos | peak RSS, synthetic |")
    print("|---|---|---|---|")
    for name, size, a, b in rows:
        print(f"| `{name}` | {size} | {a / 1024:.1f} MB | {b / 1024:.1f} MB |")


if __name__ == "__main__":
    main()
