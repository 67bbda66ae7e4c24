#!/usr/bin/env python3
"""onnxruntime's int8 of a reference detector, and its timings, for comparison with tract.

Run from the repository root (needs numpy, opencv-python-headless, onnxruntime, onnx):

    python3 compress/scripts/ort_int8.py MODEL.onnx CALIB_DIR OUT.onnx [ROUNDS]

Writes OUT.onnx with onnxruntime.quantization.quantize_static (QDQ, u8 activations, s8
per-channel weights, MinMax calibration on CALIB_DIR preprocessed as the model's authors do,
tests/reference/detectors.py), then times MODEL and OUT in onnxruntime on one thread, taking
turns, and prints the medians. `just bench-ort` (compress/scripts/bench_ort.py) imports it.
"""

import glob
import logging
import os
import sys
import time

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "reference"))
from detectors import SPECS  # noqa: E402  (the authors' preprocessing of each reference model)

# Errors only: some exporters list initializers among the graph inputs, a warning per tensor.
ort.set_default_logger_severity(3)


def preprocess(model):
    """The reference detector MODEL derives from (by file name, as ocelli-compress matches
    presets): its input size and a function from an image file to its input tensor."""
    name = os.path.basename(model)
    stems = [os.path.basename(spec[0])[:-len(".onnx")] for spec in SPECS.values()]
    matches = [(stem, spec) for stem, spec in zip(stems, SPECS.values()) if name.startswith(stem)]
    if not matches:
        sys.exit(f"{model}: no reference detector matches the file name (known: {', '.join(stems)})")
    _, (_, _, _, size, pre, *_rest) = max(matches, key=lambda m: len(m[0]))

    def load(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"{path}: not an image")
        return pre(img, size)[0]
    return size, load


def images(folder):
    files = sorted(glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.jpg")))
    if not files:
        sys.exit(f"{folder}: no PNG or JPEG files")
    return files


class Reader(CalibrationDataReader):
    def __init__(self, tensors, name):
        self.it = iter([{name: t} for t in tensors])

    def get_next(self):
        return next(self.it, None)


def session(path, threads=1):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    # A pool thread spinning after a run would take a core from whatever runs next in turn.
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def quantize(model, calib, out):
    """onnxruntime's QDQ int8 of MODEL, calibrated on the images in CALIB."""
    logging.getLogger().setLevel(logging.ERROR)
    _, load = preprocess(model)
    name = session(model).get_inputs()[0].name
    quantize_static(model, out, Reader([load(f) for f in images(calib)], name),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel(model))


def per_channel(model):
    """Per-channel weights where the model's opset has DequantizeLinear's axis (13 on):
    onnxruntime's quantizer writes it regardless, and converting the opset breaks NanoDet."""
    return next(o.version for o in onnx.load(model).opset_import if o.domain in ("", "ai.onnx")) >= 13


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    model, calib, out = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) == 5 else 30
    quantize(model, calib, out)
    _, load = preprocess(model)
    x = load(images(calib)[0])
    sessions = [session(model), session(out)]
    name = sessions[0].get_inputs()[0].name
    times = [[], []]
    for r in range(rounds + 3):
        for k, sess in enumerate(sessions):
            t = time.perf_counter()
            sess.run(None, {name: x})
            if r >= 3:
                times[k].append((time.perf_counter() - t) * 1e3)
    for name, t in zip((model, out), times):
        print(f"onnxruntime median {np.median(t):8.2f} ms   fastest {min(t):8.2f} ms  {name}")


if __name__ == "__main__":
    main()
