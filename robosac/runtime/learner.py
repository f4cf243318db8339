"""SAC training in its own process, so the control loop keeps its deadlines while SAC trains.

``LearnerProcess`` starts (forked from a ``forkserver`` that has already imported torch, see
:func:`start_learner_server`) a loop that attaches the collector's
:class:`~robosac.runtime.shared.SharedReplay` and :class:`~robosac.runtime.shared.WeightStore`,
builds SAC from the spaces and :class:`~robosac.sac.sac.SACConfig`, limits torch to ``threads``
intra-op threads (default 1: on a 2-core robot computer one core stays for the control loop), waits
for ``learning_starts`` transitions, then updates as fast as it can but never more than
``max_updates_per_step`` x transitions written. Every ``publish_every`` updates it publishes the
actor weights; every ``checkpoint_every_s`` seconds, and when stopped, it writes an atomic
checkpoint (``{"agent": SAC.state_dict(), "counters": {...}}``, see :mod:`robosac.persist`).

Progress is visible to the parent without locks through shared counters (:meth:`LearnerProcess.stats`):
updates done, weights version, last publish/checkpoint time and a heartbeat.
``LearnerSupervisor.check()`` (call it from the main loop, e.g. once a second) notices a learner that
died (exit code set) or hung (heartbeat stale and no CPU used), counts and reports it, and restarts
it from the last checkpoint: the update counter continues from the checkpoint and the weights
version keeps rising. A silent learner that is still using the CPU is slow, not hung (starved by
other work on the computer, or at a high ``nice``): restarting it would throw away its work since
the last checkpoint, again and again under sustained load.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

# Shared int64 counters.
I_UPDATES, I_VERSION, I_CHECKPOINTS, I_RESUMED_FROM, I_PID, I_TRANSITIONS, I_PUBLISHES = range(7)
# Shared float64 counters (time.monotonic(), system-wide on Linux).
F_HEARTBEAT, F_LAST_PUBLISH, F_LAST_CHECKPOINT, F_STARTED = range(4)
# The last update's statistics, shared for telemetry (floats[4:]).
# The encoder's own losses: reported only when switched on (recon_weight, reward_head, aux_weight), NaN otherwise.
OPTIONAL_STATS = ("recon_loss", "reward_loss", "aux_loss")
UPDATE_STATS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean", *OPTIONAL_STATS)
F_STATS = 4


@dataclass
class LearnerConfig:
    """How the learner process trains; SAC's own hyper-parameters are in ``SACConfig``."""

    batch_size: int = 256
    learning_starts: int = 1000  # transitions in the replay before the first update
    max_updates_per_step: float = 1.0  # updates <= this x transitions written
    # Transitions the run collected before the replay's first row: a resumed run whose oldest ones
    # were dropped at capacity. They count toward learning_starts and the update cap, which would
    # otherwise hold a resumed learner (its updates restored) until the replay caught up.
    transitions_before: int = 0
    publish_every: int = 10  # updates between weight publications
    checkpoint_every_s: float = 60.0
    threads: int = 1  # torch intra-op threads in the learner
    nice: int = 0  # added to the learner's niceness (>0 yields the CPU to the control loop)
    seed: int = 0
    device: str = "cpu"
    idle_sleep_s: float = 0.001  # sleep when warm-up or the update cap holds the learner back
    # relabel(batch, rng) -> batch, applied to every sampled batch (goal relabelling, e.g.
    # ClawValveTurnEnv.goal_relabeler); picklable, as it goes to the learner's process.
    relabel: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.publish_every < 1 or self.threads < 1:
            raise ValueError("batch_size, publish_every and threads must be >= 1")
        if self.max_updates_per_step <= 0:
            raise ValueError(f"max_updates_per_step must be > 0, got {self.max_updates_per_step}")
        if self.checkpoint_every_s <= 0:
            raise ValueError(f"checkpoint_every_s must be > 0, got {self.checkpoint_every_s}")


# What a learner imports before its first update: about 5 s of CPU here (2-4 s for torch, 1.6-2.6 s
# for torch._dynamo, which the first Adam imports). The forkserver that learners are forked from
# imports them once; a learner, or one restarted after a crash, then starts in under a second.
LEARNER_IMPORTS = ["torch", "torch._dynamo", "robosac.sac.sac", "robosac.runtime.shared", "robosac.persist"]


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(LEARNER_IMPORTS)  # effective if the server has not started yet
    return ctx


