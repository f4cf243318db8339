"""`robosac train TARGET`: train SAC and print a one-line JSON summary as the last stdout line."""

from __future__ import annotations

import argparse
import json
import sys

import gymnasium as gym

from robosac.sac.sac import SACConfig
from robosac.sac.spaces import UnsupportedSpaceError
from robosac.sac.train import TrainConfig, train


def register(sub: argparse._SubParsersAction) -> None:
    d, s = TrainConfig(), SACConfig()
    p = sub.add_parser("train", help="train SAC on a Gymnasium env id (e.g. Pendulum-v1)")
    p.add_argument("target", help="Gymnasium env id, e.g. Pendulum-v1")
    p.add_argument("--steps", type=int, default=d.steps, help=f"env steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", required=True, help="run directory for metrics.jsonl and checkpoint.pt")
    p.add_argument("--learning-starts", type=int, default=d.learning_starts, help="random-action steps before learning")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--updates-per-step", type=int, default=d.updates_per_step)
    p.add_argument("--lr", type=float, default=s.critic_lr, help="learning rate of actor, critics and temperature")
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        steps=args.steps,
        seed=args.seed,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        updates_per_step=args.updates_per_step,
        eval_episodes=args.eval_episodes,
        torch_threads=args.threads,
        sac=SACConfig(actor_lr=args.lr, critic_lr=args.lr, alpha_lr=args.lr),
    )
    if args.target not in gym.registry:
        print(f"robosac train: unknown target {args.target!r}: not a registered Gymnasium env id", file=sys.stderr)
        return 2
    try:
        summary = train(lambda: gym.make(args.target), cfg, args.out, progress=not args.no_progress)
    except (UnsupportedSpaceError, ValueError) as exc:
        print(f"robosac train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"target": args.target, **summary}), flush=True)
    return 0
