#!/usr/bin/env python3
"""Reference results for the second-stage classifiers (runtime/src/detect/classify.rs).

    python3 tests/reference/classify.py target/fixtures/classify

ocr_cls/: PP-OCR's text orientation classifier (ch_ppocr_mobile_v2.0_cls_infer.onnx, from
RapidOCR 1.4.4's wheel) on crops of page.png's seven text lines, upright and on the photo
turned by 180 degrees. Each crop is cut as the runtime cuts it (the box grown by the margin,
floor/ceil to whole pixels, clipped), then fed through RapidOCR's own
`TextClassifier.resize_norm_img` (BGR, height 48, width ceil(48 * w / h) up to 192, the rest
zero after (x/255 - 0.5)/0.5) and onnxruntime; cases.json holds each crop's two
probabilities (labels "0" and "180").

embed/: an embedding model (random weights, numpy + onnx: two stride-2 convolutions, global
average pooling, a 32-wide linear layer) with a gallery of embeddings of the reference photos
(gallery.json), and queries on other crops of them: cases.json holds each query's best
cosine similarity per gallery label. Preprocessing: stretch to 64x64 (cv2.INTER_LINEAR), RGB,
/255.
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models", "cache")
# page.png's text lines as PP-OCRv4 det finds them (tests/reference/dbnet.py), source pixels.
LINES = [[4, 11, 294, 35], [0, 61, 381, 90], [0, 78, 379, 108], [2, 45, 380, 70],
         [0, 92, 384, 129], [2, 112, 174, 144], [16, 165, 242, 191]]
MARGIN = 0.05


def crop_rect(box, margin, w, h):
    """The runtime's crop: the box grown by margin x its size on each side, floor/ceil to whole
    pixels, clipped to the image (in float32, as the runtime computes it)."""
    x1, y1, x2, y2 = (np.float32(v) for v in box)
    m = np.float32(margin)
    mx, my = m * (x2 - x1), m * (y2 - y1)
    x0 = min(max(int(math.floor(x1 - mx)), 0), w)
    y0 = min(max(int(math.floor(y1 - my)), 0), h)
    xe = max(min(max(int(math.ceil(x2 + mx)), 0), w), x0)
    ye = max(min(max(int(math.ceil(y2 + my)), 0), h), y0)
    return x0, y0, xe, ye


def cls_resize_norm_img(img, shape=(3, 48, 192)):
    # rapidocr_onnxruntime 1.4.4 ch_ppocr_cls/text_cls.py TextClassifier.resize_norm_img.
    img_c, img_h, img_w = shape
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_w if math.ceil(img_h * ratio) > img_w else int(math.ceil(img_h * ratio))
    resized = cv2.resize(img, (resized_w, img_h)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padding = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    padding[:, :, :resized_w] = resized
    return padding


def session(model_bytes):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def ocr_cls(outdir):
    folder = os.path.join(outdir, "ocr_cls")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(MODELS, "ch_ppocr_mobile_v2.0_cls_infer.onnx"), "rb") as f:
        sess = session(f.read())
    page = cv2.imread(os.path.join(MODELS, "images", "page.png"))  # BGR, as RapidOCR reads
    h, w = page.shape[:2]
    cases = []
    for turned in (False, True):
        img = cv2.rotate(page, cv2.ROTATE_180) if turned else page
        for x1, y1, x2, y2 in LINES:
            box = [w - x2, h - y2, w - x1, h - y1] if turned else [x1, y1, x2, y2]
            a, b, c, d = crop_rect(box, MARGIN, w, h)
            x = cls_resize_norm_img(img[b:d, a:c])[None]
            (probs,) = sess.run(None, {"x": x})
            cases.append({"turned": turned, "box": box, "probs": probs[0].tolist()})
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump({"margin": MARGIN, "labels": ["0", "180"], "cases": cases}, f, indent=1)
    right = sum(1 for c in cases if int(np.argmax(c["probs"])) == int(c["turned"]))
    print(f"ocr_cls: {len(cases)} crops, {right} oriented right")


def embed_model(rng):
    def conv(name, cin, cout):
        wt = rng.normal(0, math.sqrt(2 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
        bias = rng.normal(0, 0.1, cout).astype(np.float32)
        return [numpy_helper.from_array(wt, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]
    inits = conv("c1", 3, 8) + conv("c2", 8, 16)
    inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (16, 32)).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "fc.b"))
    nodes = [
        helper.make_node("Conv", ["images", "c1.w", "c1.b"], ["c1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "embed", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 32])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def embed(outdir):
    folder = os.path.join(outdir, "embed")
    os.makedirs(folder, exist_ok=True)
    m = embed_model(np.random.default_rng(5))
    onnx.save(m, os.path.join(folder, "model.onnx"))
    sess = session(m.SerializeToString())

    def embedding(img, box):
        h, w = img.shape[:2]
        a, b, c, d = crop_rect(box, 0.0, w, h)
        x = cv2.resize(img[b:d, a:c], (64, 64), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0, np.float32)
        return sess.run(None, {"images": x})[0][0]

    photos = {name: cv2.imread(os.path.join(MODELS, "images", f"{name}.png"))
              for name in ("astronaut", "chelsea", "coffee")}
    entries, cases = [], []
    for name, img in photos.items():
        h, w = img.shape[:2]
        for box in ([0, 0, w, h], [w * 0.1, h * 0.1, w * 0.9, h * 0.9]):
            entries.append({"label": name, "embedding": embedding(img, box).tolist()})
    unit = lambda v: v / np.linalg.norm(v)
    for name, img in photos.items():
        h, w = img.shape[:2]
        box = [w * 0.05, h * 0.05, w * 0.95, h * 0.95]
        q = unit(embedding(img, box))
        best = {}
        for e in entries:
            s = float(q @ unit(np.array(e["embedding"], np.float32)))
            best[e["label"]] = max(best.get(e["label"], -2.0), s)
        cases.append({"image": f"{name}.png", "box": box, "similarity": best})
    with open(os.path.join(folder, "gallery.json"), "w") as f:
        json.dump({"entries": entries}, f)
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    right = sum(1 for c in cases if max(c["similarity"], key=c["similarity"].get) + ".png" == c["image"])
    print(f"embed: {len(entries)} gallery entries, {len(cases)} queries, {right} nearest right")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ocr_cls(sys.argv[1])
    embed(sys.argv[1])


if __name__ == "__main__":
    main()
