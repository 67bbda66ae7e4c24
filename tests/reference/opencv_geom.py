#!/usr/bin/env python3
"""OpenCV reference fixtures for runtime/src/imgproc/{color,geometry,filter,edges}.rs.

Regenerate (from the repository root):

    python3 tests/reference/opencv_geom.py target/fixtures/geom

Writes OUTDIR/manifest.json plus one raw little-endian .bin per distinct array. Each manifest case
is {"op", "name", "params", "inputs": {key: array}, "outputs": {key: array}} where an array is
{"file", "shape", "dtype"}. Inputs are random images (odd sizes included) and the photos in
models/cache/images (fetched by models/fetch.sh).
Checked by runtime/tests/imgproc_geom.rs.
"""

import hashlib
import json
import pathlib
import sys

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Fetched (and checksummed) by models/fetch.sh, which uses ../shared/models as a mirror.
IMAGES = ROOT / "models" / "cache" / "images"


class Fixtures:
    def __init__(self, outdir):
        self.outdir = pathlib.Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.cases = []

    def array(self, a):
        a = np.ascontiguousarray(a)
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        name = hashlib.sha1(raw + str(a.shape).encode() + a.dtype.str.encode()).hexdigest()[:20] + ".bin"
        path = self.outdir / name
        if not path.exists():
            path.write_bytes(raw)
        return {"file": name, "shape": list(a.shape), "dtype": a.dtype.name}

    def case(self, op, name, params, inputs, outputs):
        self.cases.append(
            {
                "op": op,
                "name": name,
                "params": params,
                "inputs": {k: self.array(v) for k, v in inputs.items()},
                "outputs": {k: self.array(v) for k, v in outputs.items()},
            }
        )

    def finish(self):
        (self.outdir / "manifest.json").write_text(json.dumps(self.cases, indent=1))
        print(f"{len(self.cases)} cases in {self.outdir}")


def photo(name, flags=cv2.IMREAD_COLOR):
    path = IMAGES / f"{name}.png"
    img = cv2.imread(str(path), flags)
    if img is None:
        sys.exit(f"missing {path}: run models/fetch.sh first")
    return img


def photos_bgr():
    """The colour photos plus the grey ones expanded to three channels."""
    return {n: photo(n) for n in ["astronaut", "camera", "page", "text"]}


def photos_grey():
    return {n: photo(n, cv2.IMREAD_GRAYSCALE) for n in ["camera", "page", "text", "astronaut"]}


def random_u8(rng, h, w, c=None):
    shape = (h, w) if c is None else (h, w, c)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def pad_rows(a, stride):
    """Rows of a (h, bytes) buffer spread `stride` bytes apart, padding filled with 0xEE."""
    h, row = a.shape
    out = np.full((h, stride), 0xEE, np.uint8)
    out[:, :row] = a
    return out


