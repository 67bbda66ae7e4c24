#!/usr/bin/env python3
"""Judges the console log of the systemd test on the emulated board (cross/qemu-systemd.sh).

usage: python3 tests/qemu/check_systemd.py --schema docs/schema/frame.schema.json [--frames N] LOG

tests/qemu/systemd-test.sh printed `==== ocelli-fact NAME VALUE` observations and, after each
step, the socket lines it read (blocks as in check.py). This checks that the package installed
and started the hardened service, that the installed binary and model find the face on
astronaut.png, that detections streamed after every step, that the watchdog
restarted a stalled pipeline, that broken configs were refused on SIGHUP while the same process
kept streaming, that a signed bundle from the host's broker was applied, that a SIGKILL during the
next one's health check left the first running and the second applied when sent again, that
SIGTERM stopped it cleanly and that a purge left nothing. Prints one line per
check; exit status 1 if any failed.
"""

import argparse
import json
import os
import re
import sys

import jsonschema

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import blocks, check_format  # noqa: E402

FACT = re.compile(r"==== ocelli-fact (\S+) ?(.*)")
PHOTO = re.compile(r"==== ocelli-photo begin\r?\n(.*?)==== ocelli-photo end rc=(\d+)", re.S)
# UltraFace slim's face on astronaut.png (512x512) by its authors' postprocessing on onnxruntime,
# with the qemu-virt preset's preprocessing (tests/reference/detectors.py): the board's must
# overlap it with an IoU of at least 0.9.
FACE = (178.2, 62.4, 272.8, 173.5)
STEPS = ["installed", "restarted", "reload-syntax", "reload-missing-model", "updated",
         "update-killed"]
BROKEN = ["syntax", "missing-model"]


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_photo(text, validator):
    """(passed, detail): the installed package's run on astronaut.png found the face."""
    m = PHOTO.search(text)
    if not m:
        return False, "no complete ocelli-photo block"
    lines, rc = [l for l in m[1].splitlines() if l.strip()], int(m[2])
    frames = [json.loads(l) for l in lines if '"type":"frame"' in l]
    errors = [e.message for f in frames for e in validator.iter_errors(f)]
    faces = [d for f in frames for d in f["detections"] if d["label"] == "face"]
    best = max((iou(d["box"], FACE) for d in faces), default=0.0)
    ok = rc == 0 and len(frames) == 1 and len(faces) == 1 and best >= 0.9 and not errors
    detail = f"exit status {rc}, {len(frames)} frame(s), {len(faces)} face(s)"
    if faces:
        detail += f" at {faces[0]['box']} score {faces[0]['score']:.3f}, IoU {best:.3f} with {list(FACE)}"
    return ok, "; ".join([detail] + errors[:3])


def update_status(facts, name):
    """The update status.json the board printed as fact `name`, or {}."""
    try:
        return json.loads(facts.get(name) or "{}")
    except json.JSONDecodeError:
        return {}


def update_checks(facts):
    """(name, passed, detail) for the fleet update over MQTT."""
    out = []
    for name, claim, version, outcome in [
        ("update_applied", "a signed bundle over MQTT switches the model", 1, "applied"),
        ("update_after_kill", "a SIGKILL during the next update's health check leaves it running",
         1, "interrupted"),
        ("update_again", "the update sent again after the SIGKILL applies", 2, "applied"),
    ]:
        s = update_status(facts, name)
        running, last = s.get("running", {}), s.get("update") or {}
        models = [os.path.basename(m["path"]) for m in running.get("models", [])]
        ok = (running.get("version") == version and last.get("outcome") == outcome
              and models == ["ultraface_version-RFB-320.onnx"])
        out.append((claim, ok, f"running version {running.get('version')} {models}; last update "
                    f"{last.get('version')} {last.get('outcome')}: {last.get('reason')}"))
    pids = (facts.get("update_pids") or "").split()
    out.append(("the killed update's service was restarted", len(pids) == 2 and pids[0] != pids[1],
                f"pid {' -> '.join(pids)}"))
    return out


