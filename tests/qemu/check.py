#!/usr/bin/env python3
"""Checks the console log of the emulated camera test (cross/qemu-camera.sh).

usage: python3 tests/qemu/check.py --schema docs/schema/frame.schema.json [--frames N]
                                   [--size WxH] CONSOLE_LOG FORMAT...

For every FORMAT, the VM's /init (tests/qemu/init.sh) printed the JSON lines a socket client
received between `==== ocelli-frames FORMAT begin` and `==== ocelli-frames FORMAT end client=RC
run=RC`; the `reconnect` block streamed YUYV through a camera loss. Each block must have: both
exit statuses 0; at least N lines, every one valid against the schema; N frame lines (no client
fell behind) of the requested size on which the
detector ran; frame ids rising by one and capture timestamps rising; the format the camera agreed
to (`ocelli: source` in the run's log before the block) the one asked for, and every frame of its
size. The `reconnect` block must
also report the loss with `source` notices and carry frames before and after it, the first after
it with reconnects 1 and a source_restored event. The `==== ocelli-record` line must show
`ocelli record` exiting 0 with three PNG files of the expected size. Prints one summary line per block;
exit status 1 names every failure.
"""

import argparse
import json
import re
import sys

import jsonschema

END = re.compile(r"==== ocelli-frames (\S+) end client=(\d+) run=(\d+)")
# `ocelli run` logs what the camera agreed to, on opening and on reopening it.
SOURCE = re.compile(r"\s*ocelli: source (\S+) (\d+)x(\d+) (\S{4})")


def blocks(log):
    """{format: (lines, client_rc, run_rc)} from the console text."""
    found, current, lines = {}, None, []
    for raw in log.splitlines():
        line = raw.rstrip("\r")
        if line.startswith("==== ocelli-frames ") and line.endswith(" begin"):
            current, lines = line.split()[2], []
        elif current and (m := END.fullmatch(line)):
            found[m[1]] = (lines, int(m[2]), int(m[3]))
            current = None
        elif current:
            lines.append(line)
    return found


def negotiated(log):
    """{format: (width, height, fourcc)}: the last format the camera agreed to before each block
    (init.sh prints a run's stderr before its block)."""
    found, last = {}, None
    for raw in log.splitlines():
        line = raw.rstrip("\r")
        if m := SOURCE.fullmatch(line):
            last = (int(m[2]), int(m[3]), m[4])
        elif line.startswith("==== ocelli-frames ") and line.endswith(" begin"):
            found[line.split()[2]], last = last, None
    return found


def check_negotiated(lines, agreed, fourcc):
    """The failures of a stream against what its camera agreed to: the format asked for, and
    every frame of the agreed size."""
    if agreed is None:
        return ["no `ocelli: source` line before the block: the negotiated format is unknown"]
    width, height, got = agreed
    errors = [] if got == fourcc else [f"the camera agreed to {got}, not the {fourcc} asked for"]
    sizes = set()
    for line in lines:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue  # reported by check_format
        if msg.get("type") == "frame":
            sizes.add((msg["width"], msg["height"]))
    if sizes - {(width, height)}:
        errors.append(f"frame sizes {sorted(sizes)}, the camera agreed to {width}x{height}")
    return errors


def schema_errors(validator, msg):
    """Readable schema violations of one line. A failed oneOf lists every branch's complaints:
    keep those of the branch for the line's own type, the one that does not reject its `type`."""
    out = []
    for e in validator.iter_errors(msg):
        branches = {}
        for c in e.context or []:
            branches.setdefault(c.relative_schema_path[0], []).append(c)
        own = [b for b in branches.values() if all(list(c.absolute_path) != ["type"] for c in b)]
        for c in own[0] if len(own) == 1 else [e]:
            out.append(f"/{'/'.join(map(str, c.absolute_path))}: {c.message[:200]}")
    return out


