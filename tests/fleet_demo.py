#!/usr/bin/env python3
"""A fleet of three devices updated over MQTT (`just fleet-demo`, docs/fleet.md).

usage: python3 tests/fleet_demo.py OCELLI OCELLI_COMPRESS

Starts a mosquitto on loopback and three `ocelli run` devices (cam-1, cam-2, cam-3) on the
reference photos, looping, running UltraFace slim. Then publishes on the fleet topic:

1. a good bundle (version 1: UltraFace RFB): all three switch to it;
2. a bad one (version 2, a byte of its model changed after signing): all three refuse it;
3. one that loads but is far slower (version 3: YOLOv8n at 640): all three roll back.

After each, it prints every device's retained status and checks the outcome; exit status 1 if
one is not the expected one. Everything goes to target/fleet-demo.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "models", "cache")
OUT = os.path.join(ROOT, "target", "fleet-demo")
DEVICES = ["cam-1", "cam-2", "cam-3"]
DETECTOR = '[[detector]]\nmodel = "{model}"\nfamily = "{family}"\nlabels = "{labels}"\n{extra}\n'
BASE = ("ultraface_version-slim-320.onnx", "ssd", "face",
        'preprocess = { resize = "stretch", channels = "rgb", mean = [127, 127, 127], '
        'std = [128, 128, 128] }')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def bundle(compress, key, version, model, family, labels, extra=""):
    """Signs a bundle of `model` (from models/cache) with its fragment; returns its path."""
    fragment = os.path.join(OUT, f"detectors-{version}.toml")
    with open(fragment, "w") as f:
        f.write(DETECTOR.format(model=model, family=family, labels=labels, extra=extra))
    out = os.path.join(OUT, f"update-{version}.bundle")
    run(compress, "bundle", "--key", key, "--version", str(version), "--config", fragment,
        "--out", out, os.path.join(CACHE, model))
    return out


def config(name, port, key):
    model, family, labels, extra = BASE
    text = (f'[source]\nkind = "images"\npath = "{CACHE}/images"\nloop = true\n\n'
            + DETECTOR.format(model=os.path.join(CACHE, model), family=family, labels=labels,
                              extra=extra)
            + f'\n[output.mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice = "{name}"\n'
            f'stream = "cam"\nspool = {{ dir = "{OUT}/{name}/spool" }}\n\n'
            f'[update]\ntrusted_keys = ["{key}.pub"]\nstate_dir = "{OUT}/{name}/state"\n'
            'mqtt = true\nhealth_frames = 10\nmax_slowdown = 3.0\n')
    path = os.path.join(OUT, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


class Statuses:
    """The devices' retained update statuses, read by mosquitto_sub."""

    def __init__(self, port):
        self.log = os.path.join(OUT, "status.log")
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-v", "-t", "ocelli/+/update/status"],
            stdout=open(self.log, "w"))

    def latest(self):
        found = {}
        with open(self.log) as f:
            for line in f:
                topic, _, payload = line.partition(" ")
                found[topic.split("/")[1]] = json.loads(payload)
        return found

    def wait(self, what, ok, seconds=180):
        deadline = time.time() + seconds
        while time.time() < deadline:
            latest = self.latest()
            if all(d in latest and ok(latest[d]) for d in DEVICES):
                return latest
            time.sleep(0.2)
        sys.exit(f"fleet-demo: timed out waiting for {what}: {json.dumps(self.latest(), indent=1)}")


def show(step, statuses):
    print(f"\n== {step}")
    for d in DEVICES:
        s = statuses[d]
        u = s.get("update") or {}
        print(f"  ocelli/{d}/update/status: running version {s['running']['version']} "
              f"({os.path.basename(s['running']['models'][0]['path'])}, sha256 "
              f"{s['running']['models'][0]['sha256'][:12]}…); last update {u.get('version')}: "
              f"{u.get('outcome')}: {u.get('reason')}")
    print(f"  cam-1's retained status: {json.dumps(statuses['cam-1'])}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ocelli, compress = sys.argv[1:]
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    port = free_port()
    with open(os.path.join(OUT, "mosquitto.conf"), "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
    procs = [subprocess.Popen(["mosquitto", "-c", os.path.join(OUT, "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        key = os.path.join(OUT, "fleet.key")
        run(compress, "keygen", "--out", key)
        rfb = ("ultraface_version-RFB-320.onnx",) + BASE[1:]
        good = bundle(compress, key, 1, *rfb)
        bad = bundle(compress, key, 2, *rfb)
        with open(bad, "r+b") as f:
            f.seek(os.path.getsize(bad) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x55]))
        slow = bundle(compress, key, 3, "yolov8n.onnx", "yolov8", "coco")
        statuses = Statuses(port)
        procs.append(statuses.proc)
        for d in DEVICES:
            os.makedirs(os.path.join(OUT, d))
            procs.append(subprocess.Popen([ocelli, "run", config(d, port, key)],
                                          stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(OUT, f"{d}.log"), "w")))
        show("started", statuses.wait("the devices' first status",
                                      lambda s: s["running"]["version"] == 0))
        # What each step publishes, the outcome and a word of the reason every device reports.
        steps = [
            ("a good bundle (version 1, UltraFace RFB)", good, "applied", "without error"),
            ("a bad bundle (version 2, a byte of its model changed)", bad, "refused", "sha256"),
            ("a bundle failing the health check (version 3, YOLOv8n at 640)", slow,
             "rolled-back", "max_slowdown"),
        ]
        for what, path, outcome, word in steps:
            run("mosquitto_pub", "-p", str(port), "-q", "1", "-t", "ocelli/fleet/update",
                "-f", path)
            done = statuses.wait(what, lambda s: (s.get("update") or {}).get("outcome") == outcome
                                 and word in (s["update"].get("reason") or ""))
            show(f"published {what}: {outcome} on every device", done)
            bad_running = [d for d in DEVICES if done[d]["running"]["version"] != 1]
            if bad_running:
                sys.exit(f"fleet-demo: {bad_running} do not run version 1")
        print("\nfleet-demo: every device switched, refused and rolled back as expected")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
