"""Real-time factor of the running twin (`robosac twin CONFIG`) while it serves its camera.

For each robot: start the twin as robosac users do (subprocess), read its camera stream with
cv2.VideoCapture for --seconds (the client a robot env would run), and optionally drive the bus
at --bus-hz with the real dynamixel_sdk (one sync write of goal positions + one sync read of
present positions per cycle, like the control loop). Then SIGINT the twin and take its own
report (`twin stats: {...}` on stderr): real-time factor, overruns, dropped time, frames rendered.
Prints one JSON object.

    MUJOCO_GL=egl .venv/bin/python benchmarks/twin_realtime.py [--seconds 20] [--fps 30] [--bus-hz 20]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROBOTS = {"claw": "hardware_configs/claw.yaml", "quadruped": "hardware_configs/quadruped.yaml"}


def _bus_client(serial: str, cfg, hz: float, stop: threading.Event, out: dict) -> None:
    from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

    port = PortHandler(serial)
    port.openPort()
    port.setBaudRate(cfg.bus.baud)
    ph = PacketHandler(2.0)
    ids = [s.id for s in cfg.servos]
    mids = {s.id: 0.5 * (max(s.limits.min_rad, -1.0) + min(s.limits.max_rad, 1.0)) for s in cfg.servos}
    sr = GroupSyncRead(port, ph, 132, 4)
    for i in ids:
        sr.addParam(i)
    ok = fail = 0
    for i in ids:
        ph.write1ByteTxRx(port, i, 64, 1)
    t0 = time.perf_counter()
    k = 0
    while not stop.is_set():
        k += 1
        sw = GroupSyncWrite(port, ph, 116, 4)
        for s in cfg.servos:
            q = mids[s.id] + 0.2 * math.sin(2 * math.pi * 0.5 * k / hz)
            ticks = int(round(2048 + (s.calibration.sign * q + s.calibration.offset_rad) * 4096 / (2 * math.pi)))
            sw.addParam(s.id, list(ticks.to_bytes(4, "little", signed=True)))
        sw.txPacket()
        if sr.txRxPacket() == COMM_SUCCESS:
            ok += 1
        else:
            fail += 1
        pause = t0 + k / hz - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    port.closePort()
    out.update(bus_cycles_ok=ok, bus_cycles_failed=fail)


def run(config: str, seconds: float, fps: float, size: str | None, bus_hz: float) -> dict:
    from robosac.config import load_config

    cfg = load_config(ROOT / config)
    err = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "robosac.cli", "twin", config, "--camera-fps", str(fps), "--report-s", "0"]
    if size:
        cmd += ["--camera-size", size]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    lines: dict[str, str] = {}
    while "state" not in lines:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(Path(err.name).read_text())
        k, _, v = line.partition(": ")
        lines.setdefault(k, v.strip())
    stop = threading.Event()
    bus: dict = {}
    th = None
    if bus_hz > 0:
        th = threading.Thread(target=_bus_client, args=(lines["serial"], cfg, bus_hz, stop, bus), daemon=True)
        th.start()
    cap = cv2.VideoCapture(lines["camera"])
    got, shape = 0, None
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ok, frame = cap.read()
        if ok:
            got += 1
            shape = frame.shape
    client_s = time.perf_counter() - t0
    cap.release()
    stop.set()
    if th:
        th.join(timeout=5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    log = Path(err.name).read_text()
    os.unlink(err.name)
    stats = json.loads(log.split("twin stats: ", 1)[1].splitlines()[0])
    clock = stats["clock"]
    cam = next(iter(stats["cameras"].values()))
    return {
        "camera": lines["camera"].rsplit("/", 1)[1],
        "frame_shape": list(shape) if shape else None,
        "camera_fps_target": fps,
        "client_frames_per_s": got / client_s,
        "served_frames_per_s": cam["fps"],
        "late_frames": cam["late"],
        "render_encode_ms": cam["render_ms"],
        "rtf": clock["rtf"],
        "overruns": clock["overruns"],
        "dropped_s": clock["dropped_s"],
        "worst_lag_ms": 1000 * clock["max_lag_s"],
        "sim_time_s": clock["sim_time_s"],
        "wall_time_s": clock["wall_time_s"],
        "bus_hz": bus_hz,
        **bus,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the camera client reads (s)")
    ap.add_argument("--fps", type=float, default=30.0, help="camera rate (frames/s)")
    ap.add_argument("--camera-size", default=None, help="WxH (default: the config's camera size)")
    ap.add_argument("--bus-hz", type=float, default=20.0, help="SDK control-loop rate during the run (0 = no bus traffic)")
    ap.add_argument("--robots", nargs="+", default=list(ROBOTS), choices=list(ROBOTS))
    args = ap.parse_args()
    res = {
        "benchmark": "twin_realtime",
        "command": "MUJOCO_GL=egl .venv/bin/python benchmarks/twin_realtime.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_at_start": os.getloadavg()[0],
        "robots": {r: run(ROBOTS[r], args.seconds, args.fps, args.camera_size, args.bus_hz) for r in args.robots},
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
