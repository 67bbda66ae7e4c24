#!/usr/bin/env python3
"""OpenCV reference outputs for morphology, thresholds and connected components.

    python3 tests/reference/opencv_morph.py target/fixtures

writes OUTDIR/morph/manifest.json and OUTDIR/morph/data.bin, read by
runtime/tests/imgproc_morph.rs. data.bin concatenates raw arrays (u8 images, i8 kernels,
i32 labels and stats, f64 centroids, all little-endian); the manifest describes every input
and case with the byte offset of its arrays. Inputs are seeded random images (grey and
binary, odd sizes included) and the reference photos camera, page and text, read from
../shared/models/images (or models/cache/images) relative to the repository root.

Needs numpy and opencv-python(-headless). Single-threaded OpenCV, deterministic output.
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
PHOTO_DIRS = [REPO.parent / "shared/models/images", REPO / "models/cache/images"]

SHAPES = {"rect": cv2.MORPH_RECT, "cross": cv2.MORPH_CROSS, "ellipse": cv2.MORPH_ELLIPSE}
OPS = {
    "erode": cv2.MORPH_ERODE,
    "dilate": cv2.MORPH_DILATE,
    "open": cv2.MORPH_OPEN,
    "close": cv2.MORPH_CLOSE,
    "gradient": cv2.MORPH_GRADIENT,
    "tophat": cv2.MORPH_TOPHAT,
    "blackhat": cv2.MORPH_BLACKHAT,
    "hitmiss": cv2.MORPH_HITMISS,
}
BORDERS = ["neutral", "replicate", ["constant", 0], ["constant", 255], ["constant", 77]]
KSIZES = [(1, 1), (2, 2), (3, 3), (4, 3), (5, 5), (1, 7), (7, 1), (6, 4), (9, 9), (15, 15), (3, 11), (15, 2)]
THRESH_TYPES = {
    "binary": cv2.THRESH_BINARY,
    "binary_inv": cv2.THRESH_BINARY_INV,
    "trunc": cv2.THRESH_TRUNC,
    "tozero": cv2.THRESH_TOZERO,
    "tozero_inv": cv2.THRESH_TOZERO_INV,
}


class Blob:
    """Appends arrays to data.bin and returns their offsets."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, array, dtype):
        raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        offset = self.size
        self.parts.append(raw)
        self.size += len(raw)
        return offset


def photo(name):
    for d in PHOTO_DIRS:
        p = d / f"{name}.png"
        if p.exists():
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            assert img is not None, f"cannot decode {p}"
            return img
    sys.exit(f"{name}.png not found in {', '.join(map(str, PHOTO_DIRS))}: run `just fetch` first")


def inputs(rng):
    """(name, image, kind) with kind 'grey' or 'binary'."""
    out = []
    for w, h in [(1, 1), (1, 9), (13, 1), (23, 17), (64, 48), (65, 33), (130, 7), (101, 67)]:
        out.append((f"grey_{w}x{h}", rng.integers(0, 256, (h, w), dtype=np.uint8), "grey", True))
    for (w, h), density in [((23, 17), 0.5), ((65, 33), 0.3), ((130, 7), 0.7), ((101, 67), 0.5)]:
        img = ((rng.random((h, w)) < density) * 255).astype(np.uint8)
        out.append((f"binary_{w}x{h}", img, "binary", True))
    # Blobs: smoothed noise, thresholded, so that openings and components have structure.
    noise = cv2.GaussianBlur(rng.random((77, 101)).astype(np.float32), (0, 0), 3)
    out.append(("blobs_101x77", ((noise > np.median(noise)) * 255).astype(np.uint8), "binary", True))
    for name in ["camera", "page", "text"]:
        img = photo(name)
        out.append((name, img, "grey", False))
        _, bw = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        out.append((f"{name}_otsu", bw, "binary", False))
    return out


def kernel(shape, ksize, rng, hitmiss):
    """(spec for the manifest, kernel array for OpenCV)."""
    kw, kh = ksize
    if shape == "custom":
        if hitmiss:
            values = rng.choice(np.array([-1, 0, 1], np.int8), (kh, kw), p=[0.3, 0.3, 0.4])
        else:
            values = (rng.random((kh, kw)) < 0.6).astype(np.int8)
        values.flat[rng.integers(values.size)] = 1
        # Erode and friends want a CV_8U kernel; hit-or-miss reads -1 from CV_8S.
        return {"custom": values.ravel().tolist(), "width": kw, "height": kh}, values.astype(
            np.int8 if hitmiss else np.uint8
        )
    elem_anchor = (int(rng.integers(kw)), int(rng.integers(kh))) if shape == "cross" else None
    k = cv2.getStructuringElement(SHAPES[shape], ksize, elem_anchor if elem_anchor else (-1, -1))
    spec = {"shape": shape, "width": kw, "height": kh, "elem_anchor": elem_anchor}
    return spec, k


