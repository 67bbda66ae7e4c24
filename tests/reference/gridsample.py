#!/usr/bin/env python3
"""Reference results of ONNX GridSample (opset 17) from onnxruntime.

    python3 tests/reference/gridsample.py target/fixtures/gridsample

One case per mode (bilinear, nearest, bicubic) x padding_mode (zeros, border, reflection) x
align_corners (0, 1): X [1,3,7,9] and grid [1,5,6,2], seeded, the grid in [-1.4, 1.4] (past
the borders) with exact -1, 0 and 1 points among them (where nearest rounds halves). One more,
`rtdetr_bilinear_zeros_0`, at RT-DETR's deformable-attention size: X [1,64,10,10], grid
[1,300,4,2]. Each OUTDIR/<mode>_<padding>_<align_corners>/ holds model.onnx (the one node),
inputs.json (X, grid) and outputs.json (Y), with their .f32 files, as detectors.py writes them.

Each case is also run in ONNX's own reference implementation (onnx.reference, the operator's
specification in code). Where onnxruntime departs from it by more than 1e-4 (bicubic with
border padding: onnxruntime clamps each of the 16 taps but not the sampling point, as PyTorch
does; the specification clamps the point first), the folder also holds spec.json, the
specification's Y, and the script says so.
"""

import itertools
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from detectors import write_tensors

EXACT = [(-1, -1), (0, 0), (1, 1), (-1, 1), (1, -1), (0, 1), (1, 0), (-1, 0), (0, -1)]


def model(mode, padding, align_corners, x_shape, grid_shape):
    node = helper.make_node("GridSample", ["X", "grid"], ["Y"], mode=mode,
                            padding_mode=padding, align_corners=align_corners)
    y_shape = [x_shape[0], x_shape[1], grid_shape[1], grid_shape[2]]
    graph = helper.make_graph(
        [node], "gridsample",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def inputs(rng, x_shape, grid_shape, extent):
    x = rng.standard_normal(x_shape).astype(np.float32)
    grid = rng.uniform(-extent, extent, grid_shape).astype(np.float32)
    grid.reshape(-1, 2)[: len(EXACT)] = EXACT
    return x, grid


def write_case(outdir, name, mode, padding, align_corners, x, grid):
    folder = os.path.join(outdir, name)
    os.makedirs(folder, exist_ok=True)
    m = model(mode, padding, align_corners, list(x.shape), list(grid.shape))
    onnx.save(m, os.path.join(folder, "model.onnx"))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"X": x, "grid": grid})
    write_tensors(folder, "inputs.json", [("X", x), ("grid", grid)])
    write_tensors(folder, "outputs.json", [("Y", y)])
    # onnx.reference knows the opset-20 names of the modes only.
    spec_model = onnx.ModelProto()
    spec_model.CopyFrom(m)
    for a in spec_model.graph.node[0].attribute:
        if a.name == "mode":
            a.s = {b"bicubic": b"cubic", b"bilinear": b"linear"}.get(a.s, a.s)
    spec_model.opset_import[0].version = 20
    (spec,) = ReferenceEvaluator(spec_model).run(None, {"X": x, "grid": grid})
    gap = float(np.abs(spec - y).max())
    if gap > 1e-4:
        write_tensors(folder, "spec.json", [("Y", spec.astype(np.float32))])
        print(f"gridsample {name}: onnxruntime departs from the specification by {gap:.3g}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    rng = np.random.default_rng(17)
    cases = itertools.product(("bilinear", "nearest", "bicubic"),
                              ("zeros", "border", "reflection"), (0, 1))
    for mode, padding, ac in cases:
        x, grid = inputs(rng, [1, 3, 7, 9], [1, 5, 6, 2], 1.4)
        write_case(outdir, f"{mode}_{padding}_{ac}", mode, padding, ac, x, grid)
    x, grid = inputs(rng, [1, 64, 10, 10], [1, 300, 4, 2], 1.1)
    write_case(outdir, "rtdetr_bilinear_zeros_0", "bilinear", "zeros", 0, x, grid)
    print(f"gridsample: 19 cases in {outdir}")


if __name__ == "__main__":
    main()
