#!/usr/bin/env python3
"""tract as Ocelli runs it against onnxruntime, on this CPU, in one run: `just bench-ort`.

Run from the repository root (needs numpy, opencv-python-headless, onnxruntime, onnx,
matplotlib), after `ocelli-compress optimize` and `quantize` wrote WORK/STEM.opt.onnx and
WORK/STEM.int8.onnx for each MODEL (compress/compress.just does):

    python3 compress/scripts/bench_ort.py --bin BIN --work WORK --calib DIR --image IMG \\
        [--rounds N] [--threads 1 2] [--doc docs/vs-onnxruntime.md] MODEL...

For each MODEL (an exported float ONNX) it writes onnxruntime's QDQ int8 (ort_int8.py), then
times, taking turns run by run, each at every thread count: tract on the exported, the
optimized and the ocelli int8 model (`BIN time --serve`: the runtime's plan, its
kernels::accelerate and its executor for `[board] threads`), onnxruntime on the exported float
and on the QDQ int8 (intra_op_num_threads). All get the same input: IMG preprocessed as the
model's authors do. The medians replace the doc's text between its `bench-ort` markers; the bar
chart goes beside the doc (.png), the raw times to WORK/bench-ort.json.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import matplotlib
import numpy as np
import onnxruntime as ort

import ort_int8

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

TRACT = ["tract exported float", "tract optimized float", "ocelli int8"]
ORT = ["onnxruntime float", "onnxruntime QDQ int8"]
VARIANTS = TRACT + ORT
WARMUP = 3
BEGIN, END = "<!-- bench-ort: begin -->", "<!-- bench-ort: end -->"


class Tract:
    """`ocelli-compress time --serve`: one timed tract run per request, in its own process."""

    def __init__(self, binary, models, threads, input_path):
        cmd = [binary, "time", "--serve", "--threads", ",".join(map(str, threads)),
               "--input", input_path, *models]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if ready[:1] != ["ready"]:
            sys.exit(f"{' '.join(cmd)}: expected 'ready N', got {ready} (exit {self.proc.wait()})")

    def time(self, i):
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"ocelli-compress time --serve ended (exit {self.proc.wait()}) on plan {i}")
        return float(line)

    def close(self):
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            sys.exit(f"ocelli-compress time --serve failed (exit {self.proc.returncode})")


def ort_timer(path, threads, feed):
    s = ort_int8.session(path, threads)

    def run():
        t = time.perf_counter()
        s.run(None, feed)
        return (time.perf_counter() - t) * 1e3
    return run


def take_turns(timers, rounds):
    """Runs each of `timers` once per round, in turn, so that load hits them alike; returns
    each one's milliseconds over `rounds` rounds after WARMUP ones."""
    times = {k: [] for k in timers}
    for r in range(WARMUP + rounds):
        for k, run in timers.items():
            ms = run()
            if r >= WARMUP:
                times[k].append(ms)
    return times


def ort_qdq(model, calib, out, x):
    """Writes onnxruntime's QDQ int8 of MODEL to OUT; None if onnxruntime runs it, else why not."""
    print(f"bench-ort: onnxruntime QDQ int8 of {model}", file=sys.stderr)
    ort_int8.quantize(model, calib, out)
    s = ort_int8.session(out)
    try:
        s.run(None, {s.get_inputs()[0].name: x})
        return None
    except Exception as e:  # noqa: BLE001  (onnxruntime raises one class per status)
        print(f"bench-ort: {out} does not run: {e}", file=sys.stderr)
        return str(e).split("Status Message: ")[-1]


def bench(model, args):
    stem = os.path.basename(model)[:-len(".onnx")]
    work = lambda suffix: os.path.join(args.work, stem + suffix)  # noqa: E731
    qdq = work(".ort-qdq.onnx")
    _, load = ort_int8.preprocess(model)
    x = load(args.image)
    qdq_error = ort_qdq(model, args.calib, qdq, x)
    x.astype("<f4").tofile(work(".input.f32"))
    tract = Tract(args.bin, [model, work(".opt.onnx"), work(".int8.onnx")], args.threads,
                  work(".input.f32"))
    name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    # Each variant's thread counts run back to back: their ratio is the one load hits hardest.
    timers = {}
    for v_ix, v in enumerate(TRACT):
        for t_ix, t in enumerate(args.threads):
            timers[(v, t)] = lambda i=v_ix * len(args.threads) + t_ix: tract.time(i)
    for v, path in zip(ORT, (model, qdq)):
        for t in args.threads:
            if path != qdq or qdq_error is None:
                timers[(v, t)] = ort_timer(path, t, {name: x})
    print(f"bench-ort: {stem}: {len(timers)} runs x {args.rounds} rounds, taking turns",
          file=sys.stderr)
    times = take_turns(timers, args.rounds)
    tract.close()
    for (v, t), ts in times.items():
        print(f"bench-ort: {stem}: {v}, threads {t}: median {np.median(ts):.2f} ms", file=sys.stderr)
    return {"qdq_error": qdq_error,
            "times_ms": {f"{v}|{t}": ts for (v, t), ts in times.items()}}


