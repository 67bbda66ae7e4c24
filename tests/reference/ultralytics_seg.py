#!/usr/bin/env python3
"""Reference detections, masks and keypoints for the Ultralytics decoders: yolov8 (YOLOv8,
YOLO11), yolov10, yolov8-seg and yolov8-pose.

Run from the repository root (needs numpy, onnx, onnxruntime, opencv-python-headless):

    python3 tests/reference/ultralytics_seg.py target/fixtures/seg
    cargo test -p ocelli --test segmentation

The postprocessing is Ultralytics 8.4.190's, ported to numpy line by line: torch is not
installed here because the torch wheel on the Python package index is the CUDA build (539 MB,
and it does not import without some 3 GB of nvidia-* packages). Ported, with the Ultralytics
function each comes from:

- `utils/nms.py` non_max_suppression (best class only, class offsets of 7680 px,
  torchvision's NMS: stable descending score order);
- `utils/ops.py` process_mask_native (the `retina_masks=True` path, which draws masks at the
  source image's resolution), scale_masks, crop_mask, scale_boxes, scale_coords;
- `models/yolo/segment/predict.py` construct_result (detections with empty masks dropped),
  `models/yolo/pose/predict.py` construct_result;
- torch's `F.interpolate(mode="bilinear", align_corners=False)` (upsample_bilinear2d:
  half-pixel centres, source index clamped at 0, right/bottom neighbour clamped).

Synthetic cases (OUTDIR/<case>/): raw outputs built here with known instances (overlapping
masks, a box over the image border, an instance whose mask is empty, one NMS suppresses,
keypoints outside the image; for detection, one NMS suppresses, one of another class in the
same place, an anchor scoring two classes, and YOLOv10's NMS-free overlapping pair), a small
ONNX model (model.onnx) that outputs them whatever its input, and expected.json: decode settings, source size, and per detection class, score, box
(model-input and source pixels), mask as COCO uncompressed RLE in source pixels
(column-major, clear first), keypoints [x, y, visibility] in source pixels.

Real models (OUTDIR/arch_seg, OUTDIR/arch_pose): models/cache/arch/yolov8n-{seg,pose}_320.onnx
on astronaut.png (Ultralytics LetterBox), the input tensor and onnxruntime's raw outputs, for
comparing tract's outputs. Their weights are random, so their detections are not compared.
OUTDIR/arch_seg_640 holds the seg model rewritten for a 640 input (model.onnx) and the same.

Tensors are little-endian float32, row-major, listed in input.json / outputs.json.
"""

import json
import math
import os
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detectors import MODELS, nms_torchvision, pre_ultralytics, write_tensors  # noqa: E402

INPUT = (320, 320)
STRIDES = (8, 16, 32)
ANCHORS = sum((INPUT[0] // s) * (INPUT[1] // s) for s in STRIDES)  # 2100
DECODE = {"score_threshold": 0.25, "nms_iou": 0.7, "class_agnostic": False,
          "max_detections": 100}


# ---------------------------------------------------------------------------------------
# Ultralytics 8.4.190, in numpy.


def interpolate_bilinear(x, size=None, scale_factor=None):
    """torch.nn.functional.interpolate(x, size | scale_factor, mode="bilinear"), NCHW."""
    h, w = x.shape[-2:]
    if size is not None:
        oh, ow = size
        scale_h, scale_w = h / oh, w / ow
    else:
        oh, ow = int(h * scale_factor), int(w * scale_factor)
        scale_h = scale_w = 1.0 / scale_factor

    def axis(n_out, n_in, scale):
        src = np.maximum(np.float32(scale) * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0)
        i0 = src.astype(np.int64)
        i1 = i0 + (i0 < n_in - 1)
        l1 = (src - i0).astype(np.float32)
        return i0, i1, np.float32(1) - l1, l1

    y0, y1, ly0, ly1 = axis(oh, h, scale_h)
    x0, x1, lx0, lx1 = axis(ow, w, scale_w)
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    row0 = top[..., x0] * lx0 + top[..., x1] * lx1
    row1 = bottom[..., x0] * lx0 + bottom[..., x1] * lx1
    return (row0 * ly0[:, None] + row1 * ly1[:, None]).astype(np.float32)


def xywh2xyxy(x):
    y = np.empty_like(x)
    y[:, 0] = x[:, 0] - x[:, 2] / 2
    y[:, 1] = x[:, 1] - x[:, 3] / 2
    y[:, 2] = x[:, 0] + x[:, 2] / 2
    y[:, 3] = x[:, 1] + x[:, 3] / 2
    return y


def non_max_suppression(prediction, conf_thres, iou_thres, agnostic, max_det, nc):
    """One image: rows (x1, y1, x2, y2, conf, cls, extra...) and each row's anchor."""
    extra = prediction.shape[0] - nc - 4
    x = prediction.T
    anchors = np.arange(len(x))
    keep = x[:, 4:4 + nc].max(1) > conf_thres
    x, anchors = x[keep], anchors[keep]
    box, cls, mask = xywh2xyxy(x[:, :4]), x[:, 4:4 + nc], x[:, 4 + nc:]
    conf, j = cls.max(1, keepdims=True), cls.argmax(1)[:, None]
    x = np.concatenate((box, conf, j.astype(np.float32), mask), 1)
    keep = conf[:, 0] > conf_thres
    x, anchors = x[keep], anchors[keep]
    assert extra == mask.shape[1]
    if not len(x):
        return x, anchors
    order = np.argsort(-x[:, 4], kind="stable")[:30000]
    x, anchors = x[order], anchors[order]
    c = x[:, 5:6] * (0 if agnostic else 7680)
    i = nms_torchvision(x[:, :4] + c, x[:, 4], iou_thres)[:max_det]
    return x[i], anchors[i]


def crop_mask(masks, boxes):
    _, h, w = masks.shape
    x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))
    r = np.arange(w, dtype=np.float32)[None, None, :]
    c = np.arange(h, dtype=np.float32)[None, :, None]
    return masks * ((r >= x1) * (r < x2)) * ((c >= y1) * (c < y2))


