#!/usr/bin/env python3
"""tract against onnxruntime on the DETR-family models, float, in one run: `just bench-detr`.

    python3 compress/scripts/bench_detr.py --bin BIN --image IMG [--rounds N] \\
        [--doc docs/vs-onnxruntime.md] MODEL...

For each MODEL (models/detr.py's random-weight RT-DETR in each layout) it times, taking turns
run by run at one thread, tract as the runtime runs it (`BIN time --serve`: the runtime's plan,
where D-FINE's `orig_target_sizes` input becomes a constant) and onnxruntime on the same model
(fed the same image, and `orig_target_sizes` where the model takes it). The medians replace the
doc's text between its `bench-detr` markers.
"""

import argparse
import os
import sys

import numpy as np
import onnxruntime as ort

import ort_int8
from bench_ort import WARMUP, Tract, cpu_model, ort_timer, take_turns, tract_version

BEGIN, END = "<!-- bench-detr: begin -->", "<!-- bench-detr: end -->"


def feed(model, x):
    """onnxruntime's inputs: the image, and the input size where the model asks for it."""
    inputs = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()
    h, w = x.shape[2:]
    return {i.name: (x if ix == 0 else np.array([[w, h]], np.int64))
            for ix, i in enumerate(inputs)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--doc", default="docs/vs-onnxruntime.md")
    p.add_argument("models", nargs="+")
    args = p.parse_args()
    load_before = os.getloadavg()
    rows = []
    for model in args.models:
        stem = os.path.basename(model)[:-len(".onnx")]
        x = ort_int8.preprocess(model)[1](args.image)
        tensor = f"/tmp/bench-detr-{os.getpid()}.f32"
        x.astype("<f4").tofile(tensor)
        tract = Tract(args.bin, [model], [1], tensor)
        timers = {"tract": lambda: tract.time(0), "onnxruntime": ort_timer(model, 1, feed(model, x))}
        times = take_turns(timers, args.rounds)
        tract.close()
        os.remove(tensor)
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"bench-detr: {stem}: tract {med['tract']:.2f} ms, onnxruntime "
              f"{med['onnxruntime']:.2f} ms", file=sys.stderr)
        rows.append(f"| {stem} | {med['tract']:.2f} | {med['onnxruntime']:.2f} | "
                    f"{med['tract'] / med['onnxruntime']:.2f}× |")
    load_after = os.getloadavg()
    lines = [f"{cpu_model()}, tract {tract_version()}, onnxruntime {ort.__version__}; one thread; "
             f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; medians of "
             f"{args.rounds} runs after {WARMUP} warm-up, taking turns.", "",
             "| model (320×320, 300 queries) | tract ms | onnxruntime ms | tract / onnxruntime |",
             "|---|---|---|---|", *rows]
    with open(args.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{args.doc}: no '{BEGIN}' ... '{END}' block to replace")
    head, rest = doc.split(BEGIN, 1)
    with open(args.doc, "w") as f:
        f.write(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
