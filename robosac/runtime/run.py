"""An asynchronous training run: collector thread + learner process + persistence + telemetry.

`train_async(make_env, cfg, out_dir)` is what `robosac train` runs for robosac's robot envs (a
hardware config, or `robosac/...` ids with `--backend sim`):

    collector thread (this process)            learner process (forked, 1 torch thread)
      env.step at the control rate               SAC updates from the shared replay,
      act with the newest published weights      capped per env step, after a warm-up
      -> SharedReplay  -> ReplayStore (disk)     -> WeightStore (versioned) -> collector
    main thread: supervises the learner (restart from its checkpoint if it dies), writes
    TensorBoard scalars and the status line, and at the end evaluates (MP4) and plots.

Run directory: run.json (what was trained), metrics.jsonl, replay/chunk_*.npz, learner.pt (the
learner's atomic checkpoint: agent, counters), tb/ (TensorBoard), videos/eval_step<N>.mp4 (every
`eval_every_episodes` episodes one is played deterministically and recorded), eval.mp4 (the final
evaluation), learning_curve.png.
`resume=True` refills the replay from the chunks and restarts the learner from learner.pt.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["RunConfig", "train_async", "RunError"]


class RunError(RuntimeError):
    """The run cannot start or continue (nothing to resume, a run already there, a collector fault)."""


def _with_env_inputs(aux_targets: Callable | None, priv_inputs: Callable | None, relabel: Callable | None,
                     batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The learner's batch hook with what the env derives from the replay's kept info: relabel (if
    any), then batch["aux"] (auxiliary targets) and batch["priv"], batch["next_priv"] (privileged
    critic inputs) where asked for (picklable, for the learner's process)."""
    if relabel is not None:
        batch = relabel(batch, rng)
    if aux_targets is not None:
        batch = {**batch, "aux": aux_targets(batch)}
    if priv_inputs is not None:
        priv, next_priv = priv_inputs(batch)
        batch = {**batch, "priv": priv, "next_priv": next_priv}
    return batch