def start_learner_server() -> None:
    """Start the server learners are forked from now, so its imports run beside the caller's own
    start-up instead of after it (the first :meth:`LearnerProcess.start` starts it otherwise)."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def _learner_main(
    replay_name: str,
    weights_name: str,
    observation_space: Any,
    action_space: Any,
    sac_config: Any,
    cfg: LearnerConfig,
    checkpoint_path: str,
    resume_from: str | None,
    stop: Any,
    pause: Any,
    ints: Any,
    floats: Any,
) -> None:
    """The child process: attach, build, (resume,) train until ``stop`` is set, checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which sets ``stop``
    if cfg.nice:
        os.nice(cfg.nice)
    import torch

    from robosac.persist import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
    from robosac.runtime.shared import SharedReplay, WeightStore, actor_state
    from robosac.sac.perf import tune_learner_process
    from robosac.sac.sac import SAC

    tune_learner_process()  # before any torch op, so the OpenMP threads inherit it
    torch.set_num_threads(cfg.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    replay = SharedReplay.attach(replay_name)
    weights = WeightStore.attach(weights_name)
    parent = mp.parent_process()  # the collector's process, not the server that forked this one
    try:
        agent = SAC(observation_space, action_space, sac_config, device=cfg.device, seed=cfg.seed)
        if resume_from is not None:
            ck = load_checkpoint(resume_from)
            agent.load_state_dict(ck["agent"])
        ints[I_RESUMED_FROM] = agent.updates if resume_from is not None else -1
        ints[I_UPDATES] = agent.updates
        ints[I_PID] = os.getpid()
        rng = np.random.default_rng([cfg.seed, agent.updates])
        if resume_from is not None and "rng" in ck:
            restore_rng_state(ck["rng"], {"sample": rng})

        def publish() -> None:
            ints[I_VERSION] = weights.publish(actor_state(agent), updates=agent.updates)
            ints[I_PUBLISHES] += 1
            floats[F_LAST_PUBLISH] = time.monotonic()

        def checkpoint() -> None:
            counters = {"updates": agent.updates, "transitions": replay.written + cfg.transitions_before, "weights_version": weights.version}
            save_checkpoint({"agent": agent.state_dict(), "counters": counters, "rng": capture_rng_state({"sample": rng})}, checkpoint_path)
            ints[I_CHECKPOINTS] += 1
            floats[F_LAST_CHECKPOINT] = time.monotonic()

        publish()  # the collector acts with exactly the learner's (initial or resumed) policy
        last_ckpt = time.monotonic()
        floats[F_HEARTBEAT] = last_ckpt
        parent_check_at = last_ckpt
        while not stop.is_set():
            now = time.monotonic()
            if now >= parent_check_at:  # a check costs 16 us: ten a second, not one per 1-ms idle sleep
                if not parent.is_alive():
                    break  # the collector's process died (kill -9): checkpoint and end, never run orphaned
                parent_check_at = now + 0.1
            floats[F_HEARTBEAT] = now
            n = replay.written + cfg.transitions_before
            ints[I_TRANSITIONS] = n
            if now - last_ckpt >= cfg.checkpoint_every_s:
                checkpoint()
                last_ckpt = time.monotonic()
            if pause.is_set() or n < cfg.learning_starts or agent.updates + 1 > cfg.max_updates_per_step * n:
                time.sleep(cfg.idle_sleep_s)
                continue
            batch = agent.sample(replay, cfg.batch_size, rng=rng)
            info = agent.update(batch if cfg.relabel is None else cfg.relabel(batch, rng))
            for k, name in enumerate(UPDATE_STATS):
                floats[F_STATS + k] = info.get(name, math.nan)
            ints[I_UPDATES] = agent.updates
            if agent.updates % cfg.publish_every == 0:
                publish()
        publish()
        checkpoint()
    finally:
        replay.close()
        weights.close()


class LearnerProcess:
    """The learner in its own process; the parent owns the shared segments and this handle."""

    def __init__(
        self,
        replay_name: str,
        weights_name: str,
        observation_space: Any,
        action_space: Any,
        checkpoint_path: str | os.PathLike,
        sac_config: Any = None,
        config: LearnerConfig | None = None,
    ):
        from robosac.sac.sac import SACConfig

        self.replay_name, self.weights_name = replay_name, weights_name
        self.observation_space, self.action_space = observation_space, action_space
        self.checkpoint_path = str(checkpoint_path)
        self.sac_config = sac_config or SACConfig()
        self.config = config or LearnerConfig()
        self.ctx = _context()
        self.stop_event = self.ctx.Event()
        # Set by the collector while the robot resets itself: the learner idles (keeps beating).
        self.pause_event = self.ctx.Event()
        self._ints = self.ctx.RawArray("q", 8)
        self._floats = self.ctx.RawArray("d", F_STATS + len(UPDATE_STATS))
        for name in OPTIONAL_STATS:
            self._floats[F_STATS + UPDATE_STATS.index(name)] = math.nan  # until an update reports one
        self.process: mp.process.BaseProcess | None = None

    def start(self, resume_from: str | os.PathLike | None = None) -> "LearnerProcess":
        """Start the process; ``resume_from`` a checkpoint path to continue from it."""
        if self.process is not None and self.process.is_alive():
            raise RuntimeError("learner already running")
        if resume_from is not None and not Path(resume_from).exists():
            raise FileNotFoundError(f"no checkpoint to resume from: {resume_from}")
        self.stop_event.clear()
        self._floats[F_STARTED] = time.monotonic()
        self._floats[F_HEARTBEAT] = 0.0
        self.process = self.ctx.Process(
            target=_learner_main,
            args=(
                self.replay_name, self.weights_name, self.observation_space, self.action_space, self.sac_config,
                self.config, self.checkpoint_path, None if resume_from is None else str(resume_from),
                self.stop_event, self.pause_event, self._ints, self._floats,
            ),
            name="robosac-learner",
            daemon=True,
        )
        self.process.start()
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the loop to finish (final publish + checkpoint); kill it if it does not within ``timeout``."""
        if self.process is None:
            return None
        self.stop_event.set()
        self.process.join(timeout)
        if self.process.is_alive():
            log.warning("learner did not stop within %.1f s; killing it", timeout)
            self.kill()
        return self.process.exitcode

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def started_beating(self) -> bool:
        """The current process has finished start-up (built SAC, resumed) and entered its loop."""
        return self._floats[F_HEARTBEAT] >= self._floats[F_STARTED]

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        i, f = self._ints, self._floats
        return {
            "alive": self.process is not None and self.process.is_alive(),
            "exitcode": None if self.process is None else self.process.exitcode,
            "updates": int(i[I_UPDATES]),
            "transitions": int(i[I_TRANSITIONS]),
            "weights_version": int(i[I_VERSION]),
            "publishes": int(i[I_PUBLISHES]),
            "checkpoints": int(i[I_CHECKPOINTS]),
            "resumed_from_updates": int(i[I_RESUMED_FROM]),
            "heartbeat_age_s": now - f[F_HEARTBEAT] if self.started_beating else None,
            "since_publish_s": now - f[F_LAST_PUBLISH] if f[F_LAST_PUBLISH] else None,
            "since_checkpoint_s": now - f[F_LAST_CHECKPOINT] if f[F_LAST_CHECKPOINT] else None,
            **{name: float(f[F_STATS + k]) for k, name in enumerate(UPDATE_STATS)},  # of the last update
        }


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, all threads; s) process ``pid`` has used; None where /proc has no
    such figure (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the name, in parentheses, may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class LearnerSupervisor:
    """Parent-side watchdog: ``check()`` restarts a dead or hung learner from its last checkpoint.

    Hung: its loop silent for ``heartbeat_timeout_s`` and then no CPU used over ``cpu_window_s``
    (where the CPU time cannot be read, the silence alone); or silent for ``busy_timeout_s``
    although busy (a loop that never returns)."""

    learner: LearnerProcess
    heartbeat_timeout_s: float = 5.0  # loop silent this long (after start-up): watch its CPU time
    cpu_window_s: float = 1.0  # ... over this long; none used = hung
    busy_timeout_s: float = 120.0  # loop silent this long though using CPU = hung (one update takes < 1 s)
    startup_timeout_s: float = 60.0  # the server's imports (first start) + build SAC + resume
    restarts: int = 0
    messages: list[str] = field(default_factory=list)
    _cpu_seen: tuple[float, float] | None = field(default=None, repr=False)  # (time.monotonic(), CPU s) while silent

    def check(self) -> str | None:
        """None if healthy (or deliberately stopped); else restart and return what happened."""
        lp = self.learner
        p = lp.process
        if p is None or lp.stop_event.is_set():
            return None
        now = time.monotonic()
        reason = None
        if p.exitcode is not None:
            code = p.exitcode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            reason = f"learner process {p.pid} {how}"
        elif not lp.started_beating:
            if now - lp._floats[F_STARTED] > self.startup_timeout_s:
                reason = f"learner process {p.pid} did not start within {self.startup_timeout_s:.0f} s"
        elif now - lp._floats[F_HEARTBEAT] > self.heartbeat_timeout_s:
            reason = self._hung(p.pid, now, now - lp._floats[F_HEARTBEAT])
        else:
            self._cpu_seen = None
        if reason is None:
            return None
        self._cpu_seen = None
        lp.kill()
        resume = lp.checkpoint_path if Path(lp.checkpoint_path).exists() else None
        lp.start(resume_from=resume)
        self.restarts += 1
        msg = f"{reason}; restart {self.restarts} from {resume or 'scratch (no checkpoint yet)'}"
        self.messages.append(msg)
        log.warning(msg)
        return msg

    def _hung(self, pid: int, now: float, silent_s: float) -> str | None:
        """Why a learner silent for ``silent_s`` counts as hung, or None while it is still computing."""
        stale = f"learner process {pid} heartbeat stale for {silent_s:.1f} s"
        cpu = process_cpu_s(pid)
        if cpu is None:
            return stale
        if silent_s > self.busy_timeout_s:
            return f"{stale} while using the CPU (a loop that never returns?)"
        if self._cpu_seen is None:
            self._cpu_seen = (now, cpu)
            return None
        since, cpu_then = self._cpu_seen
        if now - since < self.cpu_window_s:
            return None
        if cpu > cpu_then:  # still computing: slow (starved of CPU), not hung
            self._cpu_seen = (now, cpu)
            return None
        return f"{stale}, no CPU used in the last {now - since:.1f} s"


class AsyncLearner:
    """The collector's side of asynchronous learning, made and torn down together: a SharedReplay
    the collector writes, a WeightStore the learner publishes to, the LearnerProcess between them,
    and `refresh()`, which loads newer published weights into the collector's acting copy `agent`
    without waiting. The weight store starts with `agent`'s weights (load a checkpoint into it first
    to resume). `close()` stops the learner (final publish and checkpoint) and frees both segments.
    ``extra``: more scalar fields per replay row (name -> dtype), e.g. what relabelling needs."""

    def __init__(
        self,
        agent: Any,
        observation_space: Any,
        action_space: Any,
        capacity: int,
        checkpoint_path: str | os.PathLike,
        sac_config: Any = None,
        config: LearnerConfig | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        from robosac.runtime.shared import SharedReplay, WeightStore, actor_state
        from robosac.sac.spaces import parse_obs_space

        self.agent = agent
        self.replay = SharedReplay.create(parse_obs_space(observation_space), action_space.shape[0], capacity, extra=extra)
        try:
            self.weights = WeightStore.create(actor_state(agent))
        except BaseException:
            self.replay.close()
            raise
        self.process = LearnerProcess(self.replay.name, self.weights.name, observation_space, action_space,
                                      checkpoint_path, sac_config, config)
        self.version = 0  # of the weights in `agent` (0: its own, before any pickup)
        self.publish_time = time.monotonic()  # when those weights were published (time.monotonic(), s)

    def start(self, resume_from: str | os.PathLike | None = None) -> "AsyncLearner":
        self.process.start(resume_from=resume_from)
        return self

    def refresh(self) -> bool:
        """Load the newest published weights into `agent` if there are newer ones; True if so."""
        from robosac.runtime.shared import load_actor_state

        got = self.weights.latest(self.version)
        if got is None:
            return False
        load_actor_state(self.agent, got[1])
        self.version, self.publish_time = got[0], self.weights.last_meta["publish_time"]
        return True

    def close(self) -> None:
        try:
            # stop()'s 30 s: a learner stopped while still starting (the first one waits for its
            # server's imports, about 5 s of CPU, more on a busy machine) then still writes its
            # checkpoint; 10 s was not enough.
            self.process.stop()
        finally:
            self.replay.close()
            self.weights.close()
