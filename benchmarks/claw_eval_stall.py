"""Why a trained claw misses: stalls, the policy's mean against its samples, and what the encoder reads.

For a `robosac train` run of ClawValveTurn (sim backend), plays the same episodes (seeds SEED,
SEED+1, ...) with the policy's mean action (the evaluation's), then with sampled actions once per
torch seed 0..--sample-seeds-1 (a single sampled pass is one noisy draw).
For each deterministic episode it reports the final error (rad), whether the valve had stalled
(moved less than --stall-rad over the episode's second half) and, where the run trained a reward
head (`--sac reward_head=true`), the head's prediction of the last step's reward next to the
reward itself: a head that predicts the bonus of |error| < 0.1 rad at 0.16 rad says the encoder
reads the valve as on target when it is not. Each episode also records how much the policy's
action changed per step over its second half (mean |a_t - a_t-1| over joints and steps) and the
joint-speed cost there: a policy that settles holds its action, one that chatters does not.
--noise-scale S scales the sampled passes' noise (S * the policy's std): how much noise a stall
needs to come loose. --action-ema BETA plays every pass with each action low-passed (BETA * previous + (1 - BETA) *
policy's), as a probe of whether steadier actions would finish the misses; the policy was not
trained with it, so it sees actions it did not choose in its last-action input.

    MUJOCO_GL=egl .venv/bin/python benchmarks/claw_eval_stall.py runs/robel_rh/seed0 --episodes 40

Prints one line per missed deterministic episode and a JSON summary (also written with --out).
"""

from __future__ import annotations

import argparse
import json
import sys

import gymnasium as gym
import numpy as np
import torch

from _claw_run import load_claw_run
from robosac.persist import atomic_write_bytes
from robosac.sac.sac import SAC


def scaled_sample(agent: SAC, obs, noise_scale: float) -> np.ndarray:
    """tanh(mean + noise_scale * std * eps) in env units: the policy's sample with its noise scaled."""
    with torch.inference_mode():
        mean, log_std = agent.actor(agent.encoder(agent.obs_to_torch(obs)))
        a = torch.tanh(mean + noise_scale * log_std.exp() * torch.randn_like(mean))
        return (agent.action_center + agent.action_half_range * a)[0].cpu().numpy()


def play(env: gym.Env, agent: SAC, seed: int, deterministic: bool, action_ema: float = 0.0, noise_scale: float = 1.0) -> dict:
    obs, _ = env.reset(seed=seed)
    errors, actions, speed_costs = [], [], []
    done = False
    while not done:
        a = agent.act(obs, deterministic=True) if deterministic else scaled_sample(agent, obs, noise_scale)
        if actions:
            a = action_ema * actions[-1] + (1.0 - action_ema) * a
        obs, reward, terminated, truncated, info = env.step(a)
        done = terminated or truncated
        errors.append(-info["score"])
        actions.append(a)
        speed_costs.append(info["reward/joint_vel_cost"])
    predicted = None
    if agent.reward_head is not None:  # on the last observation, the one the last reward was for
        with torch.inference_mode():
            predicted = float(agent.reward_head(agent.encoder(agent.obs_to_torch(obs))))
    h = len(errors) // 2
    half = errors[h:]
    return {"success": bool(info["success"]), "final_error_rad": errors[-1], "second_half_range_rad": max(half) - min(half),
            "last_reward": float(reward), "last_reward_predicted": predicted,
            "second_half_action_change": float(np.abs(np.diff(np.array(actions[h:]), axis=0)).mean()),
            "second_half_joint_vel_cost": float(np.mean(speed_costs[h:]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=12345, help="first episode's seed")
    ap.add_argument("--stall-rad", type=float, default=0.02, help="a miss whose valve moved less than this in the second half stalled")
    ap.add_argument("--sample-seeds", type=int, default=5, help="repeat the sampled pass with torch seeds 0..N-1 (one draw is noisy)")
    ap.add_argument("--action-ema", type=float, default=0.0, metavar="BETA", help="low-pass every action: BETA * previous + (1 - BETA) * policy's")
    ap.add_argument("--noise-scale", type=float, default=1.0, metavar="S",
                    help="sampled passes draw tanh(mean + S * std * noise): S = 1 is the policy's own sample")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.episodes < 1:
        ap.error(f"--episodes: invalid value {args.episodes}; allowed: an integer >= 1")
    if args.sample_seeds < 1:
        ap.error(f"--sample-seeds: invalid value {args.sample_seeds}; allowed: an integer >= 1")
    if not 0.0 <= args.action_ema < 1.0:
        ap.error(f"--action-ema: invalid value {args.action_ema}; allowed: a number in [0, 1)")
    if not args.noise_scale > 0.0:
        ap.error(f"--noise-scale: invalid value {args.noise_scale}; allowed: a number > 0")
    loaded = load_claw_run(args.run_dir, "claw_eval_stall")
    if loaded is None:
        return 2
    ck, env, agent = loaded
    res: dict = {"run": args.run_dir, "updates": ck["counters"]["updates"], "episodes": args.episodes, "first_seed": args.seed,
                 "action_ema": args.action_ema, "noise_scale": args.noise_scale}
    passes = [("deterministic", 0)] + [(f"stochastic_seed{k}", k) for k in range(args.sample_seeds)]
    for mode, torch_seed in passes:
        torch.manual_seed(torch_seed)  # the sampled actions' noise, so a rerun gives the same figures
        eps = [play(env, agent, args.seed + i, mode == "deterministic", args.action_ema, args.noise_scale) for i in range(args.episodes)]
        misses = [e for e in eps if not e["success"]]
        res[mode] = {"success_rate": float(np.mean([e["success"] for e in eps])),
                     "median_final_error_rad": float(np.median([e["final_error_rad"] for e in eps])),
                     "misses": len(misses), "stalled_misses": sum(e["second_half_range_rad"] < args.stall_rad for e in misses)}
        for name, group in (("successes", [e for e in eps if e["success"]]), ("stalled_misses", [e for e in misses if e["second_half_range_rad"] < args.stall_rad]),
                            ("moving_misses", [e for e in misses if e["second_half_range_rad"] >= args.stall_rad])):
            if group:
                res[mode][f"{name}_median_action_change"] = float(np.median([e["second_half_action_change"] for e in group]))
        if mode == "deterministic":
            for i, e in enumerate(eps):
                if not e["success"]:
                    pred = "" if e["last_reward_predicted"] is None else f", reward head {e['last_reward_predicted']:+.0f}"
                    print(f"episode {i}: final error {e['final_error_rad']:.3f} rad, moved {e['second_half_range_rad']:.3f} rad "
                          f"in the second half, last reward {e['last_reward']:+.0f}{pred}")
            res["deterministic"]["episodes"] = eps
    sampled = [res[m]["success_rate"] for m, _ in passes[1:]]
    res["stochastic_success_mean"], res["stochastic_success_min_max"] = float(np.mean(sampled)), [min(sampled), max(sampled)]
    env.close()
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "episodes"} if isinstance(v, dict) else v) for k, v in res.items()}))
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
