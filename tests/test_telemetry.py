"""Telemetry: TensorBoard events readable back, an MP4 that OpenCV can play, the eval video of a
real env, and the learning-curve PNG."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest

import robosac  # noqa: F401
from robosac.runtime.telemetry import Telemetry, evaluate, plot_learning_curve, save_video


def test_tensorboard_scalars_round_trip(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = io.StringIO()
    t = Telemetry(tmp_path, stream=out)
    for step in range(5):
        t.scalars(step, {"loss/critic": 1.0 / (step + 1), "loop/jitter_p99_s": 0.001, "skip": float("nan")})
    text = t.line(4, 10, {"return": -12.5, "upd/s": 210.0})
    t.close()
    assert text == "step 4/10 | return -12.5 | upd/s 210" and out.getvalue().strip() == text
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    assert set(ea.Tags()["scalars"]) == {"loss/critic", "loop/jitter_p99_s"}
    vals = [e.value for e in ea.Scalars("loss/critic")]
    assert vals == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])


def test_video_plays_back_with_opencv(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), (i * 20) % 255, np.uint8) for i in range(12)]
    p = save_video(frames, tmp_path / "v.mp4", fps=10)
    cap = cv2.VideoCapture(str(p))
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        assert f.shape == (48, 64, 3)
        n += 1
    cap.release()
    assert n == 12 and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError):
        save_video([], tmp_path / "empty.mp4", fps=10)


def test_eval_video_of_the_claw(tmp_path: Path) -> None:
    env = gym.make("robosac/ClawValveTurn-v0", backend="sim", render_mode="rgb_array")
    res = evaluate(env, lambda obs: np.zeros(9, np.float32), 2, video_path=tmp_path / "eval.mp4")
    env.close()
    assert len(res["returns"]) == 2 and 0.0 <= res["success_rate"] <= 1.0
    cap = cv2.VideoCapture(res["video"])
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n == env.unwrapped.config.control.max_steps


def test_learning_curve_png(tmp_path: Path) -> None:
    m = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "episode_return": -1000 + s / 10} for s in range(200, 4000, 200)]
    lines += [{"step": s, "eval_return_mean": -900 + s / 8} for s in (1000, 2000, 3000)]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 40")  # last line cut by a crash
    p = plot_learning_curve(m, tmp_path / "curve.png", title="test")
    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 200 and img.std() > 10
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no returns"):
        plot_learning_curve(tmp_path / "empty.jsonl", tmp_path / "x.png")
