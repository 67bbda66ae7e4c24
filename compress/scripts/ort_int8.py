#!/usr/bin/env python3
"""onnxruntime's int8 of a YOLOv8-style model, and its timings, for comparison with tract.

Run from the repository root (needs numpy, opencv-python-headless, onnxruntime, onnx):

    python3 compress/scripts/ort_int8.py MODEL.onnx CALIB_DIR OUT.onnx [ROUNDS]

Writes OUT.onnx with onnxruntime.quantization.quantize_static (QDQ, u8 activations, s8
per-channel weights, MinMax calibration on CALIB_DIR preprocessed as Ultralytics does), then
times MODEL and OUT in onnxruntime on one thread, taking turns, and prints the medians.
"""

import glob
import os
import sys
import time

import logging

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


def letterbox(path, size):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"{path}: not an image")
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    out = np.full((size, size, 3), 114, np.uint8)
    out[top:top + nh, left:left + nw] = img
    return np.ascontiguousarray(out[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255.0


class Reader(CalibrationDataReader):
    def __init__(self, files, name, size):
        self.it = iter([{name: letterbox(f, size)} for f in files])

    def get_next(self):
        return next(self.it, None)


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main():
    logging.getLogger().setLevel(logging.ERROR)
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    model, calib, out = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) == 5 else 30
    files = sorted(glob.glob(os.path.join(calib, "*.png")) + glob.glob(os.path.join(calib, "*.jpg")))
    if not files:
        sys.exit(f"{calib}: no PNG or JPEG files")
    s = session(model)
    inp = s.get_inputs()[0]
    size = inp.shape[2]
    quantize_static(model, out, Reader(files, inp.name, size), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    x = letterbox(files[0], size)
    sessions = [s, session(out)]
    times = [[], []]
    for r in range(rounds + 3):
        for k, sess in enumerate(sessions):
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            if r >= 3:
                times[k].append((time.perf_counter() - t) * 1e3)
    for name, t in zip((model, out), times):
        print(f"onnxruntime median {np.median(t):8.2f} ms   fastest {min(t):8.2f} ms  {name}")


if __name__ == "__main__":
    main()
