"""Does the critic know a better action than the actor at the claw's stalls?

A trained claw's deterministic misses are mostly stalls: the valve stops 0.1-0.3 rad short and the
policy holds still (`claw_eval_stall.py`). Either the critic rates staying put as best (a critic or
reward problem) or it rates some other action higher and the actor has not found it (an actor
optimisation problem). This plays the same episodes with three action rules and compares them:

- ``mean``: the policy's mean action, tanh(mu(s)) (what every evaluation uses);
- ``q_ascent``: that action refined by --ascent-steps of Adam on min_i Q_i(s, a) in the
  pre-tanh space (the critic frozen, running statistics for CrossQ's batch norm);
- ``best_of_N``: the highest min_i Q_i(s, a) among N actions sampled from the policy and its mean.

If ``q_ascent`` or ``best_of_N`` finish the stalls, the critic already knows the way and the actor
lags it. Each episode also records min_i Q(s, a) at its last step for the mean action and for the
rule's own action.

    MUJOCO_GL=egl .venv/bin/python benchmarks/claw_q_ascent.py runs/claw_state_filter05_s1 --episodes 80

Prints one JSON summary (also written with --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from _claw_run import load_claw_run
from robosac.persist import atomic_write_bytes
from robosac.sac.sac import SAC


def min_q(agent: SAC, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """min_i Q_i(s, a) for (B, F) features and (B, A) actions in [-1, 1]: (B,)."""
    return agent.critic(feat.expand(action.shape[0], -1), action, frozen=True).min(0).values


def choose(agent: SAC, obs, rule: str, ascent_steps: int, ascent_lr: float, n_samples: int) -> tuple[np.ndarray, float, float]:
    """(env action, min-Q of the mean action, min-Q of the chosen action)."""
    with torch.no_grad():
        feat = agent.encoder(agent.obs_to_torch(obs))
        mean_u = agent.actor(feat)[0]
        a = torch.tanh(mean_u)
        q_mean = float(min_q(agent, feat, a))
        if rule == "best_of_n":
            cand = torch.cat([a, agent.actor.sample(feat.expand(n_samples, -1))[0]])
            q = min_q(agent, feat, cand)
            a = cand[int(q.argmax())].unsqueeze(0)
    if rule == "q_ascent":
        u = mean_u.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=ascent_lr)
        for _ in range(ascent_steps):
            opt.zero_grad()
            (-min_q(agent, feat, torch.tanh(u)).sum()).backward()
            opt.step()
        a = torch.tanh(u.detach())
    with torch.no_grad():
        q_chosen = float(min_q(agent, feat, a))
    env_action = (agent.action_center + agent.action_half_range * a)[0].cpu().numpy()
    return env_action, q_mean, q_chosen


def play(env: gym.Env, agent: SAC, seed: int, rule: str, args: argparse.Namespace) -> dict:
    obs, _ = env.reset(seed=seed)
    errors: list[float] = []
    done = False
    while not done:
        a, q_mean, q_chosen = choose(agent, obs, rule, args.ascent_steps, args.ascent_lr, args.samples)
        obs, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
        errors.append(-info["score"])
    half = errors[len(errors) // 2 :]
    return {"success": bool(info["success"]), "final_error_rad": errors[-1], "second_half_range_rad": max(half) - min(half),
            "last_q_mean_action": q_mean, "last_q_chosen": q_chosen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=12345, help="first episode's seed (claw_eval_stall.py's default)")
    ap.add_argument("--ascent-steps", type=int, default=20)
    ap.add_argument("--ascent-lr", type=float, default=0.1, help="Adam step on the pre-tanh action")
    ap.add_argument("--samples", type=int, default=64, help="N for best_of_N")
    ap.add_argument("--stall-rad", type=float, default=0.02)
    ap.add_argument("--rules", default="mean,q_ascent,best_of_n")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rules = args.rules.split(",")
    for r in rules:
        if r not in ("mean", "q_ascent", "best_of_n"):
            ap.error(f"--rules: invalid value {r!r}; allowed: mean, q_ascent, best_of_n (comma-separated)")
    if args.episodes < 1 or args.ascent_steps < 1 or args.samples < 1:
        ap.error("--episodes, --ascent-steps and --samples: allowed: integers >= 1")
    loaded = load_claw_run(args.run_dir, "claw_q_ascent")
    if loaded is None:
        return 2
    ck, env, agent = loaded
    torch.set_num_threads(1)
    for m in (agent.encoder, agent.actor, agent.critic):
        m.eval()
    res: dict = {"run": args.run_dir, "updates": ck["counters"]["updates"], "episodes": args.episodes, "first_seed": args.seed,
                 "ascent_steps": args.ascent_steps, "ascent_lr": args.ascent_lr, "samples": args.samples,
                 "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    for rule in rules:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        eps = [play(env, agent, args.seed + i, rule, args) for i in range(args.episodes)]
        misses = [e for e in eps if not e["success"]]
        res[rule] = {"success_rate": float(np.mean([e["success"] for e in eps])),
                     "median_final_error_rad": float(np.median([e["final_error_rad"] for e in eps])),
                     "misses": len(misses), "stalled_misses": sum(e["second_half_range_rad"] < args.stall_rad for e in misses),
                     "wall_s": time.perf_counter() - t0, "episodes": eps}
        print(json.dumps({"rule": rule, **{k: v for k, v in res[rule].items() if k != "episodes"}}), flush=True)
    env.close()
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
