"""The driver of a distributed run: one collector actor per robot, one learner actor, supervision.

`train_distributed(...)` is what `robosac train CONFIG --cluster ...` runs; `DistributedRun` is the
same thing in steps (start, poll, add_robot/remove_robot, finish) for tests and notebooks.

Placement: a robot's collector asks for the custom resource ``robot:<name>`` (1 unit), which only
the node that owns that robot's serial port and camera advertises (``ray start --resources
'{"robot:claw1": 1}'``; ``--cluster local`` advertises every ``--robot`` itself). The learner asks
for a GPU when the cluster has one, else it runs on the driver's node. The learner writes the run
directory (``--out``) on its node.

Restarts: both kinds of actor are restarted by Ray (``max_restarts``), not by a loop here. Ray
restarts a dead actor even while this driver is busy or slow, keeps every handle valid (collectors
hold the learner's by name and never need a new one), and holds a robot's collector pending until
a node with that robot's resource is back: a robot computer that reboots rejoins by itself. The
constructor restores state: the learner from learner.pt and the replay chunks, a collector by
reopening its robot. This driver only watches: it logs restarts (an actor's incarnation id
changes), kills a learner whose training thread died or hung (Ray then restarts it), and takes a
robot that faulted (its loop ended: safety stop, bus or camera failure) out of the run.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from robosac.distributed import DistributedError, require_ray
from robosac.distributed.cluster import NAMESPACE
from robosac.distributed.collector_actor import CollectorActor, CollectorSettings
from robosac.distributed.learner_actor import LearnerActor, LearnerSettings

__all__ = ["RobotSpec", "parse_robot", "robot_resource", "DistRunConfig", "DistributedRun", "loop_phase", "train_distributed"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class RobotSpec:
    """One robot of the run: its name (resource ``robot:<name>``), serial port and camera on its own node."""

    name: str
    port: str | None = None  # None: the hardware config's
    camera: int | str | None = None  # None: the hardware config's


def robot_resource(name: str) -> str:
    return f"robot:{name}"


def parse_robot(text: str) -> RobotSpec:
    """``NAME[,port=PATH][,camera=SOURCE]`` (``--robot``) -> RobotSpec; ValueError names the problem."""
    name, *opts = text.split(",")
    if not _NAME.match(name):
        raise ValueError(f"--robot {text!r}: invalid name {name!r}; allowed: 1-64 letters, digits, '_', '.', '-'")
    kw: dict[str, Any] = {}
    for o in opts:
        k, sep, v = o.partition("=")
        if k not in ("port", "camera") or not sep or not v:
            raise ValueError(f"--robot {text!r}: invalid option {o!r}; allowed: port=PATH, camera=INDEX|URL|FILE")
        kw[k] = int(v) if k == "camera" and v.isdigit() else v
    return RobotSpec(name, **kw)


@dataclass
class DistRunConfig:
    steps: int = 20_000  # transitions in total, all robots together (a resumed run counts what it restored)
    seed: int = 0
    learning_starts: int = 1000
    batch_size: int = 256
    max_updates_per_step: float = 1.0
    replay_capacity: int = 100_000
    publish_every: int = 10
    checkpoint_every_s: float = 30.0
    flush_every: int = 1000
    flush_interval_s: float = 5.0
    log_every_s: float = 5.0
    outbox_capacity: int = 5000  # rows per robot held while its link is down
    rpc_timeout_s: float = 2.0
    weights_interval_s: float = 1.0  # a robot fetches newer weights at most this often
    learner_threads: int = 1
    learner_cpus: float = 1.0  # Ray CPUs reserved for the learner
    learner_max_restarts: int = 10  # then the run fails (a learner that cannot come up)
    hang_timeout_s: float = 60.0  # training thread silent this long: kill, Ray restarts it
    start_timeout_s: float = 300.0  # for the first robot to come up
    pixels: bool = False
    env_kwargs: dict = field(default_factory=dict)  # more constructor keywords for the env (robosac.envs.env_kwargs_from)
    sac: Any = None  # SACConfig (None: defaults)

    def validate(self) -> None:
        for k in ("steps", "batch_size", "replay_capacity", "flush_every", "publish_every", "outbox_capacity"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: invalid value {getattr(self, k)!r}; allowed: an integer >= 1")
        if self.rpc_timeout_s <= 0 or self.weights_interval_s < 0:
            raise ValueError(f"rpc_timeout_s must be > 0 and weights_interval_s >= 0 (s), got {self.rpc_timeout_s}, {self.weights_interval_s}")
        if self.learning_starts < self.batch_size:
            raise ValueError(f"learning_starts ({self.learning_starts}) must be >= batch_size ({self.batch_size})")

    def learner_settings(self) -> LearnerSettings:
        return LearnerSettings(batch_size=self.batch_size, learning_starts=self.learning_starts, max_updates_per_step=self.max_updates_per_step,
                               replay_capacity=self.replay_capacity, publish_every=self.publish_every, checkpoint_every_s=self.checkpoint_every_s,
                               flush_every=self.flush_every, flush_interval_s=self.flush_interval_s, threads=self.learner_threads, seed=self.seed)

    def collector_settings(self) -> CollectorSettings:
        return CollectorSettings(outbox_capacity=self.outbox_capacity, rpc_timeout_s=self.rpc_timeout_s, weights_interval_s=self.weights_interval_s,
                                 learning_starts=self.learning_starts, seed=self.seed)


def loop_phase(n: int) -> float:
    """The control-loop phase (fraction of a period) of the n-th robot to join (n = 0, 1, ...):
    the n-th point of the van der Corput sequence, 0, 1/2, 1/4, 3/4, 1/8, ..., which spreads any
    number of robots evenly over the period. Robots that share a computer (the twins here, or two
    robots on one bench PC) then wake in turn, not together; on separate computers it is moot."""
    phase, scale = 0.0, 0.5
    while n:
        phase, n, scale = phase + scale * (n & 1), n >> 1, scale / 2
    return phase


class DistributedRun:
    """A run in steps. ``robot_config``: the RobotConfig every robot shares (ports/cameras per RobotSpec)."""

    def __init__(self, env_id: str, robot_config: Any, robots: list[RobotSpec], cfg: DistRunConfig, out_dir: str | Path, *,
                 resume: bool = False, twin: bool = False, bus_settings: dict[str, Any] | None = None,
                 describe: dict[str, Any] | None = None) -> None:
        from robosac.persist import JsonLines
        from robosac.sac.sac import SACConfig

        cfg.validate()
        if len({r.name for r in robots}) != len(robots):
            raise DistributedError("--robot: every robot needs its own name")
        self.ray = require_ray()
        self.env_id, self.robot_config, self.cfg = env_id, robot_config, replace(cfg, sac=cfg.sac or SACConfig())
        self.out = Path(out_dir).resolve()
        self.resume, self.twin, self.bus_settings, self.describe = resume, twin, bus_settings, describe or {}
        ckpt = self.out / "learner.pt"
        if resume and not ckpt.exists():
            raise DistributedError(f"nothing to resume in {self.out}: no learner.pt")
        if not resume and (ckpt.exists() or any((self.out / "replay").glob("*/chunk_*.npz"))):
            raise DistributedError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics = JsonLines(self.out / "metrics.jsonl")
        self.run_id = uuid.uuid4().hex[:8]
        self.learner_name = f"learner-{self.run_id}"
        self.initial = list(robots)
        self.collectors: dict[str, Any] = {}
        self._spaces: dict[str, Any] = {}  # robot -> pending spaces() ref, until checked
        self.learner: Any = None
        self.learner_stats: dict[str, Any] = {}
        self.robot_stats: dict[str, dict[str, Any]] = {}
        self.learner_restarts = 0
        self.collector_restarts: dict[str, int] = {}
        self.faults: dict[str, str] = {}
        self._phase_index: dict[str, int] = {}
        self._learner_id: str | None = None

    def log(self, kind: str, **values: Any) -> None:
        self.metrics.write(kind, **_strict(values))

    # ---- robots -------------------------------------------------------------------------------

    def add_robot(self, spec: RobotSpec) -> Any:
        """Start a robot's collector (it waits in Ray's queue until a node advertises robot:<name>)."""
        if spec.name in self.collectors:
            raise DistributedError(f"robot {spec.name!r} is already in the run")
        res = robot_resource(spec.name)
        if self.ray.cluster_resources().get(res, 0) < 1:
            self.log("robot_waiting", robot=spec.name, message=f"no node advertises {res} yet; "
                     f"start its computer with: ray start --address HEAD:PORT --resources '{{\"{res}\": 1}}'")
        kwargs = {**self.cfg.env_kwargs, "backend": "hardware", "config": self.robot_config, "pixels": self.cfg.pixels,
                  "port": spec.port, "camera_source": spec.camera, "bus_settings": self.bus_settings}
        twin_config = str(Path(self.robot_config.source).resolve()) if self.twin else None
        handle = self.ray.remote(CollectorActor).options(
            name=f"collector-{self.run_id}-{spec.name}", namespace=NAMESPACE, resources={res: 1}, num_cpus=0,
            max_restarts=-1,  # until its node comes back: a robot computer may reboot mid-run
        ).remote(spec.name, self.learner_name, self.env_id, kwargs, self.cfg.sac, self._settings_for(spec.name), twin_config)
        self.collectors[spec.name] = handle
        self.collector_restarts.setdefault(spec.name, 0)
        self._spaces[spec.name] = handle.spaces.remote()
        self.log("robot_joined", robot=spec.name, port=spec.port, camera=spec.camera)
        return handle

    def _settings_for(self, robot: str) -> CollectorSettings:
        """The run's collector settings, with this robot's loop phase (see `loop_phase`)."""
        return replace(self.cfg.collector_settings(), phase=loop_phase(self._phase_index.setdefault(robot, len(self._phase_index))))

    def remove_robot(self, name: str, reason: str = "removed") -> dict[str, Any] | None:
        """Stop a robot's loop (its env closes: torque off), deliver its buffered rows, end its actor."""
        h = self.collectors.pop(name)
        self._spaces.pop(name, None)
        final = None
        try:
            final = self.ray.get(h.stop.remote(), timeout=60)
        except Exception as e:  # noqa: BLE001 - dead or unreachable: nothing more to stop there
            self.log("robot_stop_failed", robot=name, error=f"{type(e).__name__}: {e}")
        self.ray.kill(h, no_restart=True)
        if final is not None:
            self.robot_stats[name] = final
        self.log("robot_left", robot=name, reason=reason)
        return final

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "DistributedRun":
        """Start every robot's collector, then the learner with the first robot's spaces."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        for spec in self.initial:
            self.add_robot(spec)
        deadline = time.monotonic() + self.cfg.start_timeout_s
        spaces = None
        while spaces is None:  # the first robot up gives the learner its spaces; one that fails is out
            pending = list(self._spaces.values())
            if not pending:
                raise DistributedError(f"no robot could start: {self.faults}")
            ready, _ = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise DistributedError(f"no robot came up within {self.cfg.start_timeout_s:.0f} s (is a node advertising "
                                       f"{', '.join(robot_resource(r.name) for r in self.initial)}?)")
            name = next(n for n, r in self._spaces.items() if r == ready[0])
            try:
                spaces = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - its constructor failed (port, camera): say which robot and why
                self.faults[name] = str(e).strip().splitlines()[-1][:500]
                self.log("robot_fault", robot=name, error=self.faults[name])
                self.remove_robot(name, reason="could not start")
        obs_space, act_space = spaces
        self.spaces = (obs_space, act_space)
        opts: dict[str, Any] = {"name": self.learner_name, "namespace": NAMESPACE, "max_restarts": self.cfg.learner_max_restarts,
                                "max_concurrency": 16, "num_cpus": self.cfg.learner_cpus}
        if ray.cluster_resources().get("GPU", 0) >= 1:
            opts["num_gpus"] = 1
        else:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.learner = ray.remote(LearnerActor).options(**opts).remote(str(self.out), obs_space, act_space, self.cfg.sac,
                                                                        self.cfg.learner_settings())
        try:
            self._learner_id = ray.get(self.learner.ready.remote(), timeout=self.cfg.start_timeout_s)
        except Exception as e:  # noqa: BLE001
            raise DistributedError(f"the learner could not start: {e}") from e
        desc = {**self.describe, "env_id": self.env_id, "backend": "hardware", "pixels": self.cfg.pixels, "env_kwargs": self.cfg.env_kwargs,
                "robots": [asdict(r) for r in self.initial], "distributed": True}
        if self.resume:
            self.log("resume", run_id=self.run_id)
        else:
            (self.out / "run.json").write_text(json.dumps({**desc, "config": asdict(replace(self.cfg, sac=asdict(self.cfg.sac)))}, indent=1, default=str))
            self.log("config", run=desc, run_id=self.run_id)
        return self

    def poll(self) -> dict[str, Any]:
        """One supervision round (call every ~0.5 s): fresh learner and robot figures, restarts logged,
        a hung learner killed (Ray restarts it), a faulted robot taken out. Returns the figures."""
        ray = self.ray
        from ray.exceptions import RayError

        lref = self.learner.stats.remote()
        crefs = {n: h.stats.remote() for n, h in self.collectors.items()}
        ready = set(ray.wait([lref, *crefs.values()], num_returns=1 + len(crefs), timeout=self.cfg.rpc_timeout_s)[0])
        ls = None
        if lref in ready:
            try:
                ls = ray.get(lref)
            except RayError as e:
                if type(e).__name__ == "ActorDiedError":
                    raise DistributedError(f"the learner is gone after {self.learner_restarts} restarts: {e}") from e
        if ls is not None:
            if ls["learner_id"] != self._learner_id:
                self.learner_restarts += 1
                self.log("learner_restart", restored_from_updates=ls["restored_from_updates"],
                         restored_transitions=ls["restored_transitions"], pid=ls["pid"])
                self._learner_id = ls["learner_id"]
            if ls["error"] or ls["heartbeat_age_s"] > self.cfg.hang_timeout_s:
                self.log("learner_kill", reason=ls["error"] or f"training thread silent for {ls['heartbeat_age_s']:.0f} s")
                ray.kill(self.learner, no_restart=False)
            self.learner_stats = ls
        self._check_spaces()
        for name, ref in crefs.items():
            st = None
            if ref in ready:
                try:
                    st = ray.get(ref)
                except RayError as e:  # restarting, or its node is gone: Ray brings it back when the node returns
                    if type(e).__name__ == "ActorDiedError":  # ... unless its constructor failed (port, camera): out
                        self.faults[name] = f"{e}".splitlines()[0][:500]
                        self.log("robot_fault", robot=name, error=self.faults[name])
                        self.remove_robot(name, reason="could not (re)start")
                        continue
            if st is None:
                self.robot_stats.setdefault(name, {})["reachable"] = False
                continue
            prev = self.robot_stats.get(name, {})
            if prev.get("stream") not in (None, st["stream"]):
                self.collector_restarts[name] += 1
                self.log("collector_restart", robot=name, pid=st["pid"], host=st["host"])
            self.robot_stats[name] = {**st, "reachable": True}
            if st["error"] and not st["running"]:
                self.faults[name] = st["error"]
                self.log("robot_fault", robot=name, error=st["error"])
                self.remove_robot(name, reason=f"fault: {st['error']}")
        return {"learner": self.learner_stats, "robots": dict(self.robot_stats)}

    def _check_spaces(self) -> None:
        """A robot whose env has other spaces than the learner's cannot feed it: take it out, say why."""
        for name, ref in list(self._spaces.items()):
            if not self.ray.wait([ref], timeout=0)[0]:
                continue
            self._spaces.pop(name)
            try:
                spaces = self.ray.get(ref)
            except Exception:  # noqa: BLE001 - a failing constructor shows up in poll() as unreachable/error
                continue
            if spaces != self.spaces:
                self.faults[name] = f"its env's spaces {spaces} differ from the learner's {self.spaces}"
                self.log("robot_fault", robot=name, error=self.faults[name])
                self.remove_robot(name, reason="spaces differ")

    def finish(self) -> dict[str, Any]:
        """Stop every robot (rows still buffered are delivered), then the learner (final checkpoint)."""
        for name in list(self.collectors):
            self.remove_robot(name, reason="run finished")
        ls = self.ray.get(self.learner.stop.remote(), timeout=120)
        self.learner_stats = ls
        robots = {n: {"steps": s.get("steps"), "overruns": s.get("overruns"), "jitter_p99_ms": 1000 * s.get("jitter_s", {}).get("p99", float("nan")),
                      "dropped": s.get("outbox", {}).get("dropped"), "link_drops": s.get("link", {}).get("drops"),
                      "safety_stops": s.get("safety_stops"), "restarts": self.collector_restarts.get(n, 0), "fault": self.faults.get(n)}
                  for n, s in self.robot_stats.items()}
        summary = {"steps": ls["transitions"], "updates": ls["updates"], "learner_restarts": self.learner_restarts,
                   "robots": robots, "per_robot_transitions": {r: v["transitions"] for r, v in ls["per_robot"].items()},
                   "out": str(self.out)}
        self.log("summary", **summary)
        return summary

    def close(self) -> None:
        """End every actor of this run (idempotent); the run directory stays."""
        for name in list(self.collectors):
            self.ray.kill(self.collectors.pop(name), no_restart=True)
        if self.learner is not None:
            self.ray.kill(self.learner, no_restart=True)
            self.learner = None
        self.metrics.close()


