"""`robosac train CONFIG --cluster ...`: the distributed options and their entry point.

Registered by robosac.sac.train_cli; imports nothing heavy (Ray only once the options are valid)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from robosac.distributed import DistributedError, require_ray
from robosac.distributed.cluster import CLUSTER_HELP, LOOPBACK, parse_cluster

__all__ = ["add_arguments", "uses_distributed_options", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed training on Ray (hardware configs; pip install 'robosac[distributed]')")
    g.add_argument("--cluster", default=None, metavar="auto|local|ADDRESS",
                   help=f"train with one collector per robot and one learner as Ray actors; {CLUSTER_HELP} "
                        "(local: a Ray instance on this computer, loopback only)")
    g.add_argument("--robot", action="append", default=[], metavar="NAME[,port=PATH][,camera=SRC]",
                   help="a robot of the run (repeatable); its collector runs on the node advertising the Ray resource "
                        "robot:NAME (default: one robot named after the config)")
    g.add_argument("--bind", default=LOOPBACK, metavar="IP",
                   help=f"--cluster local: the address the Ray head advertises (default {LOOPBACK}; others need --allow-public-bind)")
    g.add_argument("--allow-public-bind", action="store_true",
                   help="allow --bind to a non-loopback address (0.0.0.0 included): trusted networks only")
    g.add_argument("--outbox-capacity", type=int, default=5000, metavar="ROWS",
                   help="transitions each robot holds while its learner is unreachable; oldest dropped beyond (default 5000)")
    g.add_argument("--weights-every-s", type=float, default=1.0, metavar="S",
                   help="each robot fetches newer weights at most this often (default 1 s; a 64x64-pixel actor is ~1.5 MB)")
    g.add_argument("--bus-margin-ms", type=float, default=None, metavar="MS",
                   help="servo reply-timeout margin on the robot computers (default: 2 ms, 20 ms with --twin)")


def uses_distributed_options(args: argparse.Namespace) -> str | None:
    """The first distributed-only option given without --cluster, if any."""
    for flag, given in (("--robot", bool(args.robot)), ("--bind", args.bind != LOOPBACK),
                        ("--allow-public-bind", args.allow_public_bind), ("--bus-margin-ms", args.bus_margin_ms is not None),
                        ("--outbox-capacity", args.outbox_capacity != 5000), ("--weights-every-s", args.weights_every_s != 1.0)):
        if given:
            return flag
    return None


def run(args: argparse.Namespace, out: str, robot: Any, env_id: str) -> int:
    """Validate, connect, train; prints the summary as one JSON line. Exit code 2 on bad input."""
    from robosac.distributed.run import DistRunConfig, RobotSpec, parse_robot, robot_resource

    try:
        spec = parse_cluster(args.cluster, bind=args.bind, allow_public_bind=args.allow_public_bind)
        ray = require_ray()
        robots = [parse_robot(r) for r in args.robot]
        if robots and (args.port or args.camera):
            raise DistributedError("--port/--camera name one robot's devices: with --robot use NAME,port=PATH,camera=SRC")
        robots = robots or [RobotSpec(robot.name, args.port, args.camera)]
        cfg = DistRunConfig(steps=args.steps, seed=args.seed, learning_starts=args.learning_starts, batch_size=args.batch_size,
                            max_updates_per_step=float(args.updates_per_step), flush_every=args.replay_flush_every, pixels=args.pixels,
                            env_kwargs=args.env_kwargs,
                            learner_threads=args.threads or 1, outbox_capacity=args.outbox_capacity, sac=args.sac_config,
                            weights_interval_s=args.weights_every_s)
        cfg.validate()
    except (DistributedError, ValueError) as exc:
        print(f"robosac train: {exc}", file=sys.stderr)
        return 2
    from robosac.distributed.cluster import connect
    from robosac.distributed.run import train_distributed

    margin = args.bus_margin_ms if args.bus_margin_ms is not None else (20.0 if args.twin else None)
    describe = {"target": args.target, "twin": args.twin, "cluster": args.cluster}
    info: dict[str, Any] | None = None
    try:
        info = connect(spec, resources={robot_resource(r.name): 1 for r in robots})
        print(f"robosac train: Ray {info['mode']} cluster at {info['gcs_address']}", file=sys.stderr, flush=True)
        summary = train_distributed(env_id, robot, robots, cfg, out, resume=args.resume is not None, twin=args.twin,
                                    bus_settings=None if margin is None else {"margin_ms": margin},
                                    describe=describe, progress=not args.no_progress)
    except DistributedError as exc:
        print(f"robosac train: {exc}", file=sys.stderr)
        return 2
    finally:
        if info is not None and info["mode"] != "existing":
            ray.shutdown()  # a head this command started; a connection it found stays
    print(json.dumps({"target": args.target, **summary}), flush=True)
    return 0
