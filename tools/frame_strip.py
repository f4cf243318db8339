"""A frame strip (PNG) from an episode video, for the README: N frames evenly spaced, side by side.

    .venv/bin/robosac eval RUN_DIR --episodes 1 --video /tmp/ep.mp4
    .venv/bin/python tools/frame_strip.py /tmp/ep.mp4 --frames 6 --out docs/claw_strip.png

Reads the video with OpenCV (`cv2.VideoCapture`), labels each frame with its time (s), and writes
the strip atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np


def frame_strip(video: str | Path, frames: int, height_px: int = 160) -> np.ndarray:
    """BGR image (height_px, frames * width, 3) of `frames` evenly spaced frames of `video`."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"video: cannot open {video}")
    all_frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        all_frames.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    if len(all_frames) < frames:
        raise ValueError(f"video: {video} has {len(all_frames)} frames, fewer than --frames {frames}")
    picks = np.linspace(0, len(all_frames) - 1, frames).round().astype(int)
    tiles = []
    for i in picks:
        f = all_frames[i]
        f = cv2.resize(f, (round(f.shape[1] * height_px / f.shape[0]), height_px), interpolation=cv2.INTER_AREA)
        cv2.putText(f, f"{i / fps:.1f} s", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(f)
    return np.concatenate(tiles, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--height", type=int, default=160, help="tile height, px")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args()
    if args.frames < 1:
        ap.error(f"--frames: invalid value {args.frames}; allowed: an integer >= 1")
    strip = frame_strip(args.video, args.frames, args.height)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp.png")
    if not cv2.imwrite(str(tmp), strip):
        raise OSError(f"cannot write {tmp}")
    os.replace(tmp, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
