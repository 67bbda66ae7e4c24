"""Writes starting corpora for the fuzz targets into fuzz/corpus/<target>/ (git-ignored): valid
inputs the fuzzer mutates, so it reaches deep code at once instead of rediscovering formats."""

import pathlib
import struct
import sys

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "benches" / "soak"))
import tiny_yolov8  # noqa: E402


def save(target, name, data):
    d = ROOT / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def jpegs(rng):
    for w, h in [(16, 8), (32, 24), (64, 48)]:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        size = struct.pack("<HH", w, h)
        for name, params in [
            ("q90", [cv2.IMWRITE_JPEG_QUALITY, 90]),
            ("q20", [cv2.IMWRITE_JPEG_QUALITY, 20]),
            ("prog", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
            ("444", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        ]:
            ok, buf = cv2.imencode(".jpg", img, params)
            assert ok
            save("mjpeg", f"{w}x{h}-{name}", size + buf.tobytes())
        ok, buf = cv2.imencode(".jpg", img[:, :, 0])
        save("mjpeg", f"{w}x{h}-grey", size + buf.tobytes())


def image_files(rng):
    for w, h in [(16, 8), (64, 48)]:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        for name, ext, params in [
            ("rgb", ".png", []),
            ("q90", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
            ("prog", ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ]:
            ok, buf = cv2.imencode(ext, img, params)
            assert ok
            save("png_file" if ext == ".png" else "jpeg_file", f"{w}x{h}-{name}", buf.tobytes())
        for name, pixels in [("grey", img[:, :, 0]), ("rgba", np.dstack([img, img[:, :, :1]]))]:
            ok, buf = cv2.imencode(".png", pixels)
            save("png_file", f"{w}x{h}-{name}", buf.tobytes())
        ok, buf = cv2.imencode(".png", img.astype(np.uint16) * 257)
        save("png_file", f"{w}x{h}-16bit", buf.tobytes())


def raw_frames():
    # Header: format index, width, height (u16 LE), stride excess (i16 LE); then the buffer.
    bytes_per_pixel = {0: 2, 1: 1, 2: 1, 3: 3, 4: 3}  # YUYV, NV12 (luma), GREY, RGB, BGR
    for fmt, bpp in bytes_per_pixel.items():
        for w, h, pad in [(4, 2, 0), (16, 8, 0), (16, 8, 4), (30, 10, 2)]:
            stride = bpp * w + pad
            rows = h * 3 // 2 if fmt == 1 else h
            head = struct.pack("<BHHh", fmt, w, h, pad)
            save("raw_frames", f"f{fmt}-{w}x{h}+{pad}", head + (bytes(range(256)) * (stride * rows // 256 + 1))[: stride * rows])


def configs():
    for p in sorted((ROOT.parent / "board-configs").glob("*.toml")):
        save("config", p.stem, p.read_bytes())
    save("config", "synthetic", b"""[source]
kind = "synthetic"
width = 160
height = 120
frames = 10
faults = [{ after = 5, seconds = 1.5 }]

[reconnect]
delays_s = [0.2, 0.4]
frame_timeout_s = 2.0

[imaging.motion]
min_area = 0.01

[imaging.rectify]
quad = [[0, 0], [100, 0], [100, 80], [0, 80]]
size = [100, 80]

[output]
print = true
socket = { path = "s.sock", queue_frames = 8, max_clients = 2 }
""")


def models():
    save("model", "tiny_yolov8", b"\x00" + tiny_yolov8.model().SerializeToString())
    # Shapes the loader must refuse: wrong rank, symbolic size, a graph with no nodes.
    for name, shape in [("rank2", [1, 3]), ("symbolic", [1, 3, "h", "w"])]:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], name, [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        save("model", name, b"\x01" + m.SerializeToString())
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    k = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "k")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Resize", ["c", "", "s"], ["y"], mode="nearest")],
        "conv_resize", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [k, numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    save("model", "conv_resize", b"\x00" + m.SerializeToString())


def bundles():
    # A bundle signed by the key the target trusts, a truncated copy, one with a payload byte
    # flipped (its sha256 then differs).
    valid = (ROOT.parent / "tests" / "bundle" / "valid.bundle").read_bytes()
    save("bundle", "valid", valid)
    save("bundle", "truncated", valid[: len(valid) // 2])
    flipped = bytearray(valid)
    flipped[valid.index(b"Stands in")] ^= 1
    save("bundle", "flipped", bytes(flipped))


def socket_scripts():
    # Ops: 0 write, 1 publish, 2 read, 3 half-close; each followed by a length and its bytes.
    save("socket_client", "write", b"\x00\x05hello\x01\x02{}\x02\x40")
    save("socket_client", "flood", (b"\x00\xff" + bytes(255)) * 40 + b"\x01\x01x" * 100)
    save("socket_client", "halfclose", b"\x03\x00\x01\x02{}\x02\x10")


if __name__ == "__main__":
    rng = np.random.default_rng(1)
    jpegs(rng)
    image_files(rng)
    raw_frames()
    configs()
    models()
    socket_scripts()
    bundles()
