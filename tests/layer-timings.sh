#!/usr/bin/env bash
# Board timings end to end: the aarch64 `ocelli profile-layers` (under qemu-user as a Cortex-A72)
# writes a table that the host's `ocelli-compress quantize --layer-timings` chooses forms from.
# qemu's times mean nothing: this checks the plumbing and the choice, not speed.
#
# usage: tests/layer-timings.sh AARCH64_OCELLI
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=$root/models/cache/yunet_n_320_320.onnx
cat > "$work/board.toml" <<TOML
[board]
name = "a72"
target = "aarch64-unknown-linux-gnu"
tract_cpu = "cortex_a72"
threads = 1

[source]
kind = "synthetic"

[[detector]]
name = "faces"
model = "$model"
family = "yunet"
labels = "face"
preprocess = { resize = "letterbox", pad = "top-left", pad_value = 0, channels = "bgr" }
decode = { score_threshold = 0.6, nms_iou = 0.3 }
TOML
QEMU_CPU=cortex-a72 "$root/cross/qemu-user.sh" "$binary" profile-layers "$work/board.toml" \
  --out "$work/layers.json" --rounds 1 2> "$work/profile.log" ||
  { cat "$work/profile.log" >&2; exit 1; }
cargo run -q -p ocelli-compress -- quantize "$model" "$work/int8.onnx" \
  --calib "$root/target/fixtures/compress/calib" --config "$work/board.toml" \
  --layer-timings "$work/layers.json" --json > "$work/report.json" 2> "$work/quantize.log" ||
  { cat "$work/quantize.log" >&2; exit 1; }
python3 - "$work/layers.json" "$work/report.json" <<'PY'
import json, sys
table, report = (json.load(open(p)) for p in sys.argv[1:])
def fail(why):
    sys.exit(f"layer-timings: {why}")
if table["cpu"]["arch"] != "aarch64" or table["cpu"]["kind"] != "CortexA72":
    fail(f"the table's CPU is {table['cpu']}, expected aarch64 CortexA72")
used = report["timings"] or fail("the report names no table: the board's CPU was not recognised")
if (used["from_table"], used["timed_here"]) != (len(table["layers"]), 0):
    fail(f"{used['from_table']} shapes from the table and {used['timed_here']} timed here, "
         f"expected all {len(table['layers'])} from the table")
# The choice follows the board's times: each layer has its shape's times from the table (to
# the float parser's last bit), and is ConvInteger only where int8 was faster there.
def same(a, b):
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
for l in report["layers"]:
    t = next((t["times"] for t in table["layers"]
              if t["shape"]["weight"] == l["weight_shape"] and t["shape"]["input"] == l["input_shape"]
              and same(t["times"]["float_ms"], l["float_ms"]) and same(t["times"]["int8_ms"], l["int8_ms"])), None)
    if t is None:
        fail(f"{l['output']}: timings {l['float_ms']}/{l['int8_ms']} are none of the table's for its shape")
    if l["form"] == "ConvInteger" and not (t["int8_median_faster"] and t["float_ms"] >= 1.05 * t["int8_ms"]):
        fail(f"{l['output']}: ConvInteger although int8 was not faster on the board: {t}")
print(f"layer-timings: {len(table['layers'])} shapes timed as aarch64 CortexA72, "
      f"{sum(l['form'] == 'ConvInteger' for l in report['layers'])} ConvInteger layer(s) chosen from them")
PY
