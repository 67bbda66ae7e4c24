"""Tiles the snapshots of the astronaut, chelsea and coffee frames into docs/snapshot.png.

usage: python3 docs/snapshot.py SNAPSHOT_DIR OUT.png (run by `just snapshot`)
Snapshots are named snap-<µs>-<frame id>.png; the demo photos come in name order, so frames
0, 2 and 3 are astronaut.png, chelsea.png and coffee.png.
"""

import pathlib
import sys

import cv2
import numpy as np

FRAMES = (0, 2, 3)
HEIGHT = 300

snaps = {int(p.stem.split("-")[2]): p for p in pathlib.Path(sys.argv[1]).glob("snap-*.png")}
missing = [f for f in FRAMES if f not in snaps]
if missing:
    sys.exit(f"no snapshot of frame(s) {missing} in {sys.argv[1]}: {sorted(snaps)}")
tiles = []
for f in FRAMES:
    img = cv2.imread(str(snaps[f]))
    width = round(img.shape[1] * HEIGHT / img.shape[0])
    tiles.append(cv2.resize(img, (width, HEIGHT), interpolation=cv2.INTER_AREA))
    tiles.append(np.full((HEIGHT, 4, 3), 255, np.uint8))
sheet = np.hstack(tiles[:-1])
# 32 levels a channel: the PNG stays small, the annotations stay legible.
cv2.imwrite(sys.argv[2], sheet & 0xF8, [cv2.IMWRITE_PNG_COMPRESSION, 9])
print(f"{sys.argv[2]}: {sheet.shape[1]}x{sheet.shape[0]}, {pathlib.Path(sys.argv[2]).stat().st_size} bytes")
