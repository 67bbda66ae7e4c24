#!/usr/bin/env python3
"""Reference text regions for the Rust DBNet decoder (runtime/src/detect/dbnet.rs).

Run from the repository root (needs numpy, opencv-python-headless, onnxruntime, and
`pip install --no-deps rapidocr-onnxruntime==1.4.4 pyclipper shapely`, see
requirements-dev.txt):

    python3 tests/reference/dbnet.py target/fixtures/dbnet

For page.png and text.png it preprocesses the photo as RapidOCR's DetPreProcess does
(stretched to a fixed input size, BGR, (x/255 - 0.5)/0.5), runs PP-OCRv4 det
(models/cache/ch_PP-OCRv4_det_infer.onnx) in onnxruntime and applies the authors'
postprocessing: RapidOCR 1.4.4's own DBPostProcess class, loaded from the installed
package. It writes OUTDIR/<image>/ as tests/reference/detectors.py does:

    input.json  + input.f32      the preprocessed input tensor (NCHW)
    outputs.json + outputs_0.f32 the raw probability map [1, 1, H, W]
    preprocess.json              how the input was made, and how to map boxes back
    expected.json                the decode settings and the text regions: DB's quads and
                                 their axis-aligned boxes, in model-input pixels and in
                                 source-image pixels (DBPostProcess's own mapping)

It exits 1 unless PP-OCRv4 finds the 7 text lines of page.png.
"""

import importlib.util
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

from detectors import write_tensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models", "cache")
MODEL = "ch_PP-OCRv4_det_infer.onnx"

# Fixed input sizes (W, H), multiples of 32. page.png (384x191) is kept at its size. At
# text.png's own size (448x172 -> 448x160 or 448x192) the model finds no text at all in
# that handwriting, so it is read at three times its size, as RapidOCR's limit_side_len
# (736 on the short side) would scale it up too.
IMAGES = {"page.png": (384, 192), "text.png": (1344, 512)}

# RapidOCR 1.4.4 config.yaml, Det section, except the score mode. "fast" scores a region by
# the mean inside its minimum-area rectangle; the lines of page.png bow, so their rectangles
# take in much background and two of its seven lines fall under box_thresh. "slow" (PaddleOCR's
# det_db_score_mode for curved text) scores the mean inside the region's contour.
POST = {"thresh": 0.3, "box_thresh": 0.5, "max_candidates": 1000, "unclip_ratio": 1.6,
        "use_dilation": True, "score_mode": "slow"}
PAGE_LINES = 7


def rapidocr_det_utils():
    """rapidocr_onnxruntime/ch_ppocr_det/utils.py, loaded on its own: the package's
    __init__ imports the whole OCR pipeline (and Pillow), which the detector does not need."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("rapidocr_onnxruntime is not installed: "
                 "pip install --no-deps rapidocr-onnxruntime==1.4.4 pyclipper shapely")
    path = os.path.join(spec.submodule_search_locations[0], "ch_ppocr_det", "utils.py")
    mod_spec = importlib.util.spec_from_file_location("rapidocr_det_utils", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def aabb(quad):
    return [float(quad[:, 0].min()), float(quad[:, 1].min()),
            float(quad[:, 0].max()), float(quad[:, 1].max())]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    det = rapidocr_det_utils()
    pre = det.DetPreProcess()
    post = det.DBPostProcess(**POST)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(os.path.join(MODELS, MODEL), so,
                                providers=["CPUExecutionProvider"])
    input_name, output_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    found = {}
    for image, (w, h) in IMAGES.items():
        img = cv2.imread(os.path.join(MODELS, "images", image))
        if img is None:
            sys.exit(f"cannot read {image} from {MODELS}/images: run `models/fetch.sh`")
        src_h, src_w = img.shape[:2]
        # DetPreProcess.__call__ less its size choice: cv2.resize (INTER_LINEAR), normalise.
        x = pre.permute(pre.normalize(cv2.resize(img, (w, h))))[None].astype(np.float32)
        (prob,) = sess.run([output_name], {input_name: x})
        # ori_shape is where DBPostProcess maps its quads: the input itself, then the photo.
        quads_model, scores = post(prob, (h, w))
        quads_source, scores_source = post(prob, (src_h, src_w))
        assert scores == scores_source, "the mapping must not change which regions are kept"
        folder = os.path.join(outdir, os.path.splitext(image)[0])
        os.makedirs(folder, exist_ok=True)
        write_tensors(folder, "input.json", [(input_name, x)])
        write_tensors(folder, "outputs.json", [(output_name, prob)])
        pp = {"input_wh": [w, h], "resize": "stretch", "size_rounding": "floor",
              "interpolation": "linear", "pad_value": None, "pad_placement": None,
              "channel_order": "bgr", "mean": [127.5] * 3, "std": [127.5] * 3,
              "scale_xy": [w / src_w, h / src_h], "offset_xy": [0.0, 0.0],
              "source_wh": [src_w, src_h],
              "sample": "RapidOCR 1.4.4 rapidocr_onnxruntime/ch_ppocr_det/utils.py DetPreProcess"}
        with open(os.path.join(folder, "preprocess.json"), "w") as fh:
            json.dump(pp, fh, indent=1)
        rows = [{"class_id": 0, "label": "text", "score": float(s),
                 "quad_model": qm.tolist(), "quad_source": qs.tolist(),
                 "box_model": aabb(qm), "box_source": aabb(qs)}
                for qm, qs, s in zip(quads_model, quads_source, scores)]
        rows.sort(key=lambda r: -r["score"])
        decode = {"mask_threshold": POST["thresh"], "score_threshold": POST["box_thresh"],
                  "unclip_ratio": POST["unclip_ratio"], "dilation": "2x2",
                  "score_mode": POST["score_mode"], "max_candidates": POST["max_candidates"]}
        expected = {"model": MODEL, "family": "dbnet", "labels": "text", "image": image,
                    "input_wh": [w, h], "source_wh": [src_w, src_h], "decode": decode,
                    "postprocess": "RapidOCR 1.4.4 DBPostProcess", "detections": rows}
        with open(os.path.join(folder, "expected.json"), "w") as fh:
            json.dump(expected, fh, indent=1)
        found[image] = len(rows)
        scores_text = ", ".join(f"{r['score']:.2f}" for r in rows)
        print(f"{image:10} {w}x{h}: {len(rows)} text regions ({scores_text})")

    ok = found["page.png"] == PAGE_LINES
    print(f"check page.png: expect {PAGE_LINES} text lines -> {found['page.png']} "
          f"{'ok' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
