#!/usr/bin/env python3
"""Calibration and held-out evaluation images for ocelli-compress, kept apart by source photo.

Run from the repository root after models/fetch.sh (needs numpy, opencv-python-headless):

    python3 compress/scripts/make_images.py target/fixtures/compress

OUTDIR/calib: camera, page, text, rocket and a motorcycle in a garage (none of them in eval),
each whole, flipped, as two crops and darker. OUTDIR/eval: astronaut, chelsea and coffee (never calibrated on), each whole,
flipped and as three crops that keep their subject. Crops are fixed fractions of the image, so
the sets are the same on every run.
"""

import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "models", "cache")
# The reference photos are in images/; calib/ holds photos fetched for calibration only.
CALIB = ["images/camera.png", "images/page.png", "images/text.png", "images/rocket.jpg",
         "calib/motorcycle_left.png"]
EVAL = ["images/astronaut.png", "images/chelsea.png", "images/coffee.png"]


def crop(img, x0, y0, x1, y1):
    h, w = img.shape[:2]
    return img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]


def variants(img, held_out):
    yield "whole", img
    yield "flip", img[:, ::-1]
    if held_out:
        yield "centre", crop(img, 0.1, 0.1, 0.9, 0.9)
        yield "topleft", crop(img, 0.0, 0.0, 0.85, 0.85)
        yield "bottomright", crop(img, 0.15, 0.15, 1.0, 1.0)
    else:
        yield "left", crop(img, 0.0, 0.0, 0.6, 1.0)
        yield "bottom", crop(img, 0.0, 0.4, 1.0, 1.0)
        yield "dark", (img.astype(np.float32) * 0.6).astype(np.uint8)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for subset, names in (("calib", CALIB), ("eval", EVAL)):
        os.makedirs(os.path.join(out, subset), exist_ok=True)
        for name in names:
            path = os.path.join(CACHE, name)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                sys.exit(f"{path} is missing: run models/fetch.sh")
            stem = os.path.splitext(os.path.basename(name))[0]
            for kind, v in variants(img, subset == "eval"):
                cv2.imwrite(os.path.join(out, subset, f"{stem}_{kind}.png"),
                            np.ascontiguousarray(v))
    print(f"wrote {out}/calib and {out}/eval")


if __name__ == "__main__":
    main()
