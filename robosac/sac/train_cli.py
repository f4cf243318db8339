"""`robosac train TARGET`: train SAC and print a one-line JSON summary as the last stdout line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym

from robosac.sac.sac import SACConfig
from robosac.sac.spaces import UnsupportedSpaceError
from robosac.sac.train import ResumeError, TrainConfig, train


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
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"env steps between checkpoints, besides the one at the end (default {d.checkpoint_every})")
    p.add_argument("--replay-flush-every", type=int, default=d.replay_flush_every,
                   help=f"transitions between replay-chunk writes (also every {d.replay_flush_interval_s:g} s; default {d.replay_flush_every})")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                   help="continue the run in DIR (default: --out) from its checkpoint and replay chunks, up to --steps in total; "
                        "pass the original run's options")
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
        checkpoint_every=args.checkpoint_every,
        replay_flush_every=args.replay_flush_every,
        sac=SACConfig(actor_lr=args.lr, critic_lr=args.lr, alpha_lr=args.lr),
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
    if args.target not in gym.registry:
        print(f"robosac train: unknown target {args.target!r}: not a registered Gymnasium env id", file=sys.stderr)
        return 2
    try:
        summary = train(lambda: gym.make(args.target), cfg, out, progress=not args.no_progress, resume=args.resume is not None)
    except (UnsupportedSpaceError, ResumeError, ValueError) as exc:
        print(f"robosac train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"target": args.target, **summary}), flush=True)
    return 0
