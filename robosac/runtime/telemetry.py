"""What a run shows while and after it trains: TensorBoard scalars, a live progress line, evaluation
videos (MP4) and a learning-curve PNG.

- `Telemetry(run_dir)`: `scalars(step, {"return": ..., "loop/jitter_p99_s": ...})` writes TensorBoard
  events under run_dir/tb (`tensorboard --logdir run_dir/tb`); `line(step, total, figures)` is the
  one-line terminal status.
- `save_video(frames, path, fps)`: RGB frames (H, W, 3) uint8 -> MP4 (cv2.VideoWriter, mp4v), written
  to a temporary name and renamed, so a crash never leaves a half file under the final name.
- `evaluate(env, act, episodes, video_path=None, render=None)`: deterministic episodes; with a path, the frames of
  the first episode (env.render(), render_mode="rgb_array") become a video.
- `plot_learning_curve(metrics_jsonl, png_path)`: evaluation return (and training return) against env
  steps from the run's metrics.jsonl (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["Telemetry", "save_video", "evaluate", "plot_learning_curve"]


class Telemetry:
    def __init__(self, run_dir: str | Path, stream: Any = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.stream = stream if stream is not None else sys.stderr

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One TensorBoard scalar per finite value (tags as given, e.g. "loss/critic")."""
        for k, v in values.items():
            if v is not None and isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)):
                self.writer.add_scalar(k, float(v), step)

    def line(self, step: int, total: int | None, figures: dict[str, float]) -> str:
        """Print and return the live status line, e.g. `step 1200/10000 | return -512.3 | upd/s 210`."""
        head = f"step {step}" + (f"/{total}" if total else "")
        parts = [head] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()]
        text = " | ".join(parts)
        end = "\r" if getattr(self.stream, "isatty", lambda: False)() else "\n"
        print(text, end=end, file=self.stream, flush=True)
        return text

    def close(self) -> None:
        self.writer.close()


def save_video(frames: Iterable[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write RGB uint8 frames to an MP4 file atomically; returns the path. Raises ValueError on no frames."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    writer = None
    n = 0
    try:
        for f in frames:
            f = np.asarray(f)
            if writer is None:
                h, w = f.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"cv2.VideoWriter could not open {tmp} (mp4v)")
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("save_video: no frames")
    os.replace(tmp, path)
    return path


def evaluate(
    env: Any,
    act: Callable[[Any], np.ndarray],
    episodes: int,
    *,
    seed: int = 10_000,
    video_path: str | Path | None = None,
    render: Callable[[], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes with `act` (deterministic policy); returns returns, success rate and
    scores (the last step's info["success"] and info["score"], as ROBEL scores them: the claw's
    -|error| rad, the quadruped's forward progress m), the fraction of episodes that ended
    terminated (the quadruped fell) and the video path. Frames come from `render` (default
    env.render(): the env must have render_mode="rgb_array")."""
    render = render or env.render
    returns, successes, scores, terminated, frames = [], [], [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, success, score, term = False, 0.0, False, float("nan"), False
        while not done:
            if video_path is not None and i == 0:
                frames.append(render())
            obs, r, term, trunc, info = env.step(act(obs))
            total += float(r)
            success = bool(info.get("success", False))
            score = float(info.get("score", float("nan")))
            done = term or trunc
        returns.append(total)
        successes.append(success)
        scores.append(score)
        terminated.append(bool(term))
    out: dict[str, Any] = {"returns": returns, "return_mean": float(np.mean(returns)), "success_rate": float(np.mean(successes)),
                           "scores": scores, "score_mean": float(np.mean(scores)), "terminated": terminated,
                           "terminated_rate": float(np.mean(terminated))}
    if video_path is not None and frames:
        fps = env.metadata.get("render_fps") or 10
        out["video"] = str(save_video(frames, video_path, fps))
    return out


def plot_learning_curve(metrics_jsonl: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Evaluation and training returns against env steps, from metrics.jsonl lines that carry
    "step" and "eval_return_mean" and/or "episode_return". Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev, tr = [], []
    for line in Path(metrics_jsonl).read_text().splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if "step" not in m:
            continue
        if m.get("eval_return_mean") is not None:
            ev.append((m["step"], m["eval_return_mean"]))
        ret = m.get("episode_return", m.get("ret") if m.get("kind") == "episode" else None)
        if ret is not None:
            tr.append((m["step"], ret))
    if not ev and not tr:
        raise ValueError(f"{metrics_jsonl}: no returns to plot")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if tr:
        x, y = zip(*tr)
        ax.plot(x, y, ".", alpha=0.35, label="training episodes")
    if ev:
        x, y = zip(*ev)
        ax.plot(x, y, "o-", label="evaluation (deterministic)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
