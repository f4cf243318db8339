"""A synchronous SAC loop for Gymnasium envs: act, step, store, update, log, evaluate, save.

The asynchronous robot runtime (fixed-rate collector + learner process) builds on the same agent
and replay; this loop is what `robosac train ENV_ID` runs for plain Gymnasium ids.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from robosac.persist import CheckpointError, JsonLines, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from robosac.runtime.replay_store import ReplayStore, ReplayStoreError
from robosac.sac.perf import tune_learner_process
from robosac.sac.replay import Replay
from robosac.sac.config import TrainConfig
from robosac.sac.sac import SAC


def evaluate(agent: SAC, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``episodes`` deterministic-policy episodes (seeds seed, seed+1, ...)."""
    from robosac.runtime.telemetry import evaluate as run_episodes

    return run_episodes(env, lambda obs: agent.act(obs, deterministic=True), episodes, seed=seed)["returns"]


class ResumeError(ValueError):
    """A run cannot be resumed: no checkpoint, or one (or replay chunks) that does not fit this run."""


# TrainConfig fields a resumed run may change; everything else must equal the checkpoint's. The SAC
# settings ("sac") are the agent's to check (SAC.load_state_dict), so the rule lives in one place.
RESUMABLE_CHANGES = ("sac", "steps", "eval_episodes", "log_every", "torch_threads", "checkpoint_every",
                     "replay_flush_every", "replay_flush_interval_s")


