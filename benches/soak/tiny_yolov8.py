"""A tiny YOLOv8-shaped detector: real convolutions over a 64x64 input, one [1, 4 + 3, 84]
output, so a soak run exercises preprocessing, tract and the decoder at thousands of fps."""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
CLASSES = 3


def model(seed=0):
    rng = np.random.default_rng(seed)
    rows = 4 + CLASSES
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    nodes, inits, levels = [], [], []
    for stride in (8, 16, 32):
        cells = (SIZE // stride) ** 2
        w = rng.normal(0, 1, (rows, 3, 1, 1)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{stride}"),
            numpy_helper.from_array(np.array([1, rows, cells], np.int64), f"shape{stride}"),
        ]
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"pool{stride}"],
                             kernel_shape=[stride, stride], strides=[stride, stride]),
            helper.make_node("Conv", [f"pool{stride}", f"w{stride}"], [f"conv{stride}"]),
            helper.make_node("Reshape", [f"conv{stride}", f"shape{stride}"], [f"level{stride}"]),
        ]
        levels.append(f"level{stride}")
    # Boxes in input pixels, scores in [0, 1], as Ultralytics exports them.
    scale = np.array([SIZE] * 4 + [1] * CLASSES, np.float32).reshape(1, rows, 1)
    inits.append(numpy_helper.from_array(scale, "scale"))
    nodes += [
        helper.make_node("Concat", levels, ["all"], axis=2),
        helper.make_node("Sigmoid", ["all"], ["squashed"]),
        helper.make_node("Mul", ["squashed", "scale"], ["output0"]),
    ]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, rows, 84])
    graph = helper.make_graph(nodes, "tiny_yolov8", [image], [out], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


if __name__ == "__main__":
    onnx.save(model(), sys.argv[1])