def scale_masks(masks, shape):
    im1_h, im1_w = masks.shape[2:]
    im0_h, im0_w = shape
    if (im1_h, im1_w) == (im0_h, im0_w):
        return masks
    gain = min(im1_h / im0_h, im1_w / im0_w)
    pad_w = (im1_w - max(round(im0_w * gain), 1)) / 2
    pad_h = (im1_h - max(round(im0_h * gain), 1)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + max(round(im0_h * gain), 1), left + max(round(im0_w * gain), 1)
    return interpolate_bilinear(masks[..., top:bottom, left:right], size=shape)


def process_mask_native(protos, masks_in, bboxes, shape):
    c, mh, mw = protos.shape
    h, w = shape
    if masks_in.shape[0] == 0:
        return np.zeros((0, h, w), np.uint8)
    coeffs = masks_in.astype(np.float32) @ protos.reshape(c, -1)
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    m = coeffs.reshape(1, -1, mh, mw)
    if f > 1:
        m = interpolate_bilinear(m, scale_factor=f)
    masks = (scale_masks(m, shape)[0] > 0).astype(np.uint8)
    return crop_mask(masks, bboxes)


def letterbox_gain_pad(img1_shape, img0_shape):
    """scale_boxes / scale_coords without ratio_pad: gains and integer padding."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    new_h, new_w = (max(round(x * gain), 1) for x in img0_shape[:2])
    gain_y, gain_x = new_h / img0_shape[0], new_w / img0_shape[1]
    pad_x = round((img1_shape[1] - new_w) / 2 - 0.1)
    pad_y = round((img1_shape[0] - new_h) / 2 - 0.1)
    return gain_x, gain_y, pad_x, pad_y


def scale_boxes(img1_shape, boxes, img0_shape):
    gx, gy, px, py = letterbox_gain_pad(img1_shape, img0_shape)
    b = boxes.copy()
    b[:, [0, 2]] = ((b[:, [0, 2]] - px) / gx).clip(0, img0_shape[1])
    b[:, [1, 3]] = ((b[:, [1, 3]] - py) / gy).clip(0, img0_shape[0])
    return b


def scale_coords(img1_shape, coords, img0_shape):
    gx, gy, px, py = letterbox_gain_pad(img1_shape, img0_shape)
    c = coords.copy()
    c[..., 0] = ((c[..., 0] - px) / gx).clip(0, img0_shape[1])
    c[..., 1] = ((c[..., 1] - py) / gy).clip(0, img0_shape[0])
    return c


def segment(outs, source_hw, nc):
    """SegmentationPredictor with retina_masks=True: detections and masks."""
    pred, proto = outs[0][0], outs[1][0]
    x, _ = non_max_suppression(pred, DECODE["score_threshold"], DECODE["nms_iou"],
                               DECODE["class_agnostic"], DECODE["max_detections"], nc)
    boxes = scale_boxes(INPUT[::-1], x[:, :4], source_hw)
    masks = process_mask_native(proto, x[:, 6:], boxes, source_hw)
    keep = masks.max((1, 2)) > 0
    return x[keep], boxes[keep], masks[keep]


def pose(outs, source_hw, nc):
    """PosePredictor: detections and keypoints."""
    x, _ = non_max_suppression(outs[0][0], DECODE["score_threshold"], DECODE["nms_iou"],
                               DECODE["class_agnostic"], DECODE["max_detections"], nc)
    boxes = scale_boxes(INPUT[::-1], x[:, :4], source_hw)
    kpts = scale_coords(INPUT[::-1], x[:, 6:].reshape(len(x), -1, 3), source_hw)
    return x, boxes, kpts


# ---------------------------------------------------------------------------------------
# Synthetic outputs.


def rle(mask):
    """COCO uncompressed RLE of an HxW mask: column-major runs, clear first."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def prototypes(rng, m, h, w):
    """A constant plane, then smooth random fields (sums of low-frequency waves)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [np.ones((h, w), np.float32)]
    for _ in range(m - 1):
        p = np.zeros((h, w), np.float32)
        for _ in range(3):
            fx, fy, phase = rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(0, 2 * np.pi)
            p += np.cos(2 * np.pi * (fx * xx / w + fy * yy / h) + phase)
        planes.append(p / 3)
    return np.stack(planes)[None].astype(np.float32)


def head(rows, instances):
    """[1, rows, ANCHORS] with each instance (anchor, values by row) written in."""
    out = np.zeros((1, rows, ANCHORS), np.float32)
    for anchor, column in instances:
        out[0, :, anchor] = column
    return out


def seg_outputs(rng, nc=3, m=32):
    instances = []

    def add(anchor, box, cls, score, coef):
        col = np.zeros(4 + nc + m, np.float32)
        col[:4] = box
        col[4 + cls] = score
        col[4 + nc:] = coef
        instances.append((anchor, col))

    def shape(bias):
        coef = rng.normal(0, 0.6, m).astype(np.float32)
        coef[0] = bias
        return coef

    add(300, (160, 150, 120, 140), 0, 0.92, shape(0.6))     # large, centre
    add(900, (205, 175, 110, 100), 1, 0.85, shape(0.3))     # overlaps the first
    add(1200, (20, 60, 70, 90), 2, 0.74, shape(0.8))        # over the left and top borders
    add(1500, (300, 260, 60, 60), 0, 0.66, shape(0.5))      # over the right and bottom
    add(1700, (100, 230, 50, 40), 1, 0.58, np.r_[-40.0, np.zeros(m - 1)])  # empty mask
    add(310, (162, 151, 118, 138), 0, 0.90, shape(0.6))     # suppressed by the first
    add(2000, (60, 200, 30, 30), 2, 0.20, shape(0.6))       # below the threshold
    boxes = head(4 + nc + m, instances)
    protos = prototypes(rng, m, INPUT[1] // 4, INPUT[0] // 4)
    return [("output0", boxes), ("output1", protos)], nc


def pose_outputs(rng, k=17):
    instances = []

    def add(anchor, box, score):
        col = np.zeros(5 + 3 * k, np.float32)
        col[:4], col[4] = box, score
        cx, cy, w, h = box
        pts = np.stack([rng.uniform(cx - 0.7 * w, cx + 0.7 * w, k),
                        rng.uniform(cy - 0.7 * h, cy + 0.7 * h, k),
                        rng.uniform(0, 1, k)], 1)
        col[5:] = pts.reshape(-1)
        instances.append((anchor, col))

    add(400, (150, 160, 80, 200), 0.9)
    add(800, (40, 60, 90, 120), 0.8)     # keypoints over the border are clipped
    add(1300, (290, 250, 70, 90), 0.7)
    add(410, (152, 158, 82, 196), 0.85)  # suppressed by the first
    add(1900, (200, 100, 40, 40), 0.1)   # below the threshold
    return [("output0", head(5 + 3 * k, instances))], 1


def det_outputs(nc=80):
    """YOLOv8 / YOLO11 detection head [1, 4+nc, A]: cx, cy, w, h, class scores."""
    instances = []

    def add(anchor, box, scores):
        col = np.zeros(4 + nc, np.float32)
        col[:4] = box
        for cls, score in scores.items():
            col[4 + cls] = score
        instances.append((anchor, col))

    add(300, (160, 150, 120, 140), {0: 0.92})           # a person, centre
    add(310, (162, 151, 118, 138), {0: 0.90})           # suppressed by the first
    add(320, (161, 150, 119, 139), {16: 0.88})          # same place, another class: kept
    add(1200, (20, 60, 70, 90), {2: 0.74})              # over the left and top borders
    add(1500, (300, 260, 60, 60), {3: 0.40, 7: 0.66})   # best class only
    add(2000, (60, 200, 30, 30), {5: 0.20})             # below the threshold
    return [("output0", head(4 + nc, instances))], nc


def v10_outputs(k=300):
    """YOLOv10's end-to-end output [1, k, 6]: x1, y1, x2, y2, score, class, by score."""
    rows = np.zeros((1, k, 6), np.float32)
    rows[0, :6] = [
        (100, 80, 220, 220, 0.92, 0),      # a person
        (102, 82, 221, 219, 0.90, 0),      # overlaps it: NMS-free, so kept
        (-15, 15, 55, 105, 0.74, 2),       # over the left border
        (270, 230, 330, 290, 0.66, 7),     # over the right and bottom
        (45, 185, 75, 215, 0.20, 5),       # below the threshold
        (10, 10, 20, 20, 0.05, 9),
    ]
    rows[0, 6:, 4] = 0.01  # the rest of the top k: low scores
    return [("output0", rows)], 80


def constant_model(outputs, path):
    """An ONNX model whose outputs are `outputs` whatever its image input."""
    w, h = INPUT
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    values = []
    for name, t in outputs:
        inits.append(numpy_helper.from_array(t, f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(t.shape)))
    graph = helper.make_graph(nodes, "constant", [image], values, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"images": np.zeros((1, 3, h, w), np.float32)})
    assert all(np.array_equal(g, t) for g, (_, t) in zip(got, outputs))


