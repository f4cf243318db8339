"""tools/frame_strip.py: evenly spaced frames of an MP4 (written by robosac's save_video, read
back through cv2.VideoCapture), side by side."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from robosac.runtime.telemetry import save_video

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("frame_strip", ROOT / "tools" / "frame_strip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_strip_picks_evenly_spaced_frames(tmp_path: Path) -> None:
    # Frame k is a flat grey of level 20 * k (RGB), so each tile tells which frame it came from.
    frames = [np.full((64, 64, 3), 20 * k, np.uint8) for k in range(11)]
    video = save_video(frames, tmp_path / "ep.mp4", fps=10)
    strip = _tool().frame_strip(video, frames=3, height_px=32)
    assert strip.shape == (32, 96, 3)
    # Tiles 0, 1, 2 are frames 0, 5, 10; sample below the time label, allowing for MP4 compression.
    levels = [float(np.median(strip[24:, 32 * t + 8: 32 * t + 24])) for t in range(3)]
    assert levels == pytest.approx([0, 100, 200], abs=8)


def test_strip_refuses_too_few_frames_and_a_missing_video(tmp_path: Path) -> None:
    video = save_video([np.zeros((16, 16, 3), np.uint8)] * 2, tmp_path / "short.mp4", fps=10)
    tool = _tool()
    with pytest.raises(ValueError, match="fewer than --frames 5"):
        tool.frame_strip(video, frames=5)
    with pytest.raises(ValueError, match="cannot open"):
        tool.frame_strip(tmp_path / "none.mp4", frames=2)