def checks(facts, streams, photo, validator, want):
    """(name, passed, detail) for every claim the test makes."""
    f = facts.get
    out = [
        ("package installs", f("install_rc") == "0", f"dpkg -i status {f('install_rc')}, {f('install_seconds')} s"),
        ("unit enabled and running", (f("enabled"), f("active")) == ("enabled", "active/running"),
         f"{f('enabled')}, {f('active')}"),
        ("camera in the video group", f("video_group") == "video", f"/dev/video0 group {f('video_group')}"),
        ("socket 0660 for the video group", f("socket_mode") == "660 video", f"socket {f('socket_mode')}"),
        ("runs as its dynamic user", f("user") not in (None, "", "root"), f"user {f('user')}"),
    ]
    out.append(("the packaged model finds the face on astronaut.png", *photo))
    first_ids = {}
    for step in STEPS:
        if step not in streams:
            out.append((f"stream after {step}", False, "no complete block (VM crashed or timed out?)"))
            continue
        errors, summary = check_format(*streams[step], validator, want, None)
        out.append((f"stream after {step}", not errors, "; ".join([summary] + errors[:5])))
        ids = [json.loads(l)["frame_id"] for l in streams[step][0] if '"type":"frame"' in l]
        first_ids[step] = ids[0] if ids else None
    restarts = f("restarts", "")
    out.append((
        "watchdog restarts a stalled pipeline",
        f("watchdog_logged", "0") not in ("", "0") and restarts.isdigit() and int(restarts) >= 1
        and f("restarted_pid") not in (None, "", "0", f("stalled_pid")),
        f"SIGSTOP pid {f('stalled_pid')}: {f('watchdog_logged')} watchdog timeout(s) logged, "
        f"NRestarts={restarts}, new pid {f('restarted_pid')} streaming after {f('restart_seconds')} s",
    ))
    for kind in BROKEN:
        pids = (f(f"reload_{kind}_pid") or "").split()
        last, first = f(f"reload_{kind}_last_id", ""), first_ids.get(f"reload-{kind}")
        carried_on = last.isdigit() and first is not None and first > int(last)
        out.append((
            f"SIGHUP with a {kind} config keeps the old one",
            f(f"reload_{kind}_rc") == "0" and f(f"reload_{kind}_refused") == "1"
            and len(pids) == 2 and pids[0] == pids[1] and carried_on,
            f"reload status {f(f'reload_{kind}_rc')}, {f(f'reload_{kind}_refused')} refusal(s) logged, "
            f"pid {' -> '.join(pids)}, frame ids {last} -> {first}",
        ))
    out += [
        ("SIGHUP with a good config applies it", f("reload_good_applied") == "1",
         f"{f('reload_good_applied')} reload(s) logged"),
        ("no restarts from reloads", f("restarts_after_reloads") == restarts,
         f"NRestarts {restarts} -> {f('restarts_after_reloads')}"),
        # ExecMainCode 1 is CLD_EXITED: the process exited by itself, with status 0.
        ("SIGTERM stops cleanly", f("stop") == "success 1 0" and f("socket_after_stop") == "gone",
         f"result/code/status {f('stop')}, socket {f('socket_after_stop')}"),
        ("purge leaves nothing", f("purge_rc") == "0" and f("after_purge") == "inactive 0",
         f"dpkg --purge status {f('purge_rc')}; unit state and leftovers: {f('after_purge')}"),
    ]
    return out + update_checks(facts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("log")
    args = ap.parse_args()
    with open(args.schema, encoding="utf-8") as fh:
        schema = json.load(fh)
    validator = jsonschema.validators.validator_for(schema)(schema)
    with open(args.log, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    facts = {}
    for line in text.splitlines():
        if m := FACT.fullmatch(line.rstrip("\r")):
            facts[m[1]] = m[2]
    failed = 0
    for name, ok, detail in checks(facts, blocks(text), check_photo(text, validator), validator, args.frames):
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