def border_args(border):
    if border == "neutral":
        return {"borderType": cv2.BORDER_CONSTANT}
    if border == "replicate":
        return {"borderType": cv2.BORDER_REPLICATE}
    return {"borderType": cv2.BORDER_CONSTANT, "borderValue": border[1]}


def morph_case(blob, index, img, op, shape, ksize, anchor, iterations, border, rng):
    spec, k = kernel(shape, ksize, rng, op == "hitmiss")
    kw, kh = ksize
    anchors = {"centre": None, "origin": (0, 0), "far": (kw - 1, kh - 1), "ipp": ((kw - 1) // 2, (kh - 1) // 2)}
    a = anchors[anchor]
    out = cv2.morphologyEx(img, OPS[op], k, anchor=a if a else (-1, -1), iterations=iterations, **border_args(border))
    return {
        "input": index,
        "op": op,
        "kernel": spec,
        "anchor": a,
        "iterations": iterations,
        "border": border,
        "offset": blob.add(out, np.uint8),
    }


def morph_cases(blob, index, img, small, rng):
    cases = []
    if small:
        # Every op × shape × border, each with several (ksize, anchor, iterations) picked by
        # cycling the lists with coprime strides so that every value meets every op.
        n = 0
        for op in OPS:
            for shape in ["rect", "cross", "ellipse", "custom"]:
                for border in BORDERS:
                    for _ in range(4):
                        ksize = KSIZES[(n * 5) % len(KSIZES)]
                        anchor = ["centre", "origin", "far", "ipp"][(n * 3) % 4]
                        iterations = [1, 2, 0, 3, 1][n % 5]
                        cases.append(morph_case(blob, index, img, op, shape, ksize, anchor, iterations, border, rng))
                        n += 1
    else:
        # Large images: every op with the benchmarked elements, plus anchors, iterations and
        # borders on a few.
        for op in OPS:
            for shape, ksize in [("rect", (3, 3)), ("rect", (15, 15)), ("ellipse", (5, 5))]:
                cases.append(morph_case(blob, index, img, op, shape, ksize, "centre", 1, "neutral", rng))
        for op, shape, ksize, anchor, iterations, border in [
            ("erode", "rect", (5, 5), "centre", 1, "neutral"),
            ("dilate", "cross", (3, 3), "centre", 1, "neutral"),
            ("open", "custom", (5, 4), "origin", 2, "replicate"),
            ("close", "ellipse", (11, 7), "far", 1, ["constant", 255]),
            ("dilate", "rect", (4, 6), "far", 3, ["constant", 0]),
        ]:
            cases.append(morph_case(blob, index, img, op, shape, ksize, anchor, iterations, border, rng))
    return cases


def threshold_cases(blob, index, img, small):
    cases = []
    levels = [-1.0, 0.0, 0.5, 100.0, 127.9, 254.0, 254.5, 255.0, 300.0] if small else [-1.0, 100.0, 254.5]
    for i, name in enumerate(THRESH_TYPES):
        for thresh in levels:
            maxval = [255.0, 128.5, 300.0, -1.0, 127.5][(i + int(thresh)) % 5]
            ret, out = cv2.threshold(img, thresh, maxval, THRESH_TYPES[name])
            cases.append({"input": index, "type": name, "thresh": thresh, "maxval": maxval, "otsu": False,
                          "ret": ret, "offset": blob.add(out, np.uint8)})
        ret, out = cv2.threshold(img, 0, 200.0, THRESH_TYPES[name] | cv2.THRESH_OTSU)
        cases.append({"input": index, "type": name, "thresh": 0.0, "maxval": 200.0, "otsu": True,
                      "ret": ret, "offset": blob.add(out, np.uint8)})
    return cases


def adaptive_cases(blob, index, img, blocks):
    cases = []
    n = 0
    for method, mcode in [("mean", cv2.ADAPTIVE_THRESH_MEAN_C), ("gaussian", cv2.ADAPTIVE_THRESH_GAUSSIAN_C)]:
        for typ in ["binary", "binary_inv"]:
            for block in blocks:
                c = [-3.5, 0.0, 2.0, 7.2, -0.4][n % 5]
                maxval = [255.0, 127.5, 1.0][n % 3]
                n += 1
                out = cv2.adaptiveThreshold(img, maxval, mcode, THRESH_TYPES[typ], block, c)
                cases.append({"input": index, "method": method, "type": typ, "block": block, "c": c,
                              "maxval": maxval, "offset": blob.add(out, np.uint8)})
    return cases


def local_mean_cases(blob, index, img, kind, blocks):
    """The local means adaptiveThreshold compares against: OpenCV's f32 GaussianBlur (before
    rounding) and u8 boxFilter, both with its replicated, isolated border."""
    border = cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED
    cases = []
    for block in blocks:
        if kind == "gaussian_blur":
            out, dtype = cv2.GaussianBlur(img.astype(np.float32), (block, block), 0, 0, borderType=border), np.float32
        else:
            out, dtype = cv2.boxFilter(img, -1, (block, block), normalize=True, borderType=border), np.uint8
        cases.append({"input": index, "block": block, "offset": blob.add(out, dtype)})
    return cases


def component_cases(blob, index, img):
    cases = []
    for connectivity in (4, 8):
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(img, connectivity=connectivity, ltype=cv2.CV_32S)
        cases.append({
            "input": index,
            "connectivity": connectivity,
            "count": int(n),
            "labels": blob.add(labels, np.int32),
            "stats": blob.add(stats, np.int32),
            "centroids": blob.add(centroids, np.float64),
        })
    return cases


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = Path(sys.argv[1]) / "morph"
    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(20240611)
    blob = Blob()
    manifest = {"opencv": cv2.__version__, "inputs": [], "elements": [], "morph": [], "threshold": [],
                "adaptive": [], "components": [], "gaussian_blur": [], "box_mean": []}

    for shape in SHAPES:
        for kh in range(1, 17):
            for kw in range(1, 17):
                anchors = [None] if shape != "cross" else [None, (0, 0), (kw - 1, kh // 3)]
                for a in anchors:
                    k = cv2.getStructuringElement(SHAPES[shape], (kw, kh), a if a else (-1, -1))
                    manifest["elements"].append({"shape": shape, "width": kw, "height": kh, "anchor": a,
                                                 "offset": blob.add(k, np.uint8)})
    for kw, kh in [(31, 31), (40, 25), (25, 40), (63, 63), (100, 7)]:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kw, kh))
        manifest["elements"].append({"shape": "ellipse", "width": kw, "height": kh, "anchor": None,
                                     "offset": blob.add(k, np.uint8)})

    for index, (name, img, kind, small) in enumerate(inputs(rng)):
        h, w = img.shape
        manifest["inputs"].append({"name": name, "width": w, "height": h, "kind": kind,
                                   "offset": blob.add(img, np.uint8)})
        manifest["morph"] += morph_cases(blob, index, img, small, rng)
        if kind == "grey":
            manifest["threshold"] += threshold_cases(blob, index, img, small)
            blocks = [3, 5, 7, 9, 11, 13, 15, 21, 31, 51] if small else [3, 11, 25]
            manifest["adaptive"] += adaptive_cases(blob, index, img, blocks)
            manifest["gaussian_blur"] += local_mean_cases(blob, index, img, "gaussian_blur",
                                                          [3, 9, 11, 13, 15, 19, 25, 33, 51, 101] if small else [11, 21])
            manifest["box_mean"] += local_mean_cases(blob, index, img, "box_mean", [3, 5, 15, 31])
        else:
            manifest["components"] += component_cases(blob, index, img)

    # Large blocks on a tall image: the box filter's f32 (vector) and f64 (tail) scaling differ.
    tall = rng.integers(0, 256, (1500, 37), dtype=np.uint8)
    manifest["inputs"].append({"name": "grey_37x1500", "width": 37, "height": 1500, "kind": "grey",
                               "offset": blob.add(tall, np.uint8)})
    manifest["adaptive"] += adaptive_cases(blob, len(manifest["inputs"]) - 1, tall, [301, 401])
    for w, h, blocks in [(37, 1500, [301, 401]), (45, 3000, [401, 501])]:
        tall = rng.integers(0, 256, (h, w), dtype=np.uint8)
        manifest["inputs"].append({"name": f"grey_{w}x{h}", "width": w, "height": h, "kind": "grey",
                                   "offset": blob.add(tall, np.uint8)})
        manifest["box_mean"] += local_mean_cases(blob, len(manifest["inputs"]) - 1, tall, "box_mean", blocks)

    # Components at scale, where OpenCV's parallel labelling would split the image into stripes.
    big = ((rng.random((701, 900)) < 0.45) * 255).astype(np.uint8)
    manifest["inputs"].append({"name": "binary_900x701", "width": 900, "height": 701, "kind": "binary",
                               "offset": blob.add(big, np.uint8)})
    manifest["components"] += component_cases(blob, len(manifest["inputs"]) - 1, big)

    (out_dir / "data.bin").write_bytes(b"".join(blob.parts))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=0))
    counts = {k: len(v) for k, v in manifest.items() if isinstance(v, list)}
    print(f"{out_dir}: {blob.size / 1e6:.1f} MB, {counts}")


if __name__ == "__main__":
    main()
