"""`robosac train TARGET`: train SAC and print a one-line JSON summary as the last stdout line.

TARGET is a plain Gymnasium id (e.g. Pendulum-v1: the synchronous loop in robosac/sac/train.py), a
robosac env id (`robosac/ClawValveTurn-v0`, default `--backend sim`), or a hardware config YAML
(e.g. hardware_configs/claw.yaml: `--backend hardware` on the robot at the config's port, or on the
twin with `--twin`). Robot envs train asynchronously (robosac/runtime/run.py): a collector thread at
the control rate and a learner process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

from robosac.sac.config import SACConfig, TrainConfig, sac_config_from


def register(sub: argparse._SubParsersAction) -> None:
    d, s = TrainConfig(), SACConfig()
    p = sub.add_parser("train", help="train SAC on a Gymnasium env id (e.g. Pendulum-v1)")
    p.add_argument("target", help="Gymnasium env id, e.g. Pendulum-v1")
    p.add_argument("--steps", type=int, default=d.steps, help=f"env steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="run directory for metrics.jsonl, checkpoint.pt and replay/ (required unless --resume DIR)")
    p.add_argument("--learning-starts", type=int, default=d.learning_starts, help="random-action steps before learning")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--updates-per-step", type=int, default=d.updates_per_step)
    p.add_argument("--lr", type=float, default=s.critic_lr, help="learning rate of actor, critics and temperature")
    p.add_argument("--sac", action="append", default=[], metavar="KEY=VALUE",
                   help="any SACConfig setting, repeatable, applied after --lr: e.g. --sac critic_dropout=0.01 --sac gamma=0.95")
    p.add_argument("--relabel", type=float, default=0.0, metavar="FRACTION",
                   help="robot envs with targets (ClawValveTurn): relabel this fraction of each batch with targets near the angle reached")
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (sync loop: default torch's; robot envs: the learner process's, default 1, keeping a core for the control loop)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"env steps between checkpoints, besides the one at the end (default {d.checkpoint_every})")
    p.add_argument("--replay-flush-every", type=int, default=d.replay_flush_every,
                   help=f"transitions between replay-chunk writes (also every {d.replay_flush_interval_s:g} s; default {d.replay_flush_every})")
    p.add_argument("--backend", choices=("sim", "hardware"), default=None,
                   help="robot envs: sim (MuJoCo directly; default for env ids) or hardware (default for a config YAML)")
    p.add_argument("--twin", action="store_true", help="hardware backend on the real-time twin: start `robosac twin CONFIG` and use its port and camera")
    p.add_argument("--port", default=None, help="hardware backend: serial port (default: the config's)")
    p.add_argument("--camera", default=None, help="hardware backend: camera source (default: the config's)")
    p.add_argument("--pixels", action="store_true", help="robot envs: add camera images to the observation")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", dest="env_settings",
                   help="robot envs: a constructor keyword, repeatable, e.g. --env variant=random --env valve_in_state=false "
                        "--env frame_stack=3 --env image_size=[48,48]")
    p.add_argument("--eval-every-episodes", type=int, default=10,
                   help="robot envs: play every Nth episode deterministically and record it to videos/ (0 = never; default 10)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                   help="continue the run in DIR (default: --out) from its checkpoint and replay chunks, up to --steps in total; "
                        "pass the original run's options")
    from robosac.distributed import cli as distributed_cli

    distributed_cli.add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        args.sac_config = sac_config_from(args.sac, SACConfig(actor_lr=args.lr, critic_lr=args.lr, alpha_lr=args.lr))
    except ValueError as exc:
        print(f"robosac train: --sac: {exc}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        steps=args.steps,
        seed=args.seed,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        updates_per_step=args.updates_per_step,
        eval_episodes=args.eval_episodes,
        torch_threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        replay_flush_every=args.replay_flush_every,
        sac=args.sac_config,
    )
    out = args.out
    if args.resume:
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            print(f"robosac train: --out {out} and --resume {args.resume} name different directories", file=sys.stderr)
            return 2
        out = args.resume
    if out is None:
        print("robosac train: --out DIR is required (or --resume DIR)", file=sys.stderr)
        return 2
    if args.resume is not None and not Path(out).is_dir():
        print(f"robosac train: nothing to resume: {out} is not a directory", file=sys.stderr)
        return 2
    robot = _robot_target(args.target)
    if args.cluster is None:
        from robosac.distributed.cli import uses_distributed_options

        flag = uses_distributed_options(args)
        if flag:
            print(f"robosac train: {flag} applies to distributed training only: add --cluster auto|local|ADDRESS", file=sys.stderr)
            return 2
    elif robot is None:
        print(f"robosac train: --cluster trains robots: give a hardware config (e.g. hardware_configs/claw.yaml), not {args.target!r}",
              file=sys.stderr)
        return 2
    if robot is not None or args.target.startswith("robosac/"):
        return _run_robot(args, out, robot)
    if args.env_settings:
        print("robosac train: --env applies to robot envs (robosac/... ids or a hardware config)", file=sys.stderr)
        return 2
    if args.relabel:
        print("robosac train: --relabel applies to robot envs with targets (robosac/ClawValveTurn-v0)", file=sys.stderr)
        return 2
    if args.target not in gym.registry:
        print(f"robosac train: unknown target {args.target!r}: not a registered Gymnasium env id or a hardware config", file=sys.stderr)
        return 2
    from robosac.sac.spaces import UnsupportedSpaceError
    from robosac.sac.train import ResumeError, train

    try:
        summary = train(lambda: gym.make(args.target), cfg, out, progress=not args.no_progress, resume=args.resume is not None)
    except (UnsupportedSpaceError, ResumeError, ValueError) as exc:
        print(f"robosac train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"target": args.target, **summary}), flush=True)
    return 0


# Hardware config name -> the task env trained on that robot.
ROBOT_ENVS = {"claw": "robosac/ClawValveTurn-v0", "quadruped": "robosac/QuadrupedWalk-v0"}


def _robot_target(target: str) -> Any:
    """The RobotConfig if TARGET is a hardware config file, else None."""
    if not target.endswith((".yaml", ".yml")):
        return None
    from robosac.config import load_config

    return load_config(target)


def _run_robot(args: argparse.Namespace, out: str, robot: Any) -> int:
    if args.cluster is None:
        # Its learner is forked from a server that imports torch: started first, that server's
        # imports run beside this process's own, not after them.
        from robosac.runtime.learner import start_learner_server

        start_learner_server()
    from robosac.config import ConfigError
    from robosac.runtime.run import RunConfig, RunError, train_async

    if robot is not None:
        env_id = ROBOT_ENVS.get(robot.name)
        if env_id is None:
            print(f"robosac train: no task for robot {robot.name!r} ({args.target}); known: {', '.join(ROBOT_ENVS)}", file=sys.stderr)
            return 2
        backend = args.backend or "hardware"
    else:
        env_id, backend = args.target, args.backend or "sim"
        if env_id not in gym.registry:
            print(f"robosac train: unknown env id {env_id!r}; robosac ids: {', '.join(ROBOT_ENVS.values())}", file=sys.stderr)
            return 2
    from robosac.envs import env_kwargs_from

    try:
        args.env_kwargs = env_kwargs_from(env_id, args.env_settings)
    except ValueError as exc:
        print(f"robosac train: --env: {exc}", file=sys.stderr)
        return 2
    if args.twin and backend != "hardware":
        print("robosac train: --twin runs the hardware backend on the twin; drop --backend sim", file=sys.stderr)
        return 2
    if args.cluster is not None:
        if args.relabel:
            print("robosac train: --relabel is not available with --cluster yet (single-machine runs only)", file=sys.stderr)
            return 2
        for key in ("aux_weight", "privileged_critic"):
            if getattr(args.sac_config, key):
                print(f"robosac train: --sac {key} is not available with --cluster yet (single-machine runs only)", file=sys.stderr)
                return 2
        if backend != "hardware":
            print("robosac train: --cluster runs robots on the hardware backend; drop --backend sim", file=sys.stderr)
            return 2
        from robosac.distributed import cli as distributed_cli

        return distributed_cli.run(args, out, robot, env_id)
    twin = None
    kwargs: dict[str, Any] = {**args.env_kwargs, "backend": backend, "pixels": args.pixels, "render_mode": "rgb_array"}
    if robot is not None:
        kwargs["config"] = robot
    if backend == "hardware":
        if args.twin:
            from robosac.runtime.bench import TwinProcess

            twin = TwinProcess(args.target if robot is not None else "hardware_configs/claw.yaml")
            kwargs.update(twin.env_kwargs())
        else:
            kwargs.update(port=args.port, camera_source=args.camera)
    cfg = RunConfig(steps=args.steps, seed=args.seed, learning_starts=args.learning_starts, batch_size=args.batch_size,
                    max_updates_per_step=float(args.updates_per_step), eval_episodes=args.eval_episodes, sac=args.sac_config,
                    flush_every=args.replay_flush_every, eval_every_episodes=args.eval_every_episodes,
                    wait_for_learner_slack=200 if backend == "sim" else None,
                    # One thread unless asked: a second OpenMP thread on a busy 2-core machine spins
                    # against the collector (measured: 3.6 instead of ~30 updates/s under load).
                    learner_threads=args.threads or 1, relabel_fraction=args.relabel)
    describe = {"target": args.target, "env_id": env_id, "backend": backend, "twin": args.twin, "pixels": args.pixels,
                "env_kwargs": args.env_kwargs}
    error: Exception | None = None
    try:
        summary = train_async(lambda: gym.make(env_id, **kwargs), cfg, out, resume=args.resume is not None,
                              describe=describe, progress=not args.no_progress)
    except (RunError, ConfigError, ValueError) as exc:
        error = exc
    finally:
        twin_stats = twin.stop() if twin is not None else None
    # The twin's own audit of what reached the servos (the safety monitor should keep it {}),
    # reported for a run that stopped too.
    audit = twin_stats.get("servo_limit_violations") if twin_stats is not None else None
    if error is not None:
        print(f"robosac train: {error}", file=sys.stderr)
        if twin_stats is not None:
            print(f"robosac train: twin_servo_limit_violations: {json.dumps(audit)}", file=sys.stderr)
        return 2
    if twin_stats is not None:
        summary["twin_servo_limit_violations"] = audit
    print(json.dumps({"target": args.target, **summary}), flush=True)
    return 0