def write_case(outdir, case, family, outputs, nc, source_wh, dets):
    folder = os.path.join(outdir, case)
    os.makedirs(folder, exist_ok=True)
    write_tensors(folder, "outputs.json", outputs)
    constant_model(outputs, os.path.join(folder, "model.onnx"))
    expected = {"family": family, "classes": nc, "input_wh": list(INPUT),
                "source_wh": list(source_wh), "decode": DECODE, "model": "model.onnx",
                "detections": dets}
    with open(os.path.join(folder, "expected.json"), "w") as fh:
        json.dump(expected, fh)
    print(f"{case:22} {len(dets)} detections")


def seg_case(outdir, case, source_wh, rng):
    outputs, nc = seg_outputs(rng)
    outs = [t for _, t in outputs]
    x, boxes, masks = segment(outs, source_wh[::-1], nc)
    dets = [{"class_id": int(r[5]), "score": float(r[4]), "box_model": r[:4].tolist(),
             "box_source": b.tolist(), "mask": rle(mk), "area": int(mk.sum())}
            for r, b, mk in zip(x, boxes, masks)]
    assert len(dets) == 4, f"{case}: {len(dets)} instances, the outputs are built for 4"
    write_case(outdir, case, "yolov8-seg", outputs, nc, source_wh, dets)


