"""How long MuJoCo's offscreen renderer keeps other Python threads of its process waiting (the GIL).

One thread renders the claw's MJCF with `mujoco.Renderer` as fast as it can (what the twin's
camera thread does at its frame rate); the main thread times its own tight loop. A gap in the main
thread's loop is time it could not run Python: while the renderer holds the GIL. The twin's serial
emulator is such a thread: if the renderer holds the GIL (or the twin's lock) and is switched out
under load, the emulator waits with it. Prints one JSON object.

    MUJOCO_GL=egl .venv/bin/python benchmarks/render_gil.py [--size 640x480] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480", help="WxH (at most the model's offscreen buffer, 640x480)")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    model = mujoco.MjModel.from_xml_path(str(ROOT / "sim" / "models" / "claw.xml"))
    data = mujoco.MjData(model)
    ready, stop = threading.Event(), threading.Event()
    render_s: list[float] = []

    def render() -> None:
        r = mujoco.Renderer(model, h, w)
        r.update_scene(data)
        r.render()  # GL start-up holds the GIL for a long while; not what is measured
        ready.set()
        while not stop.is_set():
            t0 = time.perf_counter()
            r.update_scene(data)
            r.render()
            render_s.append(time.perf_counter() - t0)
        r.close()

    th = threading.Thread(target=render)
    th.start()
    ready.wait()
    gaps = []
    last = time.perf_counter()
    end = last + args.seconds
    while last < end:
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    stop.set()
    th.join()
    g = np.array(gaps) * 1000
    print(json.dumps({"size": args.size, "frames": len(render_s), "render_ms_median": round(1000 * float(np.median(render_s)), 2),
                      "main_thread_gap_ms_max": round(float(g.max()), 2), "gaps_over_1ms": int((g > 1).sum()),
                      "gaps_over_5ms": int((g > 5).sum()), "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
