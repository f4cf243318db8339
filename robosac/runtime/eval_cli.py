"""`robosac eval RUN_DIR`: replay a trained policy (deterministic) and optionally record a video.

Reads RUN_DIR/run.json (what was trained) and RUN_DIR/learner.pt (the learner's checkpoint); runs
`--episodes` episodes on the run's env (`--backend` to switch, e.g. evaluate a twin-trained policy
in the fast sim; `--twin` for the hardware backend on the twin) and prints a JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """A finished run's description (RUN_DIR/run.json) and learner checkpoint (RUN_DIR/learner.pt).
    Raises ValueError naming the directory and what is missing or unreadable."""
    from robosac.persist import CheckpointError, load_checkpoint

    run = Path(run_dir)
    try:
        return json.loads((run / "run.json").read_text()), load_checkpoint(run / "learner.pt")
    except (OSError, json.JSONDecodeError, CheckpointError) as e:
        raise ValueError(f"{run} is not a finished robot run: {e}") from e


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="replay a trained policy from a run directory (optionally recording an MP4)")
    p.add_argument("run_dir", help="a run directory written by `robosac train` on a robot env")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--video", default=None, help="MP4 path for the first episode (default: none)")
    p.add_argument("--video-camera", default=None, metavar="NAME",
                   help="sim backend: record the video from this MJCF camera at 320x240 (e.g. the quadruped's "
                        "'follow', which moves with it, the claw's 'side') instead of the robot's own camera")
    p.add_argument("--backend", choices=("sim", "hardware"), default=None, help="default: the run's own")
    p.add_argument("--twin", action="store_true", help="hardware backend on a twin started for this evaluation")
    p.add_argument("--port", default=None)
    p.add_argument("--camera", default=None)
    p.add_argument("--seed", type=int, default=20_000)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import robosac  # noqa: F401 - env ids
    from robosac.runtime.telemetry import evaluate
    from robosac.sac.sac import Policy, sac_config_from

    run = Path(args.run_dir)
    try:
        desc, ck = load_run(run)
    except ValueError as e:
        print(f"robosac eval: {e}", file=sys.stderr)
        return 2
    backend = args.backend or desc["backend"]
    if args.video_camera is not None and (backend != "sim" or args.video is None):
        print("robosac eval: --video-camera needs the sim backend (a real robot has only its own camera) and --video PATH",
              file=sys.stderr)
        return 2
    kwargs = {**desc.get("env_kwargs", {}), "backend": backend, "pixels": desc.get("pixels", False), "render_mode": "rgb_array"}
    target = desc["target"]
    if target.endswith((".yaml", ".yml")):
        from robosac.config import load_config

        kwargs["config"] = load_config(target)
    twin = None
    if backend == "hardware":
        if args.twin:
            from robosac.runtime.bench import TwinProcess

            twin = TwinProcess(target if target.endswith((".yaml", ".yml")) else "hardware_configs/claw.yaml")
            kwargs.update(twin.env_kwargs())
        else:
            kwargs.update(port=args.port, camera_source=args.camera)
    render = None  # the env's own: the robot's camera
    try:
        env = gym.make(desc["env_id"], **kwargs)
        if args.video_camera is not None:
            sim = env.unwrapped.robot.sim
            cameras = [sim.model.camera(i).name for i in range(sim.model.ncam)]
            if args.video_camera not in cameras:
                env.close()
                print(f"robosac eval: --video-camera {args.video_camera!r}: the model's cameras are {cameras}", file=sys.stderr)
                return 2
            render = lambda: sim.render(args.video_camera, 320, 240)  # noqa: E731
        agent = Policy(env.observation_space, env.action_space, sac_config_from(ck["agent"]["config"]))  # the run's settings
        agent.load_state_dict(ck["agent"])
        res = evaluate(env, lambda o: agent.act(o, deterministic=True), args.episodes, seed=args.seed, video_path=args.video,
                       render=render)
        env.close()
    finally:
        twin_stats = twin.stop() if twin is not None else None
    if twin_stats is not None:
        # The twin's own audit of what reached the servos (the safety monitor should keep it {}).
        res["twin_servo_limit_violations"] = twin_stats.get("servo_limit_violations")
    print(json.dumps({"run": str(run), "backend": backend, "updates": ck["counters"]["updates"], **res}), flush=True)
    return 0