def yuyv_from_bgr(bgr):
    """A YUYV frame whose luma/chroma come from OpenCV's own BGR->YUV (any plausible camera frame)."""
    h, w = bgr.shape[:2]
    w -= w % 2
    h -= h % 2
    i420 = cv2.cvtColor(bgr[:h, :w], cv2.COLOR_BGR2YUV_I420)
    flat = i420.ravel()
    y = i420[:h]
    u = flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)
    v = flat[h * w * 5 // 4 :].reshape(h // 2, w // 2)
    yuyv = np.empty((h, w * 2), np.uint8)
    yuyv[:, 0::2] = y
    yuyv[:, 1::4] = np.repeat(u, 2, 0)
    yuyv[:, 3::4] = np.repeat(v, 2, 0)
    nv12 = np.empty((h * 3 // 2, w), np.uint8)
    nv12[:h] = y
    nv12[h:, 0::2] = u
    nv12[h:, 1::2] = v
    return yuyv, nv12


def color(fx, rng):
    frames = []
    for h, w in [(2, 2), (7, 10), (37, 64), (480, 640), (34, 98)]:
        frames.append((f"random_{w}x{h}", random_u8(rng, h, w * 2), random_u8(rng, h * 3 // 2 + h % 2, w)))
    for name, bgr in photos_bgr().items():
        frames.append((name, *yuyv_from_bgr(bgr)))
    for name, yuyv, nv12 in frames:
        h, w = yuyv.shape[0], yuyv.shape[1] // 2
        nv12 = nv12[: (h // 2) * 3] if h % 2 == 0 else None
        for stride_pad in [0, 12]:
            for order, yuyv_code, nv12_code in [
                ("rgb", cv2.COLOR_YUV2RGB_YUYV, cv2.COLOR_YUV2RGB_NV12),
                ("bgr", cv2.COLOR_YUV2BGR_YUYV, cv2.COLOR_YUV2BGR_NV12),
            ]:
                stride = 2 * w + stride_pad
                fx.case(
                    "yuyv_to_rgb",
                    f"{name}_{order}_s{stride}",
                    {"width": w, "height": h, "stride": stride, "order": order},
                    {"src": pad_rows(yuyv.reshape(h, 2 * w), stride)},
                    {"dst": cv2.cvtColor(yuyv.reshape(h, w, 2), yuyv_code)},
                )
                if nv12 is not None:
                    stride = w + stride_pad
                    fx.case(
                        "nv12_to_rgb",
                        f"{name}_{order}_s{stride}",
                        {"width": w, "height": h, "stride": stride, "order": order},
                        {"src": pad_rows(nv12, stride)},
                        {"dst": cv2.cvtColor(nv12, nv12_code)},
                    )
    images = {f"random_{w}x{h}": random_u8(rng, h, w, 3) for h, w in [(1, 1), (5, 7), (37, 61), (480, 640)]}
    images.update(photos_bgr())
    for name, img in images.items():
        h, w = img.shape[:2]
        for stride_pad in [0, 5]:
            stride = 3 * w + stride_pad
            src = pad_rows(img.reshape(h, 3 * w), stride)
            params = {"width": w, "height": h, "stride": stride}
            fx.case("swap_rb", f"{name}_s{stride}", params, {"src": src}, {"dst": cv2.cvtColor(img, cv2.COLOR_RGB2BGR)})
            for order, code in [("rgb", cv2.COLOR_RGB2GRAY), ("bgr", cv2.COLOR_BGR2GRAY)]:
                fx.case(
                    "rgb_to_grey",
                    f"{name}_{order}_s{stride}",
                    {**params, "order": order},
                    {"src": src},
                    {"dst": cv2.cvtColor(img, code)},
                )
            grey = img[:, :, 1]
            stride = w + stride_pad
            fx.case(
                "grey_to_rgb",
                f"{name}_s{stride}",
                {"width": w, "height": h, "stride": stride},
                {"src": pad_rows(grey, stride)},
                {"dst": cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)},
            )


def test_images(rng, colour=True):
    """Random images (odd sizes included) and the photos, 1- and 3-channel."""
    imgs = {}
    for h, w in [(1, 1), (2, 3), (7, 5), (37, 61), (120, 160)]:
        imgs[f"rand{w}x{h}c1"] = random_u8(rng, h, w)
        if colour:
            imgs[f"rand{w}x{h}c3"] = random_u8(rng, h, w, 3)
    for name, img in photos_grey().items():
        imgs[f"{name}_grey"] = img
    if colour:
        imgs["astronaut"] = photo("astronaut")
    return imgs


INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "reflect101": cv2.BORDER_REFLECT_101,
}


def resize(fx, rng):
    for name, img in test_images(rng).items():
        h, w = img.shape[:2]
        sizes = {(max(1, w // 2), max(1, h // 2)), (w * 2, h * 2), (max(1, w // 3), max(1, h // 3)),
                 (max(1, w * 2 // 3), max(1, h * 3 // 4)), (w + 3, max(1, h - 1)), (320, 320), (17, 9), (w, h)}
        for dw, dh in sorted(sizes):
            for interp, code in INTERP.items():
                fx.case("resize", f"{name}_{dw}x{dh}_{interp}", {"width": dw, "height": dh, "interpolation": interp},
                        {"src": img}, {"dst": cv2.resize(img, (dw, dh), interpolation=code)})


def letterbox_ref(img, dw, dh, placement, pad, interp):
    h, w = img.shape[:2]
    r = min(dw / w, dh / h)
    nw, nh = min(max(int(round(w * r)), 1), dw), min(max(int(round(h * r)), 1), dh)
    left, top = ((dw - nw) // 2, (dh - nh) // 2) if placement == "centre" else (0, 0)
    resized = cv2.resize(img, (nw, nh), interpolation=INTERP[interp])
    out = cv2.copyMakeBorder(resized, top, dh - nh - top, left, dw - nw - left, cv2.BORDER_CONSTANT, value=(pad,) * 4)
    return out, (left, top, nw, nh)


def letterbox(fx, rng):
    imgs = {"astronaut": photo("astronaut"), "camera": photo("camera"), "rand640x480": random_u8(rng, 480, 640, 3),
            "rand33x71": random_u8(rng, 71, 33, 3)}
    for name, img in imgs.items():
        for dw, dh in [(320, 320), (416, 256), (64, 96)]:
            for placement in ["topleft", "centre"]:
                for interp in ["linear", "area"]:
                    out, (left, top, nw, nh) = letterbox_ref(img, dw, dh, placement, 114, interp)
                    params = {"width": dw, "height": dh, "placement": placement, "pad": 114,
                              "interpolation": interp, "left": left, "top": top, "content_width": nw,
                              "content_height": nh}
                    fx.case("letterbox", f"{name}_{dw}x{dh}_{placement}_{interp}", params, {"src": img}, {"dst": out})


def warps(fx, rng):
    imgs = {"astronaut": photo("astronaut"), "camera": photo("camera"), "rand61x37c3": random_u8(rng, 37, 61, 3),
            "rand5x4c1": random_u8(rng, 4, 5)}
    for name, img in imgs.items():
        h, w = img.shape[:2]
        src_tri = np.float32([[0, 0], [w - 1, 0], [0, h - 1]])
        dst_tri = np.float32([[w * 0.1, h * 0.2], [w * 0.85, h * 0.1], [w * 0.15, h * 0.9]])
        affines = {
            "tri": cv2.getAffineTransform(src_tri, dst_tri),
            "rot": cv2.getRotationMatrix2D((w / 2, h / 2), 33.0, 0.8),
            "shift": np.float64([[1, 0, 2.25], [0, 1, -1.5]]),
        }
        quad = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
        dquad = np.float32([[w * 0.05, h * 0.1], [w * 0.9, h * 0.02], [w * 0.8, h * 0.95], [w * 0.1, h * 0.85]])
        homs = {"quad": cv2.getPerspectiveTransform(quad, dquad),
                "tilt": np.float64([[1, 0.1, 3], [0.05, 1.1, -2], [0.0008, 0.0005, 1]])}
        sizes = [(w, h), (w * 3 // 4 + 1, h * 2 // 3 + 1)]
        for (dw, dh) in sizes:
            for interp in ["nearest", "linear"]:
                for bname in ["constant", "replicate"]:
                    flags = INTERP[interp]
                    bval = 37 if bname == "constant" else 0
                    for mname, m in affines.items():
                        out = cv2.warpAffine(img, m, (dw, dh), flags=flags, borderMode=BORDERS[bname],
                                             borderValue=(bval,) * 4)
                        fx.case("warp_affine", f"{name}_{mname}_{dw}x{dh}_{interp}_{bname}",
                                {"m": m.tolist(), "width": dw, "height": dh, "interpolation": interp,
                                 "border": bname, "border_value": bval}, {"src": img}, {"dst": out})
                    for mname, m in homs.items():
                        out = cv2.warpPerspective(img, m, (dw, dh), flags=flags, borderMode=BORDERS[bname],
                                                  borderValue=(bval,) * 4)
                        fx.case("warp_perspective", f"{name}_{mname}_{dw}x{dh}_{interp}_{bname}",
                                {"m": m.tolist(), "width": dw, "height": dh, "interpolation": interp,
                                 "border": bname, "border_value": bval}, {"src": img}, {"dst": out})
    for i in range(20):
        src = rng.uniform(-50, 700, (4, 2)).astype(np.float32)
        dst = (src + rng.uniform(-40, 40, (4, 2))).astype(np.float32)
        fx.case("get_affine_transform", f"random{i}", {"src": src[:3].tolist(), "dst": dst[:3].tolist()}, {},
                {"m": cv2.getAffineTransform(src[:3], dst[:3])})
        fx.case("get_perspective_transform", f"random{i}", {"src": src.tolist(), "dst": dst.tolist()}, {},
                {"m": cv2.getPerspectiveTransform(src, dst)})


def filters(fx, rng):
    for name, img in test_images(rng).items():
        h, w = img.shape[:2]
        for kw, kh in [(1, 1), (3, 3), (5, 5), (2, 2), (2, 1), (1, 2), (4, 6), (3, 7), (7, 7), (15, 15), (17, 17), (31, 5)]:
            for bname in (["reflect101", "replicate", "reflect", "constant"] if (kw, kh) == (3, 3) else ["reflect101"]):
                out = cv2.blur(img, (kw, kh), borderType=BORDERS[bname])
                fx.case("box_blur", f"{name}_{kw}x{kh}_{bname}", {"kw": kw, "kh": kh, "border": bname},
                        {"src": img}, {"dst": out})
        for (kw, kh), sx, sy in [((3, 3), 0, 0), ((5, 5), 0, 0), ((7, 7), 0, 0), ((9, 9), 0, 0), ((5, 5), 1.4, 0),
                                 ((3, 7), 0, 0), ((0, 0), 2.0, 0), ((0, 0), 1.0, 3.0), ((11, 5), 2.5, 1.2), ((1, 1), 0, 0)]:
            for bname in (["reflect101", "replicate", "reflect"] if (kw, kh) == (5, 5) and sx == 0 else ["reflect101"]):
                out = cv2.GaussianBlur(img, (kw, kh), sx, sigmaY=sy, borderType=BORDERS[bname])
                fx.case("gaussian_blur", f"{name}_{kw}x{kh}_s{sx}_{sy}_{bname}",
                        {"kw": kw, "kh": kh, "sigma_x": sx, "sigma_y": sy, "border": bname}, {"src": img}, {"dst": out})
        for k in [3, 5]:
            fx.case("median_blur", f"{name}_{k}", {"ksize": k}, {"src": img}, {"dst": cv2.medianBlur(img, k)})
    for n, sigma in [(1, 0), (3, 0), (5, 0), (7, 0), (9, 0), (11, 0), (31, 0), (5, 1.1), (7, 3.0), (4, 0), (6, 1.5)]:
        fx.case("gaussian_kernel", f"n{n}_s{sigma}", {"ksize": n, "sigma": sigma}, {},
                {"k": cv2.getGaussianKernel(n, sigma, ktype=cv2.CV_64F).ravel()})


def edges(fx, rng):
    imgs = test_images(rng)
    for name, img in imgs.items():
        for dx, dy, k in [(1, 0, 3), (0, 1, 3), (1, 1, 3), (1, 0, 1), (0, 1, 1), (2, 0, 3), (1, 0, 5), (0, 2, 5), (1, 0, 7),
                          (0, 1, 7), (2, 1, 5), (3, 0, 7)]:
            for bname in (["reflect101", "replicate", "constant"] if (dx, dy, k) == (1, 0, 3) else ["reflect101"]):
                out = cv2.Sobel(img, cv2.CV_16S, dx, dy, ksize=k, borderType=BORDERS[bname])
                fx.case("sobel", f"{name}_{dx}{dy}_k{k}_{bname}", {"dx": dx, "dy": dy, "ksize": k, "border": bname},
                        {"src": img}, {"dst": out})
        for dx, dy in [(1, 0), (0, 1)]:
            out = cv2.Scharr(img, cv2.CV_16S, dx, dy)
            fx.case("scharr", f"{name}_{dx}{dy}", {"dx": dx, "dy": dy, "border": "reflect101"}, {"src": img}, {"dst": out})
    canny_imgs = {k: v for k, v in imgs.items() if not k.startswith("rand") or k.endswith("120c1")}
    canny_imgs["astronaut"] = photo("astronaut")
    canny_imgs["rand160x120c3"] = imgs["rand160x120c3"]
    for name, img in canny_imgs.items():
        for lo, hi, ap, l2 in [(50, 150, 3, False), (50, 150, 3, True), (100, 200, 3, False), (20, 60, 3, True),
                               (200, 80, 3, False), (150, 400, 5, False), (300, 900, 5, True), (1000, 3000, 7, False),
                               (2000, 6000, 7, True)]:
            out = cv2.Canny(img, lo, hi, apertureSize=ap, L2gradient=l2)
            fx.case("canny", f"{name}_{lo}_{hi}_a{ap}_{'l2' if l2 else 'l1'}",
                    {"low": lo, "high": hi, "aperture": ap, "l2": l2}, {"src": img}, {"dst": out})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    cv2.setNumThreads(1)
    fx = Fixtures(sys.argv[1])
    rng = np.random.default_rng(20240601)
    color(fx, rng)
    resize(fx, rng)
    letterbox(fx, rng)
    warps(fx, rng)
    filters(fx, rng)
    edges(fx, rng)
    fx.finish()


if __name__ == "__main__":
    main()