@dataclass
class RunConfig:
    steps: int = 20_000  # env steps in total
    seed: int = 0
    learning_starts: int = 1_000  # random actions and no updates before this many transitions
    batch_size: int = 256
    max_updates_per_step: float = 1.0  # learner updates <= this x transitions collected
    replay_capacity: int = 100_000
    eval_episodes: int = 3
    checkpoint_every_s: float = 30.0
    log_every_s: float = 5.0
    flush_every: int = 1000
    flush_interval_s: float = 10.0
    publish_every: int = 1
    sac: Any = None  # SACConfig (None: defaults)
    # Every this many episodes (after learning starts) one episode is played with the deterministic
    # policy and recorded to videos/eval_step<N>.mp4 (its transitions still go to the replay).
    eval_every_episodes: int = 10
    # Sim backend only: the collector waits while the learner is more than this many updates behind
    # max_updates_per_step x transitions (the fast sim would otherwise outrun learning). A robot's
    # control loop never waits for the learner: leave it None there.
    wait_for_learner_slack: int | None = None
    # Torch threads of the learner process. 1 on a robot: the other core stays with the control loop.
    learner_threads: int = 1
    # Goal relabelling: this fraction of every batch gets other targets (the env's goal_relabeler).
    relabel_fraction: float = 0.0

    def validate(self) -> None:
        for k in ("steps", "batch_size", "replay_capacity", "flush_every", "publish_every"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: invalid value {getattr(self, k)!r}; allowed: an integer >= 1")
        if self.learning_starts < self.batch_size:
            raise ValueError(f"learning_starts ({self.learning_starts}) must be >= batch_size ({self.batch_size})")


def train_async(
    make_env: Callable[[], Any],
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    describe: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from robosac.runtime.learner import OPTIONAL_STATS, AsyncLearner, LearnerConfig, LearnerSupervisor, start_learner_server

    start_learner_server()  # its imports run beside this process's own (robosac train starts it sooner still)
    import torch

    from robosac.runtime.collector import Collector
    from robosac.persist import CheckpointError, JsonLines, load_checkpoint
    from robosac.runtime.replay_store import ReplayStore, ReplayStoreError
    from robosac.runtime.telemetry import Telemetry, evaluate, plot_learning_curve, save_video
    from robosac.sac.sac import Policy, SACConfig

    cfg.validate()
    out = Path(out_dir)
    ckpt = out / "learner.pt"
    if resume and not ckpt.exists():
        raise RunError(f"nothing to resume in {out}: no learner.pt")
    if not resume and (ckpt.exists() or any((out / "replay").glob("chunk_*.npz"))):
        raise RunError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # acting only; the learner has its own process
    cfg = replace(cfg, sac=cfg.sac or SACConfig())
    sac_cfg = cfg.sac
    env = make_env()
    tel = Telemetry(out)
    metrics = JsonLines(out / "metrics.jsonl")  # drops a last line a kill -9 cut short

    def log(kind: str, **values: Any) -> None:
        # Strict JSON: a figure that is not known yet (NaN) is written as null.
        metrics.write(kind, **{k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()})

    link = col = store = None
    try:
        aux_targets = priv_inputs = None
        if sac_cfg.aux_weight > 0:
            aux_targets = getattr(env.unwrapped, "aux_targets", None)
            if aux_targets is None:
                raise RunError(f"aux_weight: {type(env.unwrapped).__name__} gives no auxiliary targets; allowed: 0 for this env")
            sac_cfg = replace(sac_cfg, aux_dim=env.unwrapped.aux_dim)
        if sac_cfg.privileged_critic:
            priv_inputs = getattr(env.unwrapped, "priv_inputs", None)
            if priv_inputs is None:
                raise RunError(f"privileged_critic: {type(env.unwrapped).__name__} gives no privileged critic inputs; allowed: false for this env")
            sac_cfg = replace(sac_cfg, priv_dim=env.unwrapped.priv_dim)
        cfg = replace(cfg, sac=sac_cfg)
        agent = Policy(env.observation_space, env.action_space, sac_cfg, seed=cfg.seed)  # acting only; the learner has SAC
        if resume:
            # Check the learner's checkpoint here, so a corrupt or foreign one is a clear error now,
            # not a learner that crashes and restarts in a loop.
            try:
                agent.load_state_dict(load_checkpoint(ckpt)["agent"])
            except (CheckpointError, KeyError, ValueError, RuntimeError) as e:
                raise RunError(f"cannot resume from {ckpt}: {e}") from e
        relabel, extra = None, {}
        if cfg.relabel_fraction:
            relabeler = getattr(env.unwrapped, "goal_relabeler", None)
            if relabeler is None:
                raise RunError(f"relabel: {type(env.unwrapped).__name__} has no goals to relabel; allowed: 0 for this env")
            relabel, extra = relabeler(cfg.relabel_fraction), dict(env.unwrapped.relabel_info)
        if aux_targets is not None or priv_inputs is not None:
            relabel = functools.partial(_with_env_inputs, aux_targets, priv_inputs, relabel)
            if aux_targets is not None:
                extra.update(env.unwrapped.aux_info)
            if priv_inputs is not None:
                extra.update(env.unwrapped.priv_info)
        link = AsyncLearner(
            agent, env.observation_space, env.action_space, cfg.replay_capacity, ckpt, sac_cfg,
            LearnerConfig(batch_size=cfg.batch_size, learning_starts=cfg.learning_starts, max_updates_per_step=cfg.max_updates_per_step,
                          publish_every=cfg.publish_every, checkpoint_every_s=cfg.checkpoint_every_s, threads=cfg.learner_threads, seed=cfg.seed,
                          relabel=relabel),
            extra=extra,
        )
        replay, learner = link.replay, link.process
        store = ReplayStore(out / "replay", {k: (a.shape[1:], a.dtype) for k, a in replay.arrays.items()},
                            flush_every=cfg.flush_every, flush_interval_s=cfg.flush_interval_s, keep_last=cfg.replay_capacity)
        step0 = episode0 = 0
        if resume:
            try:
                restored = store.restore(replay)
            except (ReplayStoreError, KeyError, ValueError) as e:
                raise RunError(f"cannot resume from {out / 'replay'}: {e}") from e
            # A resumed run starts a fresh episode.
            step0, episode0 = restored["next_step"], restored["last_episode"] + 1
            learner.config = replace(learner.config, transitions_before=step0 - restored["transitions"])
            # With the SAC settings it continues with: a resume may change the entropy target, and
            # run.json keeps what the run started with.
            log("resume", step=step0, episode=episode0, sac=asdict(sac_cfg))
        else:
            (out / "run.json").write_text(json.dumps({**(describe or {}), "config": asdict(cfg)}, indent=1))
            log("config", step=0, config=asdict(cfg), run=describe or {})
        link.start(resume_from=ckpt if resume else None)
        supervisor = LearnerSupervisor(learner)
        rng = np.random.default_rng([cfg.seed, step0])
        env.action_space.seed(int(rng.integers(2**31)))
        st = {"step": step0, "episode": episode0, "ret": 0.0, "success": False, "eval": False}
        frames: list[np.ndarray] = []
        writers: list[threading.Thread] = []
        can_render = getattr(env, "render_mode", None) == "rgb_array"

        def act(obs: Any) -> tuple[np.ndarray, int]:
            link.refresh()
            if st["step"] < cfg.learning_starts:
                return env.action_space.sample(), 0
            if st["eval"]:
                return agent.act(obs, deterministic=True), link.version
            if cfg.wait_for_learner_slack is not None:
                want = cfg.max_updates_per_step * st["step"] - cfg.wait_for_learner_slack
                while learner.stats()["updates"] < want and learner.process is not None and learner.process.is_alive():
                    time.sleep(0.001)
            return agent.act(obs), link.version

        def sink(t: Any) -> None:
            replay.add(t.obs, t.action, t.reward, t.next_obs, t.terminated, t.policy_version, **{k: t.info[k] for k in extra})
            end = t.terminated or t.truncated
            store.append(replay.row(replay.written - 1), st["step"], st["episode"], end)
            st["step"] += 1
            st["ret"] += t.reward
            st["success"] = bool(t.info.get("success", False))  # at the episode's end
            if st["eval"] and can_render:
                frames.append(env.render())
            if end and st["eval"]:
                log("eval_episode", step=st["step"], episode=st["episode"], ret=st["ret"], success=st["success"])
                tel.scalars(st["step"], {"eval/return": st["ret"], "eval/success": float(st["success"])})
                if frames:
                    # Encoding takes a while: not on the control loop's thread.
                    w = threading.Thread(target=save_video, args=(list(frames), out / "videos" / f"eval_step{st['step']}.mp4",
                                                                    env.metadata.get("render_fps", 10)), daemon=True)
                    w.start()
                    writers.append(w)
                frames.clear()
            if end:
                safety = t.info.get("safety", {})
                log("episode", step=st["step"], episode=st["episode"], ret=st["ret"], success=st["success"],
                    score=t.info.get("score"), terminated=bool(t.terminated),
                    safety_trips=safety.get("trips"), safety_stop=t.info.get("safety_stop"))
                tel.scalars(st["step"], {"episode/return": st["ret"], "episode/success": float(st["success"]),
                                         "safety/trips": safety.get("trips", 0), "safety/current_warn": safety.get("current_warn", 0),
                                         "safety/rate_limits": safety.get("rate_limits", 0)})
                st["episode"] += 1
                st["ret"], st["success"] = 0.0, False
                st["eval"] = (st["step"] >= cfg.learning_starts and cfg.eval_every_episodes > 0
                              and st["episode"] % cfg.eval_every_episodes == 0)

        def on_reset(info: dict[str, Any]) -> None:
            # How the robot's own reset went (attempts, current stops, duration): a reset that
            # fails later is diagnosed from the ones before it.
            log("reset", step=st["step"], episode=st["episode"], **{k: v for k, v in info.items() if k.startswith("reset_")})

        # Learning pauses while the robot resets itself (the reset routine gets the CPU). A paced
        # (hardware) loop asks for SCHED_FIFO; the sim backend runs flat out and must not hog a core.
        col = Collector(env, act, sink, max_steps=cfg.steps - step0, seed=cfg.seed + step0, resetting=learner.pause_event,
                        realtime=getattr(env.unwrapped, "backend", "sim") == "hardware", on_reset=on_reset).start()
        t_last, u_last = time.monotonic(), 0

        def log_figures() -> None:
            nonlocal t_last, u_last
            now = time.monotonic()
            ls, cs = learner.stats(), col.stats()
            ups = (ls["updates"] - u_last) / max(now - t_last, 1e-9)
            t_last, u_last = now, ls["updates"]
            last = col.last_info or {}
            figures = {"loss/critic": ls["critic_loss"], "loss/actor": ls["actor_loss"], "loss/alpha": ls["alpha_loss"],
                       "alpha": ls["alpha"], "entropy": ls["entropy"], "q_mean": ls["q_mean"],
                       "camera/frame_age_s": last.get("frame_age_s"), "servo/temperature_max_c": last.get("temperature_max_c"),
                       "loop/jitter_p50_s": cs["jitter_s"]["p50"], "loop/jitter_p99_s": cs["jitter_s"]["p99"],
                       "loop/jitter_max_s": cs["jitter_s"]["max"], "loop/overruns": cs["overruns"],
                       "loop/obs_to_action_p99_s": cs["obs_to_action_s"]["p99"], "learner/updates": ls["updates"],
                       "learner/updates_per_s": ups, "learner/weights_version": link.version}
            for name in OPTIONAL_STATS:  # the encoder's own losses, only when switched on
                if not math.isnan(ls[name]):
                    figures[f"loss/{name.removesuffix('_loss')}"] = ls[name]
            tel.scalars(st["step"], figures)
            log("train", step=st["step"], **{k.replace("/", "_"): v for k, v in figures.items()})
            if progress:
                tel.line(st["step"], cfg.steps, {"episodes": st["episode"], "upd": ls["updates"], "upd/s": ups,
                                                 "jitter p99 ms": 1000 * cs["jitter_s"]["p99"], "overruns": cs["overruns"]})

        t_log = time.monotonic()
        while col.running:
            time.sleep(0.2)
            msg = supervisor.check()
            if msg:
                log("learner_restart", step=st["step"], message=msg)
            if time.monotonic() - t_log >= cfg.log_every_s:
                t_log = time.monotonic()
                log_figures()
        log_figures()
        store.close()
        learner.stop()
        for w in writers:
            w.join(60)
        if col.error is not None:
            log("error", step=st["step"], error=col.stats()["error"])
            raise RunError(f"the collector stopped: {col.stats()['error']} (replay and learner checkpoint are saved; --resume continues)")
        link.refresh()  # the learner's final weights
        ev = evaluate(env, lambda o: agent.act(o, deterministic=True), cfg.eval_episodes, seed=cfg.seed + 10_000,
                      video_path=out / "eval.mp4" if getattr(env, "render_mode", None) == "rgb_array" else None)
        cs = col.stats()
        summary = {"steps": st["step"], "episodes": st["episode"], "updates": learner.stats()["updates"],
                   "eval_return_mean": ev["return_mean"], "eval_success_rate": ev["success_rate"],
                   "eval_score_mean": ev["score_mean"], "eval_terminated_rate": ev["terminated_rate"],
                   "learner_restarts": supervisor.restarts, "loop_jitter_ms": {k: 1000 * v for k, v in cs["jitter_s"].items()},
                   "overruns": cs["overruns"], "loop_scheduling": cs["scheduling"], "video": ev.get("video"), "out": str(out)}
        log("eval", step=st["step"], eval_return_mean=ev["return_mean"], returns=ev["returns"], success_rate=ev["success_rate"],
            scores=ev["scores"], terminated=ev["terminated"], terminated_rate=ev["terminated_rate"])
        metrics.flush()
        summary["learning_curve"] = str(plot_learning_curve(out / "metrics.jsonl", out / "learning_curve.png", title=str((describe or {}).get("target", ""))))
        return summary
    finally:
        # Also the way out of a Ctrl-C or SIGTERM mid-run: the loop stops before the env closes
        # under it, the replay it collected is flushed, and the learner writes its last checkpoint.
        if col is not None:
            col.stop()
        if store is not None:
            store.close()
        if link is not None:
            link.close()
        metrics.close()
        tel.close()
        env.close()
