#!/usr/bin/env python3
"""Writes the arch/ DETR-family models: a small RT-DETR at 320x320 with seeded random weights,
in the four output layouts its exporters produce (opset 17, batch 1, static shapes,
input `images` [1,3,320,320] RGB 0..1, 300 queries, 80 COCO classes).

usage: models/detr.py OUTDIR [NAME...]   (NAME: rtdetr_320.onnx, ...; none = all)

- rtdetr_320.onnx: HF transformers / RF-DETR / lyuwenyu layout, `logits` [1,300,80] (raw,
  sigmoid-scored) and `pred_boxes` [1,300,4] (cx,cy,w,h in 0..1).
- rtdetr-ul_320.onnx: Ultralytics' export, `output0` [1,300,84]: cx,cy,w,h, 80 sigmoid scores.
- dfine_320.onnx: D-FINE / DEIM deploy export, inputs `images` and `orig_target_sizes` [1,2]
  int64 (w, h), the authors' PostProcessor in the graph; outputs `labels` [1,300] int64,
  `boxes` [1,300,4] (x1,y1,x2,y2 in orig_target_sizes units), `scores` [1,300].
- detr_320.onnx: original DETR (softmax) layout, `logits` [1,300,81] (last = no-object) and
  `pred_boxes`: the same network with an 81-class head (DETR itself has no query selection
  nor deformable attention; only its output layout and scoring are exercised).

The first three share their weights: one network exported three ways.

The weights are random: the detections mean nothing. The architecture follows lyuwenyu's
RT-DETR rtdetr_r18vd (HybridEncoder's AIFI layer, the query selection of RTDETRTransformer's
_get_decoder_input with _generate_anchors, its decoder layers with MSDeformableAttention done
by deformable_attention_core_func with GridSample), at width 64, 4 heads, 2 decoder layers,
4 sampling points per level. Simplified: a plain ReLU conv backbone instead of ResNet-18, no
CCFM (the FPN/PAN fusion) after AIFI, BatchNorm folded away. The weight scales are chosen so
that the class logits spread (about -13..+7) and the boxes vary, which the reference fixtures
need to set thresholds with clear gaps. Only numpy and onnx are needed: no torch.
"""

import numpy as np
from onnx import TensorProto, helper

from arch import Graph, main

SIZE = 320
STRIDES = (8, 16, 32)
D = 64  # hidden width
HEADS = 4
POINTS = 4
QUERIES = 300
CLASSES = 80
DEC_LAYERS = 2
# Seeds picked among a few for varied classes and for score gaps around the fixtures'
# thresholds (tests/reference/detectors.py checks those gaps).
SEED = 4
DETR_SEED = 37
# Output scales of the box heads (deltas of a few tenths) and of the class head (logits about
# -13..+7: tens of queries per photo score above 0.7).
BOX_GAIN = 0.3
SCORE_GAIN = 2.2
SCORE_BIAS = -4.3