def train(
    make_env: Callable[[], gym.Env],
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train SAC on ``make_env()`` until ``cfg.steps`` env steps in total; returns the summary dict.

    Writes to ``out_dir``: ``metrics.jsonl`` (appended; one JSON object per line: config, episodes,
    training statistics, checkpoints, resumes, the final evaluation), ``replay/chunk_*.npz`` (every
    transition, flushed atomically every ``cfg.replay_flush_every`` transitions or
    ``cfg.replay_flush_interval_s`` seconds) and ``checkpoint.pt`` (agent incl. optimizers and
    alpha, RNG states, loop counters, config; written atomically every ``cfg.checkpoint_every``
    env steps, after a replay flush, and at the end).

    ``resume=True`` continues the run in ``out_dir`` (e.g. after ``kill -9``): the agent and RNG
    states come from the checkpoint, the replay from the chunks — all of them, so transitions
    flushed after the last checkpoint are kept and counted: the env-step counter continues from the
    last transition on disk, while the agent's updates since the checkpoint are lost. The
    interrupted episode is not continued (an env cannot be saved): resume starts a fresh episode,
    and the episode counter counts the cut one too. Raises :class:`ResumeError` if there is
    nothing to resume or it does not fit (other spaces or settings, corrupt files); a fresh run
    refuses a directory that already holds one.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, replay_dir = out / "checkpoint.pt", out / "replay"
    tune_learner_process()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    env, eval_env = make_env(), make_env()
    env.action_space.seed(cfg.seed)
    agent = SAC(env.observation_space, env.action_space, cfg.sac, seed=cfg.seed)
    replay = Replay(agent.spec, env.action_space.shape[0], min(cfg.replay_capacity, cfg.steps), seed=cfg.seed)
    store = ReplayStore.for_replay(replay_dir, replay, flush_every=cfg.replay_flush_every,
                                   flush_interval_s=cfg.replay_flush_interval_s, keep_last=replay.capacity)
    spaces = {"observation": str(env.observation_space), "action": str(env.action_space)}
    generators = {"replay": replay.rng, "action_space": env.action_space.np_random}

    start_step, episode, resumed = 0, 0, None
    if resume:
        resumed = _resume(ckpt_path, store, agent, replay, cfg, spaces, generators)
        start_step, episode = resumed["step"], resumed["episode"]
    elif ckpt_path.exists() or store.chunk_paths():
        raise ResumeError(f"{out} already holds a run (checkpoint.pt or replay chunks): pass --resume to continue it, or choose another --out")

    metrics = JsonLines(out / "metrics.jsonl")  # drops a last line a kill -9 cut short
    log = metrics.write

    def checkpoint(step: int) -> None:
        store.flush()  # the checkpoint never refers to transitions that are not on disk
        save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "agent": agent.state_dict(),
            "step": step,
            "loop": {"step": step, "episode": episode, "updates": agent.updates},
            "rng": capture_rng_state(generators),
            "spaces": spaces,
            "train_config": _jsonable(asdict(cfg)),
        }, ckpt_path)

    if resumed is None:
        log("config", config=_jsonable(asdict(cfg)))
    else:
        log("resume", step=start_step, **{k: v for k, v in resumed.items() if k != "step"}, config=_jsonable(asdict(cfg)))
    # A resumed run starts a fresh episode, seeded apart from the episodes before the crash.
    obs, _ = env.reset(seed=cfg.seed + start_step)
    ep_return, ep_len, last_return = 0.0, 0, float("nan")
    stats: dict[str, float] = {}
    update_time, window_updates, window_time = 0.0, 0, 0.0
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=min(start_step, cfg.steps), disable=not progress, file=sys.stderr, unit="step", dynamic_ncols=True)
    for step in range(start_step, cfg.steps):
        action = env.action_space.sample() if step < cfg.learning_starts else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        # Store `terminated` only: a time-limit cut is not a terminal state, so targets bootstrap.
        slot = replay.add(obs, action, float(reward), next_obs, terminated)
        store.append({k: v[slot] for k, v in replay.arrays.items()}, step=step, episode=episode, episode_end=terminated or truncated)
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
                stats = agent.update(agent.sample(replay, cfg.batch_size))
            dt = time.perf_counter() - t0
            update_time += dt
            window_time += dt
            window_updates += cfg.updates_per_step

        if (step + 1) % cfg.log_every == 0:
            ups = window_updates / window_time if window_time else 0.0
            log("train", step=step + 1, updates=agent.updates, updates_per_s=ups, **stats)
            window_updates, window_time = 0, 0.0
            bar.set_postfix(ret=f"{last_return:.1f}", alpha=f"{stats.get('alpha', agent.alpha):.3f}", ups=f"{ups:.0f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            checkpoint(step + 1)
            log("checkpoint", step=step + 1, updates=agent.updates)
        bar.update(1)
    bar.close()
    train_time = time.perf_counter() - start
    final_step = max(cfg.steps, start_step)

    checkpoint(final_step)
    returns = evaluate(agent, eval_env, cfg.eval_episodes, seed=cfg.seed + 1_000_000)
    summary = {
        "steps": final_step,
        "seed": cfg.seed,
        "episodes": episode,
        "updates": agent.updates,
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_episodes": len(returns),
        "updates_per_s": agent.updates / update_time if update_time else 0.0,
        "env_steps_per_s": (final_step - start_step) / train_time if train_time else 0.0,
        "train_wall_s": train_time,
        "resumed_from": None if resumed is None else start_step,
        "out": str(out),
    }
    log("eval", step=final_step, returns=returns, **summary)
    metrics.close()
    env.close()
    eval_env.close()
    return summary


CHECKPOINT_FORMAT = 2


def _resume(
    ckpt_path: Path, store: ReplayStore, agent: SAC, replay: Replay, cfg: TrainConfig,
    spaces: dict[str, str], generators: dict[str, np.random.Generator],
) -> dict[str, Any]:
    """Load checkpoint and replay chunks into ``agent``/``replay``; returns where to continue."""
    if not ckpt_path.exists():
        raise ResumeError(f"nothing to resume: no checkpoint {ckpt_path} (run without --resume to start a new run)")
    try:
        ckpt = load_checkpoint(ckpt_path)
    except CheckpointError as exc:
        raise ResumeError(str(exc)) from exc
    if ckpt.get("format") != CHECKPOINT_FORMAT or "loop" not in ckpt or "rng" not in ckpt:
        raise ResumeError(f"checkpoint {ckpt_path} cannot be resumed: it has no loop/RNG state (format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT})")
    if ckpt.get("spaces") != spaces:
        raise ResumeError(f"checkpoint {ckpt_path} was saved for other env spaces: saved {ckpt.get('spaces')}, this env {spaces}")
    saved, mine = ckpt.get("train_config", {}), _jsonable(asdict(cfg))
    diff = {k: (saved.get(k), mine.get(k)) for k in sorted(set(saved) | set(mine))
            if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k)}
    if diff:
        raise ResumeError(f"checkpoint {ckpt_path} was saved with other settings (saved, now): {diff}; pass the original run's options")
    try:
        agent.load_state_dict(ckpt["agent"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ResumeError(f"checkpoint {ckpt_path} does not fit this agent: {exc}; pass the original run's --sac options") from exc
    try:
        restore_rng_state(ckpt["rng"], generators)
        info = store.restore(replay)
    except (CheckpointError, ReplayStoreError) as exc:
        raise ResumeError(str(exc)) from exc
    ckpt_step = int(ckpt["loop"]["step"])
    if info["next_step"] < ckpt_step:
        raise ResumeError(f"replay chunks in {store.directory} end at env step {info['next_step']}, before the checkpoint's {ckpt_step}: chunks are missing")
    return {
        "step": info["next_step"],
        "episode": info["last_episode"] + 1,
        "checkpoint_step": ckpt_step,
        "replay_transitions": info["transitions"],
        "updates": agent.updates,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