def check_format(lines, client_rc, run_rc, validator, want, size):
    """The failures of one format's stream, and a summary of it."""
    errors = []
    if client_rc != 0:
        errors.append(f"the socket client exited {client_rc}")
    if run_rc != 0:
        errors.append(f"ocelli run exited {run_rc}")
    frames = []
    for n, line in enumerate(lines, 1):
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"line {n} is not JSON ({e}): {line[:120]!r}")
            continue
        errors += [f"line {n} breaks the schema: {m}" for m in schema_errors(validator, msg)]
        if msg.get("type") == "frame":
            frames.append(msg)
    if len(frames) < want:
        errors.append(f"{len(frames)} frame lines, expected {want}")
    first = lines[0] if lines else ""
    if '"type":"models"' not in first or '"sha256":"' not in first:
        errors.append(f"the first line does not name the models run: {first[:120]!r}")
    ids = [f["frame_id"] for f in frames]
    stamps = [f["timestamp_us"] for f in frames]
    gaps = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
    if gaps:
        errors.append(f"frame ids do not rise by one: {gaps[:5]}")
    backwards = [(a, b) for a, b in zip(stamps, stamps[1:]) if b <= a]
    if backwards:
        errors.append(f"timestamps do not rise: {backwards[:5]}")
    sizes = {(f["width"], f["height"]) for f in frames}
    if size and sizes != {size}:
        errors.append(f"frame sizes {sorted(sizes)}, expected {size[0]}x{size[1]}")
    not_ran = sum(f["inference"] != "ran" for f in frames)
    if not_ran:
        errors.append(f"the detector did not run on {not_ran} frame(s)")
    summary = "no frames"
    if frames:
        infer = sorted(f["latency_us"]["inference"] for f in frames)
        span = (stamps[-1] - stamps[0]) / 1e6
        rate = (len(frames) - 1) / span if span > 0 else float("inf")
        summary = (
            f"{len(frames)} frames, ids {ids[0]}..{ids[-1]}, {rate:.1f} fps delivered, "
            f"inference median {infer[len(infer) // 2] / 1000:.0f} ms, "
            f"{sum(len(f['detections']) for f in frames)} detections"
        )
    return errors, summary


def check_reconnect(lines):
    """The failures of the `reconnect` block beyond those of any stream: the loss is reported,
    and frames come before it and after it from the reopened device."""
    msgs = []
    for line in lines:
        try:
            msgs.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # reported by check_format
    notices = [i for i, m in enumerate(msgs) if m.get("type") == "source"]
    if not notices:
        return ["no `source` notice: the camera loss was not reported"]
    errors = []
    if msgs[notices[0]]["state"] != "lost":
        errors.append(f"the first notice is {msgs[notices[0]]['state']!r}, expected 'lost'")
    if len(notices) < 2:
        errors.append("a single `source` notice: no reopening failed while the driver was away")
    before = [m for m in msgs[: notices[0]] if m.get("type") == "frame"]
    after = [m for m in msgs[notices[-1] :] if m.get("type") == "frame"]
    if not before:
        errors.append("no frame before the loss")
    if not after:
        errors.append("no frame after the camera came back")
    elif after[0].get("source_status", {}).get("reconnects") != 1:
        errors.append(f"the first frame after the loss has source_status {after[0].get('source_status')}, expected reconnects 1")
    elif "source_restored" not in [e["type"] for e in after[0].get("events", [])]:
        errors.append(f"the first frame after the loss has events {after[0].get('events')}, expected source_restored")
    return errors


RECORD = re.compile(r"==== ocelli-record rc=(\d+) png=(\d+) ihdr=([\d ]*)")


def check_record(log, size):
    """The failures of `ocelli record` on the camera: exit status 0, three PNG files, of the
    camera's size when one is expected."""
    m = RECORD.search(log)
    if not m:
        return ["no `==== ocelli-record` line (VM crashed or timed out?)"], "not run"
    rc, pngs = int(m[1]), int(m[2])
    ihdr = [int(b) for b in m[3].split()]
    errors = []
    if rc != 0:
        errors.append(f"ocelli record exited {rc}")
    if pngs != 3:
        errors.append(f"{pngs} PNG file(s), expected 3")
    found = None
    if len(ihdr) == 8:
        found = (int.from_bytes(bytes(ihdr[:4]), "big"), int.from_bytes(bytes(ihdr[4:]), "big"))
    if size and found != size:
        errors.append(f"first PNG is {found}, expected {size[0]}x{size[1]}")
    return errors, f"{pngs} PNG file(s), the first {found[0]}x{found[1]}" if found else f"{pngs} PNG file(s)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", help="expected frame size, WxH")
    ap.add_argument("log")
    ap.add_argument("formats", nargs="+")
    args = ap.parse_args()
    with open(args.schema, encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    with open(args.log, encoding="utf-8", errors="replace") as f:
        log = f.read()
    found, agreed = blocks(log), negotiated(log)

    failures = 0
    errors, summary = check_record(log, size)
    print(f"record: {'FAIL' if errors else 'ok'}: {summary}")
    for e in errors:
        print(f"    {e}")
    failures += bool(errors)
    for fmt in args.formats:
        if fmt not in found:
            print(f"{fmt}: FAIL: no complete stream in {args.log} (VM crashed or timed out?)")
            failures += 1
            continue
        errors, summary = check_format(*found[fmt], validator, args.frames, size)
        # The reconnect block streams the preset's format, YUYV.
        errors += check_negotiated(found[fmt][0], agreed.get(fmt), "YUYV" if fmt == "reconnect" else fmt)
        if fmt == "reconnect":
            errors += check_reconnect(found[fmt][0])
        print(f"{fmt}: {'FAIL' if errors else 'ok'}: {summary}")
        for e in errors[:20]:
            print(f"    {e}")
        failures += bool(errors)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
