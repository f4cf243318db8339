"""A trained ClawValveTurn run, loaded for the claw diagnostics (claw_eval_stall.py, claw_q_ascent.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym

import robosac  # noqa: F401 - env ids
from robosac.runtime.eval_cli import load_run
from robosac.sac.sac import SAC, sac_config_from


def load_claw_run(run_dir: str | Path, prog: str) -> tuple[dict, gym.Env, SAC] | None:
    """(the learner's checkpoint, the run's env on the sim backend, its trained agent), or None after
    printing to stderr why RUN_DIR is not a finished ClawValveTurn run."""
    run = Path(run_dir)
    try:
        desc, ck = load_run(run)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    if not desc["env_id"].startswith("robosac/ClawValveTurn"):
        print(f"{prog}: {run} is a {desc['env_id']} run; this diagnostic is for ClawValveTurn", file=sys.stderr)
        return None
    env = gym.make(desc["env_id"], **{**desc.get("env_kwargs", {}), "backend": "sim", "pixels": desc.get("pixels", False)})
    agent = SAC(env.observation_space, env.action_space, sac_config_from(ck["agent"]["config"]))
    agent.load_state_dict(ck["agent"])
    return ck, env, agent
