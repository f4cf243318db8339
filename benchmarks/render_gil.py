"""How long MuJoCo's offscreen renderer keeps other Python threads of the twin's process waiting
(the GIL), with the renderer in a thread of that process (how the twin rendered before) and in the
twin's own `CameraStreamer` render process (how it renders now).

The renderer draws the claw's valve camera as fast as it can; the main thread times its own tight
loop. A gap in that loop is time the main thread could not run Python. The twin's serial emulator
is such a thread: while a renderer in its process holds the GIL (and is switched out under load),
the emulator waits with it. Prints one JSON object per placement.

    MUJOCO_GL=egl .venv/bin/python benchmarks/render_gil.py [--size 640x480] [--seconds 3]
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


def in_thread(model: mujoco.MjModel, w: int, h: int, seconds: float) -> tuple[np.ndarray, int, float]:
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
        r.close()

    th = threading.Thread(target=render)
    th.start()
    ready.wait()
    g = _gaps_ms(seconds)
    stop.set()
    th.join()
    return g, len(render_s), 1000 * float(np.median(render_s))


def in_process(model: mujoco.MjModel, w: int, h: int, seconds: float) -> tuple[np.ndarray, int, float]:
    sim = SimpleNamespace(model=model, data=mujoco.MjData(model))
    cam = CameraStreamer(sim, threading.Lock(), "valve_cam", w, h, 1000.0, FrameSlot())  # as fast as it can
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
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    model = mujoco.MjModel.from_xml_path(str(ROOT / "sim" / "models" / "claw.xml"))
    for where, fn in (("thread", in_thread), ("process", in_process)):
        g, frames, render_ms = fn(model, w, h, args.seconds)
        print(json.dumps({"renderer": where, "size": args.size, "frames": frames, "render_ms_median": round(render_ms, 2),
                          "main_thread_gap_ms_max": round(float(g.max()), 2), "gaps_over_1ms": int((g > 1).sum()),
                          "gaps_over_5ms": int((g > 5).sum()), "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
