"""A synchronous SAC loop for Gymnasium envs: act, step, store, update, log, evaluate, save.

The asynchronous robot runtime (fixed-rate collector + learner process) builds on the same agent
and replay; this loop is what `robosac train ENV_ID` runs for plain Gymnasium ids.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from robosac.persist import save_checkpoint
from robosac.sac.perf import keep_freed_memory
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, SACConfig


@dataclass
class TrainConfig:
    """Loop settings; ``sac`` holds the learning hyper-parameters."""

    steps: int = 10_000  # env steps
    seed: int = 0
    learning_starts: int = 1_000  # uniform random actions (and no updates) before this step
    batch_size: int = 256
    updates_per_step: int = 1
    replay_capacity: int = 1_000_000
    eval_episodes: int = 10
    log_every: int = 500  # env steps between training-statistics lines
    torch_threads: int | None = None  # None: leave torch's default
    sac: SACConfig = field(default_factory=SACConfig)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "updates_per_step", "replay_capacity", "eval_episodes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")


def evaluate(agent: SAC, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``episodes`` deterministic-policy episodes."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic=True))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def train(
    make_env: Callable[[], gym.Env],
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train SAC on ``make_env()`` for ``cfg.steps`` env steps; returns the summary dict.

    Writes ``metrics.jsonl`` (one JSON object per line: episodes, training statistics, the final
    evaluation) and ``checkpoint.pt`` (agent incl. optimizers and alpha, written atomically) to
    ``out_dir``.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_freed_memory()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    env, eval_env = make_env(), make_env()
    env.action_space.seed(cfg.seed)
    agent = SAC(env.observation_space, env.action_space, cfg.sac, seed=cfg.seed)
    replay = Replay(agent.spec, env.action_space.shape[0], min(cfg.replay_capacity, cfg.steps), seed=cfg.seed)

    metrics = (out / "metrics.jsonl").open("a", buffering=1)

    def log(kind: str, **values: Any) -> None:
        metrics.write(json.dumps({"kind": kind, "time": time.time(), **values}) + "\n")

    log("config", config=_jsonable(asdict(cfg)))
    obs, _ = env.reset(seed=cfg.seed)
    episode, ep_return, ep_len, last_return = 0, 0.0, 0, float("nan")
    stats: dict[str, float] = {}
    update_time, window_updates, window_time = 0.0, 0, 0.0
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not progress, file=sys.stderr, unit="step", dynamic_ncols=True)
    for step in range(cfg.steps):
        action = env.action_space.sample() if step < cfg.learning_starts else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # Store `terminated` only: a time-limit cut is not a terminal state, so targets bootstrap.
        replay.add(obs, action, float(reward), next_obs, terminated)
        ep_return += float(reward)
        ep_len += 1
        obs = next_obs
        if terminated or truncated:
            log("episode", step=step + 1, episode=episode, ret=ep_return, length=ep_len)
            episode, last_return, ep_return, ep_len = episode + 1, ep_return, 0.0, 0
            obs, _ = env.reset()

        if step + 1 >= cfg.learning_starts:
            t0 = time.perf_counter()
            for _ in range(cfg.updates_per_step):
                stats = agent.update(replay.sample(cfg.batch_size))
            dt = time.perf_counter() - t0
            update_time += dt
            window_time += dt
            window_updates += cfg.updates_per_step

        if (step + 1) % cfg.log_every == 0:
            ups = window_updates / window_time if window_time else 0.0
            log("train", step=step + 1, updates=agent.updates, updates_per_s=ups, **stats)
            window_updates, window_time = 0, 0.0
            bar.set_postfix(ret=f"{last_return:.1f}", alpha=f"{stats.get('alpha', agent.alpha):.3f}", ups=f"{ups:.0f}")
        bar.update(1)
    bar.close()
    train_time = time.perf_counter() - start

    save_checkpoint({"agent": agent.state_dict(), "step": cfg.steps, "train_config": _jsonable(asdict(cfg))}, out / "checkpoint.pt")
    returns = evaluate(agent, eval_env, cfg.eval_episodes, seed=cfg.seed + 1_000_000)
    summary = {
        "steps": cfg.steps,
        "seed": cfg.seed,
        "episodes": episode,
        "updates": agent.updates,
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_episodes": len(returns),
        "updates_per_s": agent.updates / update_time if update_time else 0.0,
        "env_steps_per_s": cfg.steps / train_time,
        "train_wall_s": train_time,
        "out": str(out),
    }
    log("eval", step=cfg.steps, returns=returns, **summary)
    metrics.close()
    env.close()
    eval_env.close()
    return summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