def pose_case(outdir, case, source_wh, rng):
    outputs, nc = pose_outputs(rng)
    x, boxes, kpts = pose([outputs[0][1]], source_wh[::-1], nc)
    dets = [{"class_id": int(r[5]), "score": float(r[4]), "box_model": r[:4].tolist(),
             "box_source": b.tolist(), "keypoints": k.tolist()}
            for r, b, k in zip(x, boxes, kpts)]
    assert len(dets) == 3, f"{case}: {len(dets)} people, the outputs are built for 3"
    write_case(outdir, case, "yolov8-pose", outputs, nc, source_wh, dets)


def det_case(outdir, case, source_wh, end_to_end):
    if end_to_end:  # non_max_suppression's end-to-end path: rows above conf, no NMS.
        outputs, nc = v10_outputs()
        x = outputs[0][1][0]
        x = x[x[:, 4] > DECODE["score_threshold"]][: DECODE["max_detections"]]
    else:
        outputs, nc = det_outputs()
        x, _ = non_max_suppression(outputs[0][1][0], DECODE["score_threshold"], DECODE["nms_iou"],
                                   DECODE["class_agnostic"], DECODE["max_detections"], nc)
    boxes = scale_boxes(INPUT[::-1], x[:, :4], source_wh[::-1])
    dets = [{"class_id": int(r[5]), "score": float(r[4]), "box_model": r[:4].tolist(),
             "box_source": b.tolist()} for r, b in zip(x, boxes)]
    assert len(dets) == 4, f"{case}: {len(dets)} detections, the outputs are built for 4"
    write_case(outdir, case, "yolov10" if end_to_end else "yolov8", outputs, nc, source_wh, dets)


