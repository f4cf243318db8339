"""How long MuJoCo's offscreen renderer keeps other Python threads of the twin's process waiting
(the GIL), with the renderer in a thread of that process (how the twin rendered before) and in the
twin's own `CameraStreamer` render process (how it renders now).

The renderer draws the claw's valve camera at --fps (default 30, the claw camera's rate; 0 = as
fast as it can); the main thread times its own tight loop. A gap in that loop is time the main
thread could not run Python. The twin's serial emulator is such a thread: while a renderer in its
process holds the GIL (and is switched out under load), the emulator waits with it. On an idle
machine both placements show about one long gap in 3 s; run it beside a CPU-bound job (a training
run) to see the difference. Prints one JSON object per placement.

    MUJOCO_GL=egl .venv/bin/python benchmarks/render_gil.py [--size 640x480] [--seconds 3] [--fps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.camera_server import CameraStreamer, FrameSlot  # noqa: E402


def _gaps_ms(seconds: float) -> np.ndarray:
    gaps = []
    last = time.perf_counter()
    end = last + seconds
    while last < end:
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return np.array(gaps) * 1000


def in_thread(model: mujoco.MjModel, w: int, h: int, fps: float, seconds: float) -> tuple[np.ndarray, int, float]:
    data = mujoco.MjData(model)
    ready, stop = threading.Event(), threading.Event()
    render_s: list[float] = []

    def render() -> None:
        r = mujoco.Renderer(model, h, w)
        r.update_scene(data, "valve_cam")
        r.render()  # GL start-up holds the GIL for a long while; not what is measured
        ready.set()
        while not stop.is_set():
            t0 = time.perf_counter()
            r.update_scene(data, "valve_cam")
            r.render()
            render_s.append(time.perf_counter() - t0)
            if fps > 0:
                stop.wait(max(0.0, 1.0 / fps - render_s[-1]))
        r.close()

    th = threading.Thread(target=render)
    th.start()
    ready.wait()
    g = _gaps_ms(seconds)
    stop.set()
    th.join()
    return g, len(render_s), 1000 * float(np.median(render_s))


def in_process(model: mujoco.MjModel, w: int, h: int, fps: float, seconds: float) -> tuple[np.ndarray, int, float]:
    sim = SimpleNamespace(model=model, data=mujoco.MjData(model))
    cam = CameraStreamer(sim, threading.Lock(), "valve_cam", w, h, fps or 1e6, FrameSlot())
    cam.start()
    time.sleep(0.5)  # past GL start-up
    f0 = cam.frames
    g = _gaps_ms(seconds)
    st = cam.stats()
    cam.stop()
    return g, st.frames - f0, st.render_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="WxH (at most the model's offscreen buffer, 640x480)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=30.0, help="frames per second (0 = as fast as it can)")
    args = ap.parse_args()
    if args.fps < 0:
        ap.error(f"--fps must be >= 0 (0 = as fast as it can), got {args.fps}")
    w, h = (int(x) for x in args.size.split("x"))
    model = mujoco.MjModel.from_xml_path(str(ROOT / "sim" / "models" / "claw.xml"))
    for where, fn in (("thread", in_thread), ("process", in_process)):
        g, frames, render_ms = fn(model, w, h, args.fps, args.seconds)
        print(json.dumps({"renderer": where, "size": args.size, "fps": args.fps, "frames": frames, "render_ms_median": round(render_ms, 2),
                          "main_thread_gap_ms_max": round(float(g.max()), 2), "gaps_over_1ms": int((g > 1).sum()),
                          "gaps_over_5ms": int((g > 5).sum()), "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
