"""Soak benchmark: drives a long synthetic run through the `ocelli` binary with a small detector,
annotated frames on and two socket clients (one fast, one too slow to keep up), samples the
process from /proc, writes a CSV and a plot, and checks the long-run bounds after warm-up:
RSS within 2 MB, open descriptors constant, the slow client's queue bounded.

usage: soak.py BINARY [--frames N] [--csv PATH] [--png PATH]
"""

import argparse
import array
import fcntl
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_yolov8  # noqa: E402

QUEUE_FRAMES = 64  # output.socket.queue_frames
RSS_SPREAD_KB = 2048
WARMUP = 0.1  # fraction of the run
SAMPLE_S = 0.5


class Client(threading.Thread):
    """Reads frame lines; `delay_s` after each line makes it a slow client."""

    def __init__(self, path, delay_s):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.delay_s = delay_s
        self.last_id = -1
        self.lines = 0
        self.missed = 0
        self.min_line = 1 << 30

    def run(self):
        for line in self.sock.makefile("rb"):
            msg = json.loads(line)
            self.lines += 1
            if msg["type"] == "frame":
                self.last_id = msg["frame_id"]
                self.min_line = min(self.min_line, len(line))
            elif msg["type"] == "dropped":
                self.missed += msg["frames"]
            if self.delay_s:
                time.sleep(self.delay_s)

    def queued_bytes(self):
        """Bytes waiting in this client's socket (FIONREAD)."""
        n = array.array("i", [0])
        try:
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, n)
        except OSError:
            return 0
        return n[0]


def proc_status(pid, transient):
    """RSS (kB), threads and open descriptors of a live process, None once it has exited. The
    descriptor of a file under `transient` (the annotated frame, open only while written)
    is not counted."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    if fields["State"][0] == "Z":
        return None
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += not os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(transient))
        except FileNotFoundError:
            pass
    return int(fields["VmRSS"][0]), int(fields["Threads"][0]), fds


def soak(binary, frames, csv_path):
    work = pathlib.Path(tempfile.mkdtemp(prefix="ocelli-soak-"))
    model = work / "tiny_yolov8.onnx"
    model.write_bytes(tiny_yolov8.model().SerializeToString())
    sock = work / "s.sock"
    config = work / "soak.toml"
    config.write_text(f"""[source]
kind = "synthetic"
width = 160
height = 120
frames = {frames}

[[detector]]
model = "{model}"
family = "yolov8"
labels = "coco"

[output]
annotated_dir = "{work / 'annotated'}"
socket = {{ path = "{sock}", queue_frames = {QUEUE_FRAMES} }}
""")
    proc = subprocess.Popen([binary, "run", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"ocelli did not start: {proc.stderr.read()}")
        time.sleep(0.05)
    fast, slow = Client(sock, 0), Client(sock, 0.02)
    fast.start()
    slow.start()
    rows = []
    t0 = time.monotonic()
    prev = (t0, 0)
    while proc.poll() is None:
        time.sleep(SAMPLE_S)
        try:
            sample = proc_status(proc.pid, work / "annotated")
        except (FileNotFoundError, ProcessLookupError):
            break
        if sample is None:
            break
        rss, threads, fds = sample
        now, done = time.monotonic(), fast.last_id + 1
        rows.append({
            "t_s": round(now - t0, 2),
            "frames": done,
            "fps": round((done - prev[1]) / (now - prev[0]), 1),
            "rss_kb": rss,
            "fds": fds,
            "threads": threads,
            # How old the slow client's line is: grows with time, not with the queue.
            "slow_behind_frames": max(done - 1 - slow.last_id, 0),
            "slow_queued_bytes": slow.queued_bytes(),
            "slow_missed_frames": slow.missed,
        })
        prev = (now, done)
    stderr = proc.stderr.read()
    status = proc.wait()
    fast.join(5)
    with open(csv_path, "w") as f:
        keys = list(rows[0])
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "\n")
    return rows, status, stderr, fast, slow


def check(rows, status, stderr, fast, slow, frames):
    problems = []
    if status != 0:
        problems.append(f"exit status {status}: {stderr}")
    if fast.last_id != frames - 1:
        problems.append(f"the fast client saw frames up to {fast.last_id}, not {frames - 1}")
    steady = [r for r in rows if r["frames"] >= WARMUP * frames]
    rss = [r["rss_kb"] for r in steady]
    spread = max(rss) - min(rss)
    if spread > RSS_SPREAD_KB:
        problems.append(f"RSS moved {spread} kB after warm-up (limit {RSS_SPREAD_KB} kB)")
    fds = {r["fds"] for r in steady}
    if len(fds) != 1:
        problems.append(f"open descriptors changed after warm-up: {sorted(fds)}")
    # The server keeps at most QUEUE_FRAMES lines and a staging buffer per client (by
    # construction); what waits in the slow client's socket is bounded by the socket buffer.
    wmem = int(pathlib.Path("/proc/sys/net/core/wmem_default").read_text())
    queued = max(r["slow_queued_bytes"] for r in steady)
    if queued > wmem:
        problems.append(f"{queued} bytes queued for the slow client (socket buffer {wmem})")
    if slow.missed == 0:
        problems.append("the slow client never fell behind: it tests nothing")
    fps = [r["fps"] for r in steady if r["fps"] > 0]
    summary = {
        "frames": fast.last_id + 1,
        "seconds": rows[-1]["t_s"],
        "fps_mean": round(sum(fps) / len(fps), 1),
        "rss_kb_min": min(rss),
        "rss_kb_max": max(rss),
        "rss_spread_kb": spread,
        "fds": sorted(fds),
        "slow_queued_bytes_max": queued,
        "socket_buffer_bytes": wmem,
        "slow_queued_lines_max": queued // max(slow.min_line, 1),
        "slow_lines": slow.lines,
        "slow_missed_frames": slow.missed,
    }
    return summary, problems


def plot(rows, png, frames):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, [r["rss_kb"] / 1024 for r in rows])
    axes[0].set_ylabel("RSS (MiB)")
    warm = next((r["t_s"] for r in rows if r["frames"] >= WARMUP * frames), t[0])
    for ax in axes:
        ax.axvline(warm, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[1].plot(t, [r["fps"] for r in rows])
    axes[1].set_ylabel("frames/s")
    axes[2].plot(t, [r["slow_queued_bytes"] / 1024 for r in rows], label="queued for the slow client (KiB)")
    axes[2].plot(t, [r["fds"] for r in rows], label="open fds")
    axes[2].set_xlabel("seconds (dotted: end of warm-up)")
    axes[2].legend(loc="upper right")
    fig.suptitle(f"ocelli soak: {frames} synthetic frames, tiny YOLOv8, 2 socket clients")
    fig.tight_layout()
    fig.savefig(png, dpi=80)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binary")
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--csv", default="docs/soak.csv")
    p.add_argument("--png", default="docs/soak.png")
    a = p.parse_args()
    rows, status, stderr, fast, slow = soak(a.binary, a.frames, a.csv)
    summary, problems = check(rows, status, stderr, fast, slow, a.frames)
    plot(rows, a.png, a.frames)
    print(json.dumps(summary))
    for problem in problems:
        print(f"soak: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