def anchor_grid(size):
    """Ultralytics' make_anchors for a square input: cell centres and strides."""
    points, strides = [], []
    for s in STRIDES:
        n = size // s
        y, x = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        points.append(np.stack([x.ravel(), y.ravel()]))
        strides.append(np.full(n * n, s))
    return np.concatenate(points, 1)[None].astype(np.float32), \
        np.concatenate(strides)[None].astype(np.float32)


def resized(model, size, path):
    """The exported YOLOv8 `model` (a 320 input) for a `size` x `size` input.

    The network is convolutional; only the head's constants depend on the input: the anchor
    points and strides the boxes are decoded with, and the anchor count in the reshapes of
    the box distribution. Each is checked to be what Ultralytics exports for 320 before it is
    replaced, so a model with other constants is refused rather than silently broken.
    """
    m = onnx.load(os.path.join(MODELS, model))
    old, new = ANCHORS, sum((size // s) ** 2 for s in STRIDES)
    (points, strides), (new_points, new_strides) = anchor_grid(INPUT[0]), anchor_grid(size)
    replaced = []
    for node in m.graph.node:
        if node.op_type != "Constant":
            continue
        t = numpy_helper.to_array(node.attribute[0].t)
        if t.shape == points.shape:
            assert np.array_equal(t, points), f"{model}: {node.output[0]} is not the anchor grid"
            t = new_points
        elif t.shape == strides.shape:
            assert np.array_equal(t, strides), f"{model}: {node.output[0]} is not the strides"
            t = new_strides
        elif t.dtype == np.int64 and t.ndim == 1 and old in t:
            t = np.where(t == old, new, t)
        else:
            continue
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(t, node.attribute[0].t.name))
        replaced.append(node.output[0])
    assert len(replaced) >= 4, f"{model}: only {replaced} depend on the input size"
    del m.graph.value_info[:]
    for v in list(m.graph.input) + list(m.graph.output):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value in (INPUT[0], INPUT[0] // 4, old):
                d.dim_value = {INPUT[0]: size, INPUT[0] // 4: size // 4, old: new}[d.dim_value]
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def arch_case(outdir, case, model, size=INPUT[0]):
    folder = os.path.join(outdir, case)
    os.makedirs(folder, exist_ok=True)
    expected = {"model": model}
    path = os.path.join(MODELS, model)
    if size != INPUT[0]:
        path = resized(model, size, os.path.join(folder, "model.onnx"))
        expected["file"] = "model.onnx"
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    img = cv2.imread(os.path.join(MODELS, "images", "astronaut.png"))
    if img is None:
        sys.exit(f"cannot read astronaut.png from {MODELS}/images: run models/fetch.sh")
    x, _ = pre_ultralytics(img, (size, size))
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    write_tensors(folder, "input.json", [(sess.get_inputs()[0].name, x)])
    write_tensors(folder, "outputs.json", [(o.name, t) for o, t in zip(sess.get_outputs(), outs)])
    with open(os.path.join(folder, "expected.json"), "w") as fh:
        json.dump(expected, fh)
    print(f"{case:22} {[list(t.shape) for t in outs]}")


def check_interpolation():
    # OpenCV's INTER_LINEAR resize samples as torch's bilinear does (half-pixel centres,
    # edges replicated): an independent check of the port.
    x = np.random.default_rng(3).normal(size=(1, 1, 20, 30)).astype(np.float32)
    for size in [(60, 90), (80, 90), (45, 70)]:
        ours = interpolate_bilinear(x, size=size)[0, 0]
        theirs = cv2.resize(x[0, 0], size[::-1], interpolation=cv2.INTER_LINEAR)
        assert np.abs(ours - theirs).max() < 1e-5, size


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    check_interpolation()
    # Sources whose letterbox padding is whole prototype cells (landscape, portrait, the
    # input size itself), and one where it is not (55 input pixels a side), so Ultralytics
    # first upsamples the prototypes 4x.
    for source_wh in [(640, 480), (300, 400), (320, 320), (640, 420)]:
        name = f"{source_wh[0]}x{source_wh[1]}"
        seg_case(outdir, f"seg_{name}", source_wh, np.random.default_rng(7))
        pose_case(outdir, f"pose_{name}", source_wh, np.random.default_rng(11))
        det_case(outdir, f"det_{name}", source_wh, end_to_end=False)
        det_case(outdir, f"v10_{name}", source_wh, end_to_end=True)
    arch_case(outdir, "arch_seg", "arch/yolov8n-seg_320.onnx")
    arch_case(outdir, "arch_pose", "arch/yolov8n-pose_320.onnx")
    # The same architecture at 640 (benches/seg.rs times its inference).
    arch_case(outdir, "arch_seg_640", "arch/yolov8n-seg_320.onnx", size=640)


if __name__ == "__main__":
    main()