def _strict(v: Any) -> Any:
    """Strict JSON for metrics.jsonl: a figure not known yet (NaN) is written as null."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v


def train_distributed(env_id: str, robot_config: Any, robots: list[RobotSpec], cfg: DistRunConfig, out_dir: str | Path, *,
                      resume: bool = False, twin: bool = False, bus_settings: dict[str, Any] | None = None,
                      describe: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run until the learner holds ``cfg.steps`` transitions; returns the summary (see DistributedRun.finish)."""
    run = DistributedRun(env_id, robot_config, robots, cfg, out_dir, resume=resume, twin=twin, bus_settings=bus_settings, describe=describe)
    try:
        run.start()
        t_log = 0.0
        while True:
            snap = run.poll()
            ls = snap["learner"]
            if ls and ls["transitions"] >= cfg.steps:
                break
            if not run.collectors:
                raise DistributedError(f"every robot has left the run: {run.faults} (replay and learner.pt are saved; --resume continues)")
            if time.monotonic() - t_log >= cfg.log_every_s:
                t_log = time.monotonic()
                _log_figures(run, snap, progress)
            time.sleep(0.5)
        return run.finish()
    finally:
        run.close()


def _log_figures(run: DistributedRun, snap: dict[str, Any], progress: bool) -> None:
    ls = snap["learner"] or {}
    robots = {n: {"reachable": s.get("reachable"), "steps": s.get("steps"), "link_up": s.get("link", {}).get("up"),
                  "unsent": s.get("outbox", {}).get("unsent"), "dropped": s.get("outbox", {}).get("dropped"),
                  "jitter_p99_s": s.get("jitter_s", {}).get("p99"), "overruns": s.get("overruns"),
                  "staleness_p99": s.get("staleness_versions", {}).get("p99"), "weight_age_p99_s": s.get("weight_age_s", {}).get("p99")}
              for n, s in snap["robots"].items()}
    run.log("train", step=ls.get("transitions"), updates=ls.get("updates"), version=ls.get("version"),
            critic_loss=ls.get("critic_loss"), alpha=ls.get("alpha"), robots=robots)
    if progress:
        up = sum(1 for r in robots.values() if r["link_up"])
        print(f"step {ls.get('transitions')}/{run.cfg.steps} | upd {ls.get('updates')} | robots linked {up}/{len(robots)} | "
              f"learner restarts {run.learner_restarts}", file=sys.stderr, flush=True)
