"""Distributed training on Ray vs the single-process runtime, on this machine: throughput, weight
staleness and control-loop jitter with 1, 2 and 4 twin claws (pixels on).

Each configuration starts N `robosac twin` processes (nominal model, 128×128 camera at 30 fps) and
a DistributedRun with one collector actor per twin and one learner actor on a local Ray cluster
(loopback), the claw at --rate-hz with 64×64×3 pixels, long episodes (no reset inside the window),
the learner updating flat out (batch 128, at most 1000 updates per transition, publishing every
update). After warm-up (learner updating, every robot acting with learned weights) it measures for
--seconds: transitions/s reaching the learner, learner updates/s, weight staleness at each control
step (learner version - acting version as last seen; age of the acting weights in s), and each
loop's |deadline jitter| and overruns. Each robot's control loop runs in its own process beside its
collector actor, its thread under SCHED_FIFO where permitted (the default; each robot reports its
`scheduling`). The baseline is `robosac bench loop`'s async design (collector thread + learner
process in one program) at the same rate and image size, run twice: a normal collector thread
(`single_process`) and one under SCHED_FIFO (`single_process_realtime`). For N > 1 robots it also
runs the single-machine way of training N robots, N of those programs side by side
(`single_process_side_by_side`: each its own twin, learner and SCHED_FIFO loop, loops staggered with
the same phases and camera rate as the Ray robots), so each robot's jitter can be compared under
the same number of robots on the machine.

    .venv/bin/python benchmarks/distributed.py --seconds 25 --collectors 1 2 4

Writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLAW = ROOT / "hardware_configs" / "claw.yaml"
BATCH = 128
# Reply margin as in the tests: N twins, N loops and a learner share 2 busy cores.
BUS = {"margin_ms": 50.0, "read_retries": 4}


def _ms(p: dict[str, float]) -> dict[str, float]:
    return {k: round(1000 * v, 6) for k, v in p.items()}  # to the ns: FIFO loops jitter well under 1 us


def run_distributed(n: int, seconds: float, rate_hz: float) -> dict[str, Any]:
    import ray

    from robosac.config import load_config
    from robosac.distributed.run import DistRunConfig, DistributedRun, RobotSpec
    from robosac.runtime.bench import TwinProcess

    base = load_config(CLAW)
    cfg_robot = replace(base, control=replace(base.control, rate_hz=rate_hz, episode_s=max(4 * seconds, 60.0)))
    # The camera renders at the control rate (not the config's 30 fps): four twins rendering at 30 fps
    # beside four loops and a learner starve 2 cores before anything is measured.
    twins = [TwinProcess(CLAW, randomize=False, camera_fps=rate_hz) for _ in range(n)]
    cfg = DistRunConfig(steps=10**9, learning_starts=BATCH, batch_size=BATCH, max_updates_per_step=1000.0, publish_every=1,
                        checkpoint_every_s=3600.0, pixels=True, replay_capacity=20_000)
    robots = [RobotSpec(f"b{i}", t.serial, t.camera) for i, t in enumerate(twins)]
    run = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = DistributedRun("robosac/ClawValveTurn-v0", cfg_robot, robots, cfg, Path(tmp) / "run", bus_settings=BUS)
            t_start = time.monotonic()
            run.start()
            while True:  # warm-up: the learner updates and every robot acts with its weights
                s = run.poll()
                if s["learner"].get("updates", 0) > 0 and all(r.get("acting_version", 0) > 1 for r in s["robots"].values()) \
                        and len(s["robots"]) == n:
                    break
                if run.faults:
                    raise RuntimeError(f"a robot faulted during warm-up: {run.faults}")
                if time.monotonic() - t_start > 180:
                    raise RuntimeError(f"warm-up did not finish: {s}")
                time.sleep(0.5)
            warm_s = time.monotonic() - t_start
            t0, l0 = time.monotonic(), s["learner"]
            steps0 = {name: r["steps"] for name, r in s["robots"].items()}
            over0 = {name: r["overruns"] for name, r in s["robots"].items()}
            resets0 = {name: r["episodes"] for name, r in s["robots"].items()}
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                run.poll()
            if len(run.collectors) < n:
                raise RuntimeError(f"a robot left the run during the measurement: {run.faults}")
            t1 = time.monotonic()
            l1 = ray.get(run.learner.stats.remote())
            per = {name: ray.get(h.stats.remote(since_step=steps0[name])) for name, h in run.collectors.items()}
            wall = t1 - t0
            robots_out = {name: {"steps_per_s": (r["steps"] - steps0[name]) / wall, "overruns": r["overruns"] - over0[name],
                                 "jitter_ms": _ms(r["jitter_s"]), "obs_to_action_ms": _ms(r["obs_to_action_s"]),
                                 "staleness_versions": r["staleness_versions"], "weight_age_s": r["weight_age_s"],
                                 "outbox_max_held": r["outbox"]["max_held"], "dropped": r["outbox"]["dropped"],
                                 "link_drops": r["link"]["drops"], "scheduling": r["scheduling"],
                                 # episodes ended in the window (each a reset of 1-2 s without steps)
                                 "resets": r["episodes"] - resets0[name]} for name, r in per.items()}
            result = {
                "collectors": n, "rate_hz": rate_hz, "seconds": round(wall, 1), "warm_up_s": round(warm_s, 1),
                "transitions_per_s": (l1["transitions"] - l0["transitions"]) / wall,
                "target_transitions_per_s": n * rate_hz,
                "learner_updates_per_s": (l1["updates"] - l0["updates"]) / wall,
                "learner_device": l1["device"], "weights_bytes": l1["weights_bytes"],
                "staleness_versions_p50_max": max(r["staleness_versions"]["p50"] for r in per.values()),
                "staleness_versions_p99_max": max(r["staleness_versions"]["p99"] for r in per.values()),
                "weight_age_s_p50_max": max(r["weight_age_s"]["p50"] for r in per.values()),
                "weight_age_s_p99_max": max(r["weight_age_s"]["p99"] for r in per.values()),
                "jitter_ms_p99_max": max(r["jitter_ms"]["p99"] for r in robots_out.values()),
                "overruns_total": sum(r["overruns"] for r in robots_out.values()),
                "robots": robots_out,
            }
            run.finish()
            return result
    finally:
        if run is not None:
            run.close()
        for t in twins:
            t.stop()


def run_single(seconds: float, rate_hz: float, realtime: bool, phase: float = 0.0, camera_fps: float | None = None,
               bus_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    from robosac.runtime.bench import bench_loop

    r = bench_loop(seconds=seconds, rate_hz=rate_hz, mode="async", pixels=True, realtime=realtime, phase=phase,
                   camera_fps=camera_fps, bus_settings=bus_settings)
    steady = r["steady_state_steps"]
    return {"collectors": 1, "rate_hz": rate_hz, "seconds": seconds, "transitions_per_s": steady / (seconds + 0.0),
            "learner_updates_per_s": r["learner_updates_per_s"], "weight_age_s": r["weights_age_s"],
            "weights_pickup_delay_s": r["weights_pickup_delay_s"], "jitter_ms": r["jitter_ms"], "overruns": r["overruns"],
            "obs_to_action_ms": r["obs_to_action_ms"], "scheduling": r["collector_scheduling"], "note": "robosac bench loop (async); "
            "transitions/s = steady-state steps / window (the window runs a little longer than --seconds)"}


def _single_worker(queue: Any, seconds: float, rate_hz: float, phase: float) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        queue.put((phase, run_single(seconds, rate_hz, True, phase=phase, camera_fps=rate_hz, bus_settings=BUS)))
    except Exception as e:  # noqa: BLE001 - reported as the result
        queue.put((phase, {"error": f"{type(e).__name__}: {e}"}))


def run_side_by_side(n: int, seconds: float, rate_hz: float) -> dict[str, Any]:
    """N single-process runtimes at once (separate processes, phases as the Ray run gives them)."""
    import multiprocessing as mp

    from robosac.distributed.run import loop_phase

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # Not a Pool: its workers are daemons, and each runtime starts a learner process of its own.
    procs = [ctx.Process(target=_single_worker, args=(queue, seconds, rate_hz, loop_phase(i))) for i in range(n)]
    for p in procs:
        p.start()
    by_phase = dict(queue.get(timeout=seconds + 300) for _ in procs)
    for p in procs:
        p.join(30)
    results = [by_phase[loop_phase(i)] for i in range(n)]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"a side-by-side runtime failed: {errors}")
    return {"collectors": n, "rate_hz": rate_hz, "seconds": seconds,
            "jitter_ms_p99_max": max(r["jitter_ms"]["p99"] for r in results),
            "overruns_total": sum(r["overruns"] for r in results),
            "robots": {f"s{i}": {"phase": loop_phase(i), "jitter_ms": r["jitter_ms"], "overruns": r["overruns"],
                                 "learner_updates_per_s": r["learner_updates_per_s"], "scheduling": r["scheduling"]}
                       for i, r in enumerate(results)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=25.0, help="measurement window per configuration (s)")
    ap.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import ray

    __import__("robosac")  # registers the env ids (robosac/...)
    from robosac.distributed.cluster import connect, parse_cluster

    out: dict[str, Any] = {"command": "benchmarks/distributed.py " + " ".join(
        [f"--seconds {args.seconds:g}", "--collectors", *map(str, args.collectors), f"--rate-hz {args.rate_hz:g}"]),
        "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg()}
    for key, rt in (("single_process", False), ("single_process_realtime", True)):
        print(f"{key} ...", flush=True)
        out[key] = run_single(args.seconds, args.rate_hz, rt)
        print(json.dumps(out[key]), flush=True)
    out["single_process_side_by_side"] = []
    for n in [c for c in args.collectors if c > 1]:
        print(f"{n} single-process runtimes side by side ...", flush=True)
        try:
            r = run_side_by_side(n, args.seconds, args.rate_hz)
        except Exception as e:  # noqa: BLE001 - a configuration this machine cannot run is a result too
            r = {"collectors": n, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"}
        out["single_process_side_by_side"].append(r)
        print(json.dumps(out["single_process_side_by_side"][-1]), flush=True)
    connect(parse_cluster("local"), resources={f"robot:b{i}": 1 for i in range(max(args.collectors))})
    out["ray"] = ray.__version__
    out["distributed"] = []
    from robosac.persist import atomic_write_bytes

    try:
        for n in args.collectors:
            print(f"{n} collector(s) ...", flush=True)
            try:
                r = run_distributed(n, args.seconds, args.rate_hz)
            except Exception as e:  # noqa: BLE001 - a configuration this machine cannot run is a result too
                r = {"collectors": n, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"}
            print(json.dumps({k: v for k, v in r.items() if k != "robots"}), flush=True)
            out["distributed"].append(r)
            out["load_avg_at_end"] = os.getloadavg()
            atomic_write_bytes(args.out, (json.dumps(out, indent=1) + "\n").encode())  # after each, so nothing is lost
    finally:
        ray.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