def cpu_model():
    with open("/proc/cpuinfo") as f:
        info = f.read()
    name = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", info, re.M) or ["", ""])[1].split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name[1] if name else platform.machine()} ({', '.join(simd) or 'no AVX2'})"


def tract_version():
    with open("Cargo.lock") as f:
        m = re.search(r'name = "tract-onnx"\nversion = "([^"]+)"', f.read())
    return m[1] if m else "?"


def cell(x, unit=""):
    return "—" if np.isnan(x) else f"{x:.2f}{unit}"


def table(results, models, threads):
    nan = float("nan")
    med = {m: {f"{v}|{t}": nan for v in VARIANTS for t in threads} for m in models}
    out = []
    for m in models:
        med[m].update({k: float(np.median(v)) for k, v in results[m]["times_ms"].items()})
        if results[m]["qdq_error"]:
            out += [f"{m}: onnxruntime's QDQ int8 of it does not run in onnxruntime "
                    f"(`{results[m]['qdq_error']}`): not timed.", ""]
    for t in threads:
        out += [f"**threads = {t}** (median ms; ratios of medians)", "",
                "| model | " + " | ".join(VARIANTS) + " | optimized / ort float "
                "| int8 / ort int8 | int8 / optimized |",
                "|---" * (len(VARIANTS) + 4) + "|"]
        for m in models:
            g = lambda v: med[m][f"{v}|{t}"]  # noqa: E731
            cells = [cell(g(v)) for v in VARIANTS]
            ratios = [g(VARIANTS[1]) / g(ORT[0]), g(VARIANTS[2]) / g(ORT[1]),
                      g(VARIANTS[2]) / g(VARIANTS[1])]
            out.append(f"| {m} | " + " | ".join(cells) + " | "
                       + " | ".join(cell(r, "×") for r in ratios) + " |")
        out.append("")
    for t in threads[1:]:
        out += [f"**Speed-up from threads = {threads[0]} to {t}** (median at {threads[0]} / "
                f"median at {t})", "", "| model | " + " | ".join(VARIANTS) + " |",
                "|---" * (len(VARIANTS) + 1) + "|"]
        for m in models:
            out.append(f"| {m} | " + " | ".join(
                cell(med[m][f"{v}|{threads[0]}"] / med[m][f"{v}|{t}"], "×") for v in VARIANTS)
                + " |")
        out.append("")
    return out, med


def chart(med, models, threads, path, title):
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.8), squeeze=False)
    fig.suptitle(title, fontsize=9)
    width = 0.8 / len(VARIANTS)
    for ax, t in zip(axes[0], threads):
        for i, v in enumerate(VARIANTS):
            ax.bar([m + (i - (len(VARIANTS) - 1) / 2) * width for m in range(len(models))],
                   [med[m][f"{v}|{t}"] for m in models], width, label=v)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("median ms per inference")
        ax.set_title(f"threads = {t}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--doc", default="docs/vs-onnxruntime.md")
    p.add_argument("models", nargs="+")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    start, load_before = time.time(), open("/proc/loadavg").read().split()[:3]
    results = {os.path.basename(m)[:-len(".onnx")]: bench(m, args) for m in args.models}
    load_after = open("/proc/loadavg").read().split()[:3]
    models = list(results)
    with open(os.path.join(args.work, "bench-ort.json"), "w") as f:
        json.dump({"load_before": load_before, "load_after": load_after, "models": results}, f)
    lines, med = table(results, models, args.threads)
    png = os.path.splitext(args.doc)[0] + ".png"
    chart(med, models, args.threads, png, f"{cpu_model()}; load average {load_before[0]} before, "
          f"{load_after[0]} after")
    head = [f"{cpu_model()}, {os.cpu_count()} cores; tract-onnx {tract_version()}, onnxruntime "
            f"{ort.__version__}. Load average (1, 5, 15 min) {' '.join(load_before)} before, "
            f"{' '.join(load_after)} after; {args.rounds} rounds after {WARMUP} warm-up, every "
            f"run taking its turn; the whole run took {time.time() - start:.0f} s.", ""]
    block = "\n".join([BEGIN, *head, *lines, f"![bar chart]({os.path.basename(png)})", END])
    with open(args.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{args.doc}: no '{BEGIN}' ... '{END}' block to replace")
    doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    with open(args.doc, "w") as f:
        f.write(doc)
    print("\n".join([*head, *lines]))


if __name__ == "__main__":
    main()
