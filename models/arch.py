#!/usr/bin/env python3
"""Writes the arch/ benchmark models: YOLOv8n, YOLO11n, YOLOv10n (NMS-free), YOLOv8n-seg and
YOLOv8n-pose at 320x320 with seeded random weights, as Ultralytics exports them (opset 13,
batch 1, static shapes, BatchNorm folded into the convolutions, SiLU as x*sigmoid(x)).

usage: models/arch.py OUTDIR [NAME...]   (NAME: yolov8n_320.onnx, ...; none = all)

Layer shapes follow Ultralytics' yolov8n.yaml, yolo11n.yaml, yolov10n.yaml, yolov8n-seg.yaml and
yolov8n-pose.yaml (scale n); weights follow its initialisation (PyTorch's default uniform
convolutions, fresh BatchNorm, the Detect head's bias priors), so the scores are as tiny and
flat as an untrained Ultralytics model's. Only numpy and onnx are needed: no torch.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 320
STRIDES = (8, 16, 32)
REG_MAX = 16
BN_EPS = 1e-3


class Graph:
    """An ONNX graph under construction; feature maps are (name, channels, height, width)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], {}

    def _name(self, scope, op):
        key = f"{scope}/{op}"
        n = self.count.get(key, 0)
        self.count[key] = n + 1
        return f"{key}_{n}" if n else key

    def model(self, name, inputs, outputs, opset, ir_version, producer):
        """The checked model of this graph; inputs and outputs are ValueInfoProtos."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name=producer)
        model.ir_version = ir_version
        onnx.checker.check_model(model, full_check=True)
        return model

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op, scope, inputs, outputs=1, out=None, **attrs):
        name = self._name(scope, op)
        outs = [out] if out else [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, scope, array):
        # Constant nodes, as torch exports them (tests/reference/ultralytics_seg.py rewrites them).
        return self.op("Constant", scope, [], value=numpy_helper.from_array(np.asarray(array)))

    def uniform(self, shape, fan_in):
        bound = 1 / np.sqrt(fan_in)
        return self.rng.uniform(-bound, bound, shape).astype(np.float32)

    def conv(self, x, c2, scope, k=1, s=1, g=1, act=True):
        """Ultralytics' Conv: Conv2d without bias + BatchNorm (folded) + SiLU."""
        name, c1, h, w = x
        fan_in = c1 // g * k * k
        # A fresh BatchNorm (weight 1, bias 0, mean 0, var 1) scales by 1/sqrt(1+eps).
        weight = self.uniform((c2, c1 // g, k, k), fan_in) / np.float32(np.sqrt(1 + BN_EPS))
        bias = np.zeros(c2, np.float32)
        y = self.raw_conv(name, weight, bias, f"{scope}/conv", k, s, g)
        if act:
            y = self.op("Mul", f"{scope}/act", [y, self.op("Sigmoid", f"{scope}/act", [y])])
        hw = ((h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1)
        return (y, c2, *hw)

    def conv2d(self, x, c2, scope, bias):
        """A plain 1x1 nn.Conv2d; bias None takes PyTorch's default uniform bias."""
        name, c1, h, w = x
        if bias is None:
            bias = self.uniform(c2, c1)
        weight = self.uniform((c2, c1, 1, 1), c1)
        return (self.raw_conv(name, weight, np.asarray(bias, np.float32), scope, 1, 1, 1), c2, h, w)

    def raw_conv(self, x, weight, bias, scope, k, s, g):
        wname = self.init(scope.strip("/").replace("/", ".") + ".weight", weight)
        inputs = [x, wname]
        if bias is not None:
            inputs.append(self.init(scope.strip("/").replace("/", ".") + ".bias", bias))
        return self.op(
            "Conv", scope, inputs, kernel_shape=[k, k], strides=[s, s], group=g,
            pads=[k // 2] * 4, dilations=[1, 1],
        )

    def split(self, x, sizes, scope, axis=1):
        outs = self.op("Split", scope, [x[0], self.const(scope, np.array(sizes, np.int64))],
                       outputs=len(sizes), axis=axis)
        return [(o, c, x[2], x[3]) for o, c in zip(outs, sizes)]

    def concat(self, xs, scope):
        y = self.op("Concat", scope, [x[0] for x in xs], axis=1)
        return (y, sum(x[1] for x in xs), xs[0][2], xs[0][3])

    def add(self, a, b, scope):
        return (self.op("Add", scope, [a[0], b[0]]), *a[1:])

    def upsample(self, x, scope):
        scales = self.const(scope, np.array([1, 1, 2, 2], np.float32))
        y = self.op("Resize", scope, [x[0], "", scales], mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return (y, x[1], x[2] * 2, x[3] * 2)

    def reshape(self, x, shape, scope):
        return self.op("Reshape", scope, [x, self.const(scope, np.array(shape, np.int64))])


# ---- Ultralytics modules (ultralytics/nn/modules/block.py), scale n ----------------------

def bottleneck(g, x, c2, scope, shortcut, k=(3, 3), e=0.5):
    c_ = int(c2 * e)
    y = g.conv(g.conv(x, c_, f"{scope}/cv1", k[0]), c2, f"{scope}/cv2", k[1])
    return g.add(x, y, scope) if shortcut and x[1] == c2 else y


def c2f(g, x, c2, n, scope, shortcut=False, e=0.5, inner=None):
    """C2f; `inner` replaces its Bottleneck (C3k2, C2fCIB)."""
    c = int(c2 * e)
    ys = g.split(g.conv(x, 2 * c, f"{scope}/cv1"), [c, c], scope)
    for i in range(n):
        m = f"{scope}/m.{i}"
        ys.append(inner(ys[-1], m) if inner else bottleneck(g, ys[-1], c, m, shortcut, e=1.0))
    return g.conv(g.concat(ys, scope), c2, f"{scope}/cv2")


def c3k(g, x, c2, scope, n=2, e=0.5):
    c_ = int(c2 * e)
    a = g.conv(x, c_, f"{scope}/cv1")
    for i in range(n):
        a = bottleneck(g, a, c_, f"{scope}/m/m.{i}", True, e=1.0)
    return g.conv(g.concat([a, g.conv(x, c_, f"{scope}/cv2")], scope), c2, f"{scope}/cv3")


def c3k2(g, x, c2, n, scope, use_c3k, e=0.5):
    def inner(y, m):
        return c3k(g, y, y[1], m) if use_c3k else bottleneck(g, y, y[1], m, True)
    return c2f(g, x, c2, n, scope, e=e, inner=inner)


def cib(g, x, scope, large_kernel):
    c = x[1]
    y = g.conv(x, c, f"{scope}/cv1/cv1.0", 3, g=c)
    y = g.conv(y, 2 * c, f"{scope}/cv1/cv1.1")
    # RepVGGDW once fused: one 7x7 depthwise convolution.
    y = g.conv(y, 2 * c, f"{scope}/cv1/cv1.2", 7 if large_kernel else 3, g=2 * c)
    y = g.conv(y, c, f"{scope}/cv1/cv1.3")
    y = g.conv(y, c, f"{scope}/cv1/cv1.4", 3, g=c)
    return g.add(x, y, scope)


def sppf(g, x, c2, scope, k=5):
    ys = [g.conv(x, x[1] // 2, f"{scope}/cv1")]
    for i in range(3):
        y = g.op("MaxPool", f"{scope}/m", [ys[-1][0]], kernel_shape=[k, k], strides=[1, 1],
                 pads=[k // 2] * 4, dilations=[1, 1], ceil_mode=0)
        ys.append((y, *ys[-1][1:]))
    return g.conv(g.concat(ys, scope), c2, f"{scope}/cv2")


def attention(g, x, scope, heads, attn_ratio=0.5):
    _, c, h, w = x
    head_dim = c // heads
    key_dim = int(head_dim * attn_ratio)
    qkv = g.conv(x, c + 2 * key_dim * heads, f"{scope}/qkv", act=False)
    qkv = g.reshape(qkv[0], [1, heads, 2 * key_dim + head_dim, h * w], scope)
    q, k, v = g.op("Split", scope, [qkv, g.const(scope, np.array([key_dim, key_dim, head_dim]))],
                   outputs=3, axis=2)
    q = g.op("Mul", scope, [q, g.const(scope, np.array([key_dim ** -0.5], np.float32))])
    attn = g.op("MatMul", scope, [g.op("Transpose", scope, [q], perm=[0, 1, 3, 2]), k])
    attn = g.op("Softmax", scope, [attn], axis=-1)
    y = g.op("MatMul", scope, [v, g.op("Transpose", scope, [attn], perm=[0, 1, 3, 2])])
    y = g.reshape(y, [1, c, h, w], scope)
    pe = g.conv((g.reshape(v, [1, c, h, w], scope), c, h, w), c, f"{scope}/pe", 3, g=c, act=False)
    return g.conv(g.add((y, c, h, w), pe, scope), c, f"{scope}/proj", act=False)


def psa_block(g, x, scope):
    """The attention + feed-forward pair of C2PSA's PSABlock and of PSA."""
    c = x[1]
    x = g.add(x, attention(g, x, f"{scope}/attn", heads=c // 64), scope)
    ffn = g.conv(g.conv(x, 2 * c, f"{scope}/ffn/ffn.0"), c, f"{scope}/ffn/ffn.1", act=False)
    return g.add(x, ffn, scope)


def psa(g, x, c2, scope, block_scope):
    """C2PSA (block_scope m/m.0) and YOLOv10's PSA (block_scope empty): the same graph."""
    c = x[1] // 2
    a, b = g.split(g.conv(x, 2 * c, f"{scope}/cv1"), [c, c], scope)
    b = psa_block(g, b, f"{scope}{block_scope}")
    return g.conv(g.concat([a, b], scope), c2, f"{scope}/cv2")


def sc_down(g, x, c2, scope):
    return g.conv(g.conv(x, c2, f"{scope}/cv1"), c2, f"{scope}/cv2", 3, 2, g=c2, act=False)


# ---- networks ------------------------------------------------------------------------------

def backbone(g, x, block, down=None):
    """Layers 0-9 of the three yaml files: two stem convs, four stages of (block: layers 2, 4,
    6, 8; downsample: layers 3, 5, 7) and SPPF. Returns P3, P4 and P5 before any attention."""
    down = down or (lambda x, c, s: g.conv(x, c, s, 3, 2))
    x = g.conv(x, 16, "/model.0", 3, 2)
    x = g.conv(x, 32, "/model.1", 3, 2)
    p3 = block(g.conv(block(x, 2), 64, "/model.3", 3, 2), 4)
    p4 = block(down(p3, 128, "/model.5"), 6)
    x = block(down(p4, 256, "/model.7"), 8)
    return p3, p4, sppf(g, x, 256, "/model.9")


def pan(g, p3, p4, p5, first, block, down=None, last=None):
    """Ultralytics' neck: up, concat, block twice; then down, concat, block twice."""
    down = down or (lambda x, c, s: g.conv(x, c, s, 3, 2))
    last = last or block
    m = [f"/model.{first + i}" for i in range(12)]
    n4 = block(g.concat([g.upsample(p5, m[0]), p4], m[1]), 128, m[2])
    n3 = block(g.concat([g.upsample(n4, m[3]), p3], m[4]), 64, m[5])
    o4 = block(g.concat([g.conv(n3, 64, m[6], 3, 2), n4], m[7]), 128, m[8])
    o5 = last(g.concat([down(o4, 128, m[9]), p5], m[10]), 256, m[11])
    return n3, o4, o5


def v8_stage(g, x, layer):
    """C2f stages of yolov8n.yaml and yolov10n.yaml (depth 0.33, width 0.25)."""
    c2, n = {2: (32, 1), 4: (64, 2), 6: (128, 2), 8: (256, 1)}[layer]
    return c2f(g, x, c2, n, f"/model.{layer}", True)


def yolov8_body(g, x):
    """yolov8n.yaml; returns P3, P4, P5 (64, 128, 256 channels)."""
    p3, p4, p5 = backbone(g, x, lambda x, i: v8_stage(g, x, i))
    return pan(g, p3, p4, p5, first=10, block=lambda x, c, s: c2f(g, x, c, 1, s))


def yolo11_body(g, x):
    """yolo11n.yaml: C3k2 blocks (C3k inside from P4 on) and C2PSA attention on P5."""
    c2 = {2: 64, 4: 128, 6: 128, 8: 256}
    p3, p4, p5 = backbone(
        g, x, lambda x, i: c3k2(g, x, c2[i], 1, f"/model.{i}", i >= 6, e=0.25 if i < 6 else 0.5))
    p5 = psa(g, p5, 256, "/model.10", "/m/m.0")
    return pan(g, p3, p4, p5, first=11, block=lambda x, c, s: c3k2(g, x, c, 1, s, False),
               last=lambda x, c, s: c3k2(g, x, c, 1, s, True))


def yolov10_body(g, x):
    """yolov10n.yaml: SCDown downsampling, PSA on P5, a large-kernel C2fCIB on the P5 output."""
    p3, p4, p5 = backbone(g, x, lambda x, i: v8_stage(g, x, i),
                          down=lambda x, c, s: sc_down(g, x, c, s))
    p5 = psa(g, p5, 256, "/model.10", "")
    return pan(g, p3, p4, p5, first=11, block=lambda x, c, s: c2f(g, x, c, 1, s),
               down=lambda x, c, s: sc_down(g, x, c, s),
               last=lambda x, c, s: c2f(g, x, c, 1, s, inner=lambda y, m: cib(g, y, m, True)))


# ---- heads (ultralytics/nn/modules/head.py) ------------------------------------------------

def anchors():
    """Anchor centres in grid units [1,2,A] and their strides [1,A], level by level."""
    points, strides = [], []
    for s in STRIDES:
        n = SIZE // s
        ys, xs = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(n * n, s))
    return (np.concatenate(points, 1)[None].astype(np.float32),
            np.concatenate(strides)[None].astype(np.float32))


def branch(g, feats, scope, width, channels, bias=None, depthwise=False):
    """One of the head's per-level towers (cv2, cv3, cv4): two 3x3 convs and a 1x1 Conv2d,
    flattened to [1, channels, H*W] and concatenated over the levels. bias(stride) gives the
    last Conv2d's bias (Detect's priors); None keeps PyTorch's default."""
    outs = []
    for i, (x, s) in enumerate(zip(feats, STRIDES)):
        t = f"{scope}.{i}"
        m = f"{t}/{t.rsplit('/', 1)[-1]}"
        if depthwise:  # YOLO11 / YOLOv10 class towers: depthwise 3x3 then pointwise 1x1.
            x = g.conv(x, x[1], f"{m}.0/{m.rsplit('/', 1)[-1]}.0.0", 3, g=x[1])
            x = g.conv(x, width, f"{m}.0/{m.rsplit('/', 1)[-1]}.0.1")
            x = g.conv(x, width, f"{m}.1/{m.rsplit('/', 1)[-1]}.1.0", 3, g=width)
            x = g.conv(x, width, f"{m}.1/{m.rsplit('/', 1)[-1]}.1.1")
        else:
            x = g.conv(x, width, f"{m}.0", 3)
            x = g.conv(x, width, f"{m}.1", 3)
        b = None if bias is None else np.full(channels, bias(s), np.float32)
        y = g.conv2d(x, channels, f"{m}.2", b)
        outs.append(g.reshape(y[0], [1, channels, -1], scope))
    return g.op("Concat", scope, outs, axis=-1)


def detect(g, feats, nc, head, depthwise, xywh=True):
    """Detect: box distributions (DFL) and class scores; returns [1, 4+nc, A] and anchors."""
    c2 = max(16, feats[0][1] // 4, 4 * REG_MAX)
    c3 = max(feats[0][1], min(nc, 100))
    box = branch(g, feats, f"{head}/cv2", c2, 4 * REG_MAX, lambda s: 2.0)
    # Ultralytics' prior: 5 objects per 640-px image spread over the classes and cells.
    cls = branch(g, feats, f"{head}/cv3", c3, nc, lambda s: np.log(5 / nc / (640 / s) ** 2),
                 depthwise)
    n = sum((SIZE // s) ** 2 for s in STRIDES)
    d = g.reshape(box, [1, 4, REG_MAX, n], f"{head}/dfl")
    d = g.op("Softmax", f"{head}/dfl", [g.op("Transpose", f"{head}/dfl", [d], perm=[0, 2, 1, 3])],
             axis=1)
    bins = g.init(f"{head[1:]}.dfl.conv.weight",
                  np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1))
    d = g.op("Conv", f"{head}/dfl/conv", [d, bins], kernel_shape=[1, 1])
    d = g.reshape(d, [1, 4, n], f"{head}/dfl")
    lt, rb = g.op("Split", head, [d, g.const(head, np.array([2, 2], np.int64))], outputs=2, axis=1)
    points, strides = anchors()
    p = g.const(head, points)
    x1y1, x2y2 = g.op("Sub", head, [p, lt]), g.op("Add", head, [p, rb])
    if xywh:
        centre = g.op("Div", head, [g.op("Add", head, [x1y1, x2y2]),
                                    g.const(head, np.array([2], np.float32))])
        parts = [centre, g.op("Sub", head, [x2y2, x1y1])]
    else:
        parts = [x1y1, x2y2]
    boxes = g.op("Mul", head, [g.op("Concat", head, parts, axis=1), g.const(head, strides)])
    return [boxes, g.op("Sigmoid", head, [cls])], (points, strides)


def keypoints(g, kpts, grid, head, k=17):
    """Pose.kpts_decode: xy = (raw*2 + anchor - 0.5) * stride, visibility = sigmoid."""
    points, strides = grid
    n = points.shape[-1]
    y = g.reshape(kpts, [1, k, 3, n], head)
    xy = g.op("Slice", head, [y, g.const(head, np.array([0])), g.const(head, np.array([2])),
                              g.const(head, np.array([2]))])
    vis = g.op("Slice", head, [y, g.const(head, np.array([2])), g.const(head, np.array([3])),
                               g.const(head, np.array([2]))])
    xy = g.op("Mul", head, [xy, g.const(head, np.array([2], np.float32))])
    xy = g.op("Add", head, [xy, g.const(head, (points - 0.5)[:, None])])
    xy = g.op("Mul", head, [xy, g.const(head, strides[:, None, None])])
    y = g.op("Concat", head, [xy, g.op("Sigmoid", head, [vis])], axis=2)
    return g.reshape(y, [1, 3 * k, n], head)


def v10_select(g, y, nc, head, out, max_det=300):
    """v10Detect.postprocess: top max_det anchors by best score, then top max_det
    (anchor, class) pairs among them -> [1, max_det, 6] x1,y1,x2,y2,score,class."""
    c = lambda a: g.const(head, np.array(a, np.int64))  # noqa: E731
    y = g.op("Transpose", head, [y], perm=[0, 2, 1])
    boxes, scores = g.op("Split", head, [y, c([4, nc])], outputs=2, axis=-1)
    best = g.op("ReduceMax", head, [scores], axes=[-1], keepdims=0)
    _, anchor = g.op("TopK", head, [best, c([max_det])], outputs=2, axis=1)
    index = g.op("Expand", head, [g.op("Unsqueeze", head, [anchor, c([2])]), c([1, max_det, nc])])
    flat = g.op("Flatten", head, [g.op("GatherElements", head, [scores, index], axis=1)], axis=1)
    score, pair = g.op("TopK", head, [flat, c([max_det])], outputs=2, axis=1)
    cls = g.op("Unsqueeze", head, [g.op("Mod", head, [pair, c([nc])]), c([2])])
    cls = g.op("Cast", head, [cls], to=TensorProto.FLOAT)
    which = g.op("GatherElements", head, [anchor, g.op("Div", head, [pair, c([nc])])], axis=1)
    index = g.op("Expand", head, [g.op("Unsqueeze", head, [which, c([2])]), c([1, max_det, 4])])
    box = g.op("GatherElements", head, [boxes, index], axis=1)
    g.op("Concat", head, [box, g.op("Unsqueeze", head, [score, c([2])]), cls], axis=-1, out=out)


def proto(g, p3, head, c_=64, nm=32):
    """Segment's Proto: 3x3 conv, 2x transposed conv, 3x3 conv, 1x1 conv to nm prototypes."""
    x = g.conv(p3, c_, f"{head}/proto/cv1", 3)
    fan_in = c_ * 2 * 2  # PyTorch computes ConvTranspose2d's fan-in from weight dim 1.
    w = g.init(f"{head[1:]}.proto.upsample.weight", g.uniform((c_, c_, 2, 2), fan_in))
    b = g.init(f"{head[1:]}.proto.upsample.bias", g.uniform(c_, fan_in))
    up = g.op("ConvTranspose", f"{head}/proto/upsample", [x[0], w, b], kernel_shape=[2, 2],
              strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    x = g.conv((up, c_, x[2] * 2, x[3] * 2), c_, f"{head}/proto/cv2", 3)
    return g.conv(x, nm, f"{head}/proto/cv3")


def build(kind):
    """The ONNX model of kind (yolov8n, yolo11n, yolov10n, yolov8n-seg, yolov8n-pose)."""
    g = Graph(seed=sum(map(ord, kind)))
    body = {"yolo11n": yolo11_body, "yolov10n": yolov10_body}.get(kind, yolov8_body)
    feats = body(g, ("images", 3, SIZE, SIZE))
    head = "/model.22" if kind.startswith("yolov8") else "/model.23"
    nc = 1 if kind == "yolov8n-pose" else 80
    parts, grid = detect(g, feats, nc, head, depthwise=not kind.startswith("yolov8"),
                         xywh=kind != "yolov10n")
    n = grid[1].shape[-1]
    outputs = {"output0": [1, 4 + nc, n]}
    if kind == "yolov8n-seg":
        parts.append(branch(g, feats, f"{head}/cv4", max(feats[0][1] // 4, 32), 32))
        protos = proto(g, feats[0], head)
        g.nodes[-1].output[0] = "output1"  # the prototypes' SiLU; nothing else reads it
        outputs = {"output0": [1, 4 + nc + 32, n], "output1": [1, 32, protos[2], protos[3]]}
    if kind == "yolov8n-pose":
        raw = branch(g, feats, f"{head}/cv4", max(feats[0][1] // 4, 51), 51)
        parts.append(keypoints(g, raw, grid, head))
        outputs = {"output0": [1, 4 + nc + 51, n]}
    if kind == "yolov10n":
        v10_select(g, g.op("Concat", head, parts, axis=1), nc, head, out="output0")
        outputs = {"output0": [1, 300, 6]}
    else:
        g.op("Concat", head, parts, axis=1, out="output0")
    return g.model(
        f"{kind}_{SIZE}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        opset=13, ir_version=7, producer="ocelli models/arch.py",
    )


FILES = {
    "yolov8n_320.onnx": "yolov8n",
    "yolo11n_320.onnx": "yolo11n",
    "yolov10n-e2e_320.onnx": "yolov10n",
    "yolov8n-seg_320.onnx": "yolov8n-seg",
    "yolov8n-pose_320.onnx": "yolov8n-pose",
}


def main(files=FILES, make=build):
    """Writes the files named on the command line (none = all), each made by make(files[name])."""
    if len(sys.argv) < 2:
        sys.exit(sys.modules["__main__"].__doc__)
    out = Path(sys.argv[1])
    names = sys.argv[2:] or list(files)
    unknown = [n for n in names if n not in files]
    if unknown:
        sys.exit(f"{Path(sys.argv[0]).name}: unknown model(s) {unknown}; known: {list(files)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        onnx.save(make(files[name]), out / name)


if __name__ == "__main__":
    main()