def conv(g, x, c2, scope, k=3, s=1, act=True):
    """Conv (He-initialised, bias) + ReLU; feature maps are (name, channels, height, width)."""
    name, c1, h, w = x
    weight = g.rng.normal(0, np.sqrt(2 / (c1 * k * k)), (c2, c1, k, k)).astype(np.float32)
    bias = g.rng.normal(0, 0.1, c2).astype(np.float32)
    y = g.raw_conv(name, weight, bias, scope, k, s, 1)
    if act:
        y = g.op("Relu", scope, [y])
    return (y, c2, (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1)


def linear(g, x, din, dout, scope, gain=1.0, bias=None):
    """nn.Linear as torch exports it: MatMul by the transposed weight, Add the bias. A scope
    seen before reuses its weights (RT-DETR's query_pos_head serves every decoder layer)."""
    w, b = f"{scope}.weight", f"{scope}.bias"
    if w not in {i.name for i in g.inits}:
        g.init(w, g.rng.normal(0, gain / np.sqrt(din), (din, dout)).astype(np.float32))
        g.init(b, np.zeros(dout, np.float32) if bias is None else np.asarray(bias, np.float32))
    return g.op("Add", scope, [g.op("MatMul", scope, [x, w]), b])


def mlp(g, x, dims, scope, gain=1.0):
    """RT-DETR's MLP: Linear layers with ReLU between them."""
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        last = i == len(dims) - 2
        x = linear(g, x, a, b, f"{scope}.layers.{i}", gain if last else np.sqrt(2))
        if not last:
            x = g.op("Relu", scope, [x])
    return x


def layer_norm(g, x, scope):
    return g.op("LayerNormalization", scope, [x, g.init(f"{scope}.weight", np.ones(D, np.float32)),
                                              g.init(f"{scope}.bias", np.zeros(D, np.float32))],
                axis=-1, epsilon=1e-5)


def gelu(g, x, scope):
    # torch's exact GELU as exported before opset 20: 0.5 * x * (1 + erf(x / sqrt(2))).
    e = g.op("Erf", scope, [g.op("Div", scope, [x, g.const(scope, np.float32(np.sqrt(2)))])])
    y = g.op("Mul", scope, [x, g.op("Add", scope, [e, g.const(scope, np.float32(1))])])
    return g.op("Mul", scope, [y, g.const(scope, np.float32(0.5))])


def heads_first(g, x, length, scope, perm):
    return g.op("Transpose", scope, [g.reshape(x, [1, length, HEADS, D // HEADS], scope)],
                perm=perm)


def self_attention(g, qk, v, length, scope):
    """nn.MultiheadAttention(D, HEADS) with query = key = qk and value = v."""
    q = heads_first(g, linear(g, qk, D, D, f"{scope}.q_proj"), length, scope, [0, 2, 1, 3])
    k = heads_first(g, linear(g, qk, D, D, f"{scope}.k_proj"), length, scope, [0, 2, 3, 1])
    v = heads_first(g, linear(g, v, D, D, f"{scope}.v_proj"), length, scope, [0, 2, 1, 3])
    q = g.op("Mul", scope, [q, g.const(scope, np.float32((D // HEADS) ** -0.5))])
    attn = g.op("Softmax", scope, [g.op("MatMul", scope, [q, k])], axis=-1)
    y = g.op("Transpose", scope, [g.op("MatMul", scope, [attn, v])], perm=[0, 2, 1, 3])
    return linear(g, g.reshape(y, [1, length, D], scope), D, D, f"{scope}.out_proj")


def sincos_position(w, h, temperature=10000.0):
    """RT-DETR HybridEncoder.build_2d_sincos_position_embedding (meshgrid 'ij' over (w, h))."""
    grid_w, grid_h = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32),
                                 indexing="ij")
    omega = 1.0 / temperature ** (np.arange(D // 4, dtype=np.float32) / (D // 4))
    out_w = grid_w.reshape(-1, 1) * omega[None]
    out_h = grid_h.reshape(-1, 1) * omega[None]
    pos = np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], 1)
    return pos[None].astype(np.float32)


def aifi(g, x, scope):
    """The AIFI TransformerEncoderLayer (post-norm, GELU) on the stride-32 map."""
    name, c, h, w = x
    src = g.op("Transpose", scope, [g.reshape(name, [1, c, h * w], scope)], perm=[0, 2, 1])
    qk = g.op("Add", scope, [src, g.const(scope, sincos_position(w, h))])
    src = layer_norm(g, g.op("Add", scope, [src, self_attention(g, qk, src, h * w,
                                                                 f"{scope}.self_attn")]),
                     f"{scope}.norm1")
    ffn = linear(g, gelu(g, linear(g, src, D, 4 * D, f"{scope}.linear1", np.sqrt(2)), scope),
                 4 * D, D, f"{scope}.linear2")
    src = layer_norm(g, g.op("Add", scope, [src, ffn]), f"{scope}.norm2")
    y = g.op("Transpose", scope, [src], perm=[0, 2, 1])
    return (g.reshape(y, [1, c, h, w], scope), c, h, w)


def anchors(shapes, grid_size=0.05, eps=1e-2):
    """RTDETRTransformer._generate_anchors: inverse-sigmoid anchors and their valid mask."""
    out = []
    for lvl, (h, w) in enumerate(shapes):
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        xy = (np.stack([gx, gy], -1).reshape(-1, 2) + 0.5) / np.array([w, h])
        out.append(np.concatenate([xy, np.full_like(xy, grid_size * 2.0 ** lvl)], -1))
    a = np.concatenate(out)[None].astype(np.float32)
    valid = ((a > eps) & (a < 1 - eps)).all(-1, keepdims=True)
    logit = np.log(a / (1 - a))
    # The authors put inf where invalid; at 320 every anchor is valid, so nothing is inf here.
    return np.where(valid, logit, np.inf).astype(np.float32), valid.astype(np.float32)


def gather_rows(g, x, index, width, scope):
    """torch.gather(x, 1, index.unsqueeze(-1).repeat(1, 1, width)) as exported."""
    idx = g.op("Unsqueeze", scope, [index, g.const(scope, np.array([-1], np.int64))])
    idx = g.op("Expand", scope, [idx, g.const(scope, np.array([1, QUERIES, width], np.int64))])
    return g.op("GatherElements", scope, [x, idx], axis=1)


def inverse_sigmoid(g, x, scope, eps=1e-5):
    x = g.op("Clip", scope, [x, g.const(scope, np.float32(0)), g.const(scope, np.float32(1))])
    x1 = g.op("Max", scope, [x, g.const(scope, np.float32(eps))])
    x2 = g.op("Max", scope, [g.op("Sub", scope, [g.const(scope, np.float32(1)), x]),
                             g.const(scope, np.float32(eps))])
    return g.op("Log", scope, [g.op("Div", scope, [x1, x2])])


def deformable_attention(g, query, ref, value, shapes, scope):
    """MSDeformableAttention with box reference points, and deformable_attention_core_func."""
    levels, dh = len(shapes), D // HEADS
    n = HEADS * levels * POINTS
    # The authors' grid initialisation of the offset bias: one direction per head, point i at
    # distance i+1; the weights start small.
    theta = np.arange(HEADS) * 2 * np.pi / HEADS
    grid = np.stack([np.cos(theta), np.sin(theta)], -1)
    grid = grid / np.abs(grid).max(-1, keepdims=True)
    grid = np.tile(grid[:, None, None], (1, levels, POINTS, 1)) * np.arange(1, POINTS + 1)[:, None]
    offsets = linear(g, query, D, 2 * n, f"{scope}.sampling_offsets", 0.5, grid.reshape(-1))
    offsets = g.reshape(offsets, [1, QUERIES, HEADS, levels, POINTS, 2], scope)
    weights = linear(g, query, D, n, f"{scope}.attention_weights", 2.0)
    weights = g.op("Softmax", scope, [g.reshape(weights, [1, QUERIES, HEADS, levels * POINTS],
                                                scope)], axis=-1)
    xy, wh = g.op("Split", scope, [ref, g.const(scope, np.array([2, 2], np.int64))], outputs=2,
                  axis=-1)
    xy = g.reshape(xy, [1, QUERIES, 1, 1, 1, 2], scope)
    wh = g.op("Mul", scope, [g.reshape(wh, [1, QUERIES, 1, 1, 1, 2], scope),
                             g.const(scope, np.float32(0.5 / POINTS))])
    loc = g.op("Add", scope, [xy, g.op("Mul", scope, [offsets, wh])])
    grids = g.op("Sub", scope, [g.op("Mul", scope, [loc, g.const(scope, np.float32(2))]),
                                g.const(scope, np.float32(1))])
    grids = g.op("Split", scope, [grids, g.const(scope, np.ones(levels, np.int64))],
                 outputs=levels, axis=3)
    value = linear(g, value, D, D, f"{scope}.value_proj")
    values = g.op("Split", scope, [value, g.const(scope, np.array([h * w for h, w in shapes]))],
                  outputs=levels, axis=1)
    sampled = []
    for (h, w), v, grid_l in zip(shapes, values, grids):
        v = g.reshape(g.op("Transpose", scope, [v], perm=[0, 2, 1]), [HEADS, dh, h, w], scope)
        grid_l = g.op("Transpose", scope, [g.reshape(grid_l, [1, QUERIES, HEADS, POINTS, 2],
                                                     scope)], perm=[0, 2, 1, 3, 4])
        grid_l = g.reshape(grid_l, [HEADS, QUERIES, POINTS, 2], scope)
        s = g.op("GridSample", scope, [v, grid_l], mode="bilinear", padding_mode="zeros",
                 align_corners=0)
        sampled.append(g.op("Unsqueeze", scope, [s, g.const(scope, np.array([-2], np.int64))]))
    stacked = g.reshape(g.op("Concat", scope, sampled, axis=-2),
                        [HEADS, dh, QUERIES, levels * POINTS], scope)
    weights = g.op("Transpose", scope, [weights], perm=[0, 2, 1, 3])
    weights = g.reshape(weights, [HEADS, 1, QUERIES, levels * POINTS], scope)
    out = g.op("ReduceSum", scope, [g.op("Mul", scope, [stacked, weights]),
                                    g.const(scope, np.array([-1], np.int64))], keepdims=0)
    out = g.op("Transpose", scope, [g.reshape(out, [1, D, QUERIES], scope)], perm=[0, 2, 1])
    return linear(g, out, D, D, f"{scope}.output_proj")


def decoder_layer(g, tgt, ref, pos, memory, shapes, scope):
    """RT-DETR TransformerDecoderLayer: self-attention, deformable cross-attention, FFN."""
    qk = g.op("Add", scope, [tgt, pos])
    tgt = layer_norm(g, g.op("Add", scope, [tgt, self_attention(g, qk, tgt, QUERIES,
                                                                 f"{scope}.self_attn")]),
                     f"{scope}.norm1")
    query = g.op("Add", scope, [tgt, pos])
    cross = deformable_attention(g, query, ref, memory, shapes, f"{scope}.cross_attn")
    tgt = layer_norm(g, g.op("Add", scope, [tgt, cross]), f"{scope}.norm2")
    ffn = linear(g, g.op("Relu", scope, [linear(g, tgt, D, 4 * D, f"{scope}.linear1",
                                                np.sqrt(2))]), 4 * D, D, f"{scope}.linear2")
    return layer_norm(g, g.op("Add", scope, [tgt, ffn]), f"{scope}.norm3")


def detector(g, classes):
    """images -> (class logits [1,Q,classes], boxes cx,cy,w,h [1,Q,4])."""
    # Backbone: strides 2, 4, 8, 16, 32.
    x = ("images", 3, SIZE, SIZE)
    feats = []
    for i, c in enumerate((16, 32, 64, 128, 256)):
        x = conv(g, x, c, f"backbone.stage{i}.down", s=2)
        x = conv(g, x, c, f"backbone.stage{i}.conv")
        if i >= 2:
            feats.append(x)
    # HybridEncoder: input projections, AIFI on stride 32.
    feats = [conv(g, f, D, f"encoder.input_proj.{i}", k=1, act=False)
             for i, f in enumerate(feats)]
    feats[-1] = aifi(g, feats[-1], "encoder.encoder.0.layers.0")
    # Decoder input: projections, flattened levels -> memory [1, 2100, D].
    shapes = [(f[2], f[3]) for f in feats]
    memory = [g.op("Transpose", "decoder", [g.reshape(conv(g, f, D, f"decoder.input_proj.{i}",
                                                           k=1, act=False)[0],
                                                      [1, D, f[2] * f[3]], "decoder")],
                   perm=[0, 2, 1]) for i, f in enumerate(feats)]
    memory = g.op("Concat", "decoder", memory, axis=1)
    # Query selection (_get_decoder_input).
    anchor, valid = anchors(shapes)
    scope = "decoder.query_select"
    memory = g.op("Mul", scope, [g.const(scope, valid), memory])
    out_memory = layer_norm(g, linear(g, memory, D, D, "decoder.enc_output.0"),
                            "decoder.enc_output.1")
    enc_logits = linear(g, out_memory, D, classes, "decoder.enc_score_head", 2.0,
                        np.full(classes, -4.6))
    enc_coord = g.op("Add", scope, [mlp(g, out_memory, [D, D, D, 4], "decoder.enc_bbox_head",
                                        BOX_GAIN), g.const(scope, anchor)])
    best = g.op("ReduceMax", scope, [enc_logits], axes=[-1], keepdims=0)
    _, topk = g.op("TopK", scope, [best, g.const(scope, np.array([QUERIES], np.int64))],
                   outputs=2, axis=1)
    ref_unact = gather_rows(g, enc_coord, topk, 4, scope)
    tgt = gather_rows(g, out_memory, topk, D, scope)
    ref = g.op("Sigmoid", scope, [ref_unact])
    # Decoder layers; each box head refines the reference boxes.
    for i in range(DEC_LAYERS):
        scope = f"decoder.decoder.layers.{i}"
        pos = mlp(g, ref, [4, 2 * D, D], "decoder.query_pos_head")
        tgt = decoder_layer(g, tgt, ref, pos, memory, shapes, scope)
        delta = mlp(g, tgt, [D, D, D, 4], f"decoder.dec_bbox_head.{i}", BOX_GAIN)
        ref = g.op("Sigmoid", scope, [g.op("Add", scope, [delta, inverse_sigmoid(g, ref, scope)])])
    bias = np.full(classes, SCORE_BIAS)
    if classes > CLASSES:
        bias[-1] = 2.0  # DETR's no-object class
    logits = linear(g, tgt, D, classes, f"decoder.dec_score_head.{DEC_LAYERS - 1}", SCORE_GAIN,
                    bias)
    return logits, ref


def postprocessor(g, logits, boxes):
    """D-FINE's PostProcessor (use_focal_loss, deploy_mode): labels, boxes, scores."""
    s = "postprocessor"
    cx, cy, w, h = g.op("Split", s, [boxes, g.const(s, np.ones(4, np.int64))], outputs=4, axis=-1)
    half_w = g.op("Mul", s, [w, g.const(s, np.float32(0.5))])
    half_h = g.op("Mul", s, [h, g.const(s, np.float32(0.5))])
    xyxy = g.op("Concat", s, [g.op("Sub", s, [cx, half_w]), g.op("Sub", s, [cy, half_h]),
                              g.op("Add", s, [cx, half_w]), g.op("Add", s, [cy, half_h])], axis=-1)
    size = g.op("Tile", s, [g.op("Cast", s, ["orig_target_sizes"], to=TensorProto.FLOAT),
                            g.const(s, np.array([1, 2], np.int64))])
    xyxy = g.op("Mul", s, [xyxy, g.op("Unsqueeze", s, [size, g.const(s, np.array([1]))])])
    scores = g.reshape(g.op("Sigmoid", s, [logits]), [1, QUERIES * CLASSES], s)
    top, index = g.op("TopK", s, [scores, g.const(s, np.array([QUERIES], np.int64))], outputs=2,
                      axis=-1)
    nc = g.const(s, np.array(CLASSES, np.int64))
    query = g.op("Div", s, [index, nc])
    g.op("Sub", s, [index, g.op("Mul", s, [query, nc])], out="labels")
    g.op("Identity", s, [gather_rows(g, xyxy, query, 4, s)], out="boxes")
    g.op("Identity", s, [top], out="scores")


def build(layout):
    """The ONNX model of layout (rtdetr, rtdetr-ul, dfine, detr)."""
    classes = CLASSES + 1 if layout == "detr" else CLASSES
    g = Graph(seed=DETR_SEED if layout == "detr" else SEED)
    logits, boxes = detector(g, classes)
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])]
    f32 = TensorProto.FLOAT
    if layout in ("rtdetr", "detr"):
        g.op("Identity", "output", [logits], out="logits")
        g.op("Identity", "output", [boxes], out="pred_boxes")
        outputs = [("logits", f32, [1, QUERIES, classes]), ("pred_boxes", f32, [1, QUERIES, 4])]
    elif layout == "rtdetr-ul":
        g.op("Concat", "output", [boxes, g.op("Sigmoid", "output", [logits])], axis=-1,
             out="output0")
        outputs = [("output0", f32, [1, QUERIES, 4 + CLASSES])]
    else:
        inputs.append(helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2]))
        postprocessor(g, logits, boxes)
        outputs = [("labels", TensorProto.INT64, [1, QUERIES]), ("boxes", f32, [1, QUERIES, 4]),
                   ("scores", f32, [1, QUERIES])]
    return g.model(f"{layout}_{SIZE}", inputs, [helper.make_tensor_value_info(*o) for o in outputs],
                   opset=17, ir_version=8, producer="ocelli models/detr.py")


FILES = {
    "rtdetr_320.onnx": "rtdetr",
    "rtdetr-ul_320.onnx": "rtdetr-ul",
    "dfine_320.onnx": "dfine",
    "detr_320.onnx": "detr",
}


if __name__ == "__main__":
    main(FILES, build)
