"""ClawValveTurn: turn a free-spinning valve to a target angle with a three-finger claw (ROBEL D'Claw turn).

State (31,): finger joint positions (9, rad), finger velocities (9, rad/s), cos and sin of the
valve angle, valve velocity (rad/s), the last action (9), the signed angle error to the target
(rad, wrapped to [-pi, pi)). Pixels: the valve camera.
With valve_in_state=False (for learning from pixels, as the learning-results issue asks) the state
is (29,): the fingers' positions and velocities, the last action, and cos and sin of the target
angle; nothing the valve's own encoder reads. The reward still uses the valve's angle.
With current_in_state=True the fingers' present currents (9, A) follow, at the end: what tells a
finger pressing on the valve (at its current cap) from one resting short of its goal.

Reward (ROBEL's DClawTurn terms, summed; each in info["reward/<term>"]):
    target_dist_cost  -5 * |error|
    pose_diff_cost    -1 * ||finger q - reset pose||
    joint_vel_cost    -1 * ||finger velocities above 0.5 rad/s||
    bonus_small       +10 when |error| < 0.25 rad
    bonus_big         +50 when |error| < 0.10 rad
success: |error| < 0.1 rad; score: -|error| (rad). No termination; truncation at control.episode_s.
info["valve_rad"]: the valve's angle (rad, unwrapped, as its servo reads it).

Goal relabelling (`ClawValveTurnEnv.goal_relabeler`, `robosac train --relabel FRACTION`): the
valve's dynamics do not depend on the target, so a stored transition is as valid for any other
target once the target-dependent parts (the error feature or the target's cos/sin, the
target-distance and bonus reward terms) are recomputed; see `relabel_targets`. Without the valve in
the state, the replay keeps each transition's info["valve_rad"] (`RELABEL_INFO`) for the reward.

Auxiliary targets (`robosac train --sac aux_weight=W`, pixels): the learner's image encoder also
learns to predict the cos and sin of the valve angle each transition reached (`valve_cos_sin`,
from the same kept info["valve_rad"]: the valve servo's reading, which the reward needs on the bench
anyway). The policy still acts from the image and the fingers only.

Privileged critic inputs (`robosac train --sac privileged_critic=true`, pixels): the critics take the
state plus the cos and sin of the valve angle at s and at s' (`valve_cos_sin_both`, from the kept
info["valve_rad_before"] and info["valve_rad"]), instead of the images. Only the learner reads them.

Variants (constructor argument `variant`, or reset(options={"start_rad":..., "target_rad":...})):
    "fixed"   start 0, target pi rad (half a turn, as ROBEL's DClawTurnFixed)
    "random"  start uniform in [-pi/3, pi/3], target pi + uniform [-pi/3, pi/3] (wrapped), as ROBEL's
              DClawTurnRandom: every episode turns the valve by 60-180 degrees, either way
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np
import torch

from robosac.envs.base import RobotEnv
from robosac.hal.units import wrap_angle
from robosac.robots.claw_reset import reset_claw
from robosac.robots.robot import RobotState

__all__ = ["ClawValveTurnEnv", "VARIANTS", "SUCCESS_RAD", "relabel_targets", "relabel_near_achieved", "RELABEL_INFO", "PRIV_INFO"]

VARIANTS = ("fixed", "random")
SUCCESS_RAD = 0.1
FIXED_START_RAD = 0.0
FIXED_TARGET_RAD = math.pi  # ROBEL DClawTurnFixed: half a turn
JOINT_VEL_THRESHOLD_RAD_S = 0.5
# Relabelled targets lie within this of the valve angle a transition reached, rad: the last
# approach to the band, where the policy's misses settle (0.1-0.3 rad short).
RELABEL_RADIUS_RAD = 0.3
# Where the features sit in "state" (see the module docstring): with the valve, its cos and sin
# and the error; without it, the target's cos and sin.
_COS, _SIN, _ERR = 18, 19, 30
_TARGET_COS, _TARGET_SIN = 27, 28
# What the replay keeps from info for relabelling a state without the valve: name -> dtype.
RELABEL_INFO = {"valve_rad": "float32"}
# And for a privileged critic: the angle at the observation the action was taken from, too.
PRIV_INFO = {"valve_rad_before": "float32", "valve_rad": "float32"}


def target_terms(dist: Any) -> dict[str, Any]:
    """The reward terms that depend on the target, for |error| ``dist`` (rad; a float, or a tensor
    when relabelling)."""
    return {"target_dist_cost": -5.0 * dist, "bonus_small": 10.0 * (dist < 0.25), "bonus_big": 50.0 * (dist < SUCCESS_RAD)}


def _target_terms(error: torch.Tensor) -> torch.Tensor:
    return sum(target_terms(error.abs()).values())


def _reached_rad(batch: dict[str, Any], valve_in_state: bool) -> torch.Tensor:
    """The valve angle each transition reached (B,), rad."""
    if valve_in_state:
        s = batch["next_obs"]["state"]
        return torch.atan2(s[:, _SIN], s[:, _COS])
    return batch["valve_rad"]


def valve_cos_sin(batch: dict[str, Any]) -> torch.Tensor:
    """The claw's auxiliary targets (B, 2): cos and sin of the valve angle each row reached, from
    the replay's "valve_rad" (B,) rad."""
    v = batch["valve_rad"]
    return torch.stack([torch.cos(v), torch.sin(v)], dim=1)


def valve_cos_sin_both(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The claw's privileged critic inputs: cos and sin of the valve angle at s and at s', (B, 2)
    each, from the replay's "valve_rad_before" and "valve_rad" (B,) rad."""
    before, after = batch["valve_rad_before"], batch["valve_rad"]
    return torch.stack([torch.cos(before), torch.sin(before)], 1), torch.stack([torch.cos(after), torch.sin(after)], 1)


def relabel_targets(batch: dict[str, Any], rows: torch.Tensor, target_rad: torch.Tensor, valve_in_state: bool = True) -> dict[str, Any]:
    """``batch`` (as `SAC.sample` returns it) with rows ``rows`` (K,) moved to the targets
    ``target_rad`` (K,) rad: the target's features in obs and next_obs (the error, or the target's
    cos and sin) and the reward are what the env would have given for that target. Without the
    valve in the state the batch must hold "valve_rad" (B,), the angle each row reached. Other
    rows and the input are unchanged."""
    obs, nxt = batch["obs"]["state"].clone(), batch["next_obs"]["state"].clone()
    reached = _reached_rad(batch, valve_in_state)[rows]
    new_error = wrap_angle(target_rad - reached)  # at next_obs, which the reward is for
    if valve_in_state:
        old_error = nxt[rows, _ERR].clone()
        obs[rows, _ERR] = wrap_angle(target_rad - torch.atan2(obs[rows, _SIN], obs[rows, _COS]))
        nxt[rows, _ERR] = new_error
    else:
        old_error = wrap_angle(torch.atan2(nxt[rows, _TARGET_SIN], nxt[rows, _TARGET_COS]) - reached)
        for state in (obs, nxt):
            state[rows, _TARGET_COS], state[rows, _TARGET_SIN] = torch.cos(target_rad), torch.sin(target_rad)
    reward = batch["reward"].clone()
    reward[rows] += _target_terms(new_error) - _target_terms(old_error)
    return {**batch, "obs": {**batch["obs"], "state": obs}, "next_obs": {**batch["next_obs"], "state": nxt}, "reward": reward}


def relabel_near_achieved(batch: dict[str, Any], rng: np.random.Generator, fraction: float,
                          radius_rad: float = RELABEL_RADIUS_RAD, valve_in_state: bool = True) -> dict[str, Any]:
    """Relabel a random ``fraction`` of the rows with a target uniform within ``radius_rad`` of
    the valve angle each row reached: examples of finishing a turn, for every target, from every
    turning motion in the replay."""
    n = batch["reward"].shape[0]
    rows = torch.as_tensor(np.flatnonzero(rng.random(n) < fraction), device=batch["reward"].device)
    reached = _reached_rad(batch, valve_in_state)[rows]
    offset = torch.as_tensor(rng.uniform(-radius_rad, radius_rad, rows.numel()), dtype=reached.dtype, device=reached.device)
    return relabel_targets(batch, rows, wrap_angle(reached + offset), valve_in_state)


class ClawValveTurnEnv(RobotEnv):
    default_config = "claw.yaml"
    relabel_info = RELABEL_INFO  # what a relabelling run's replay keeps from info
    aux_info = RELABEL_INFO  # and what an auxiliary-target run's keeps (the same angle)
    aux_dim = 2
    aux_targets = staticmethod(valve_cos_sin)
    priv_info = PRIV_INFO  # what a privileged-critic run's keeps
    priv_dim = 2
    priv_inputs = staticmethod(valve_cos_sin_both)

    def __init__(self, backend: str = "sim", *, variant: str = "fixed", valve_in_state: bool = True,
                 current_in_state: bool = False, **kwargs: Any) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant: invalid value {variant!r}; allowed: {', '.join(VARIANTS)}")
        for name, flag in (("valve_in_state", valve_in_state), ("current_in_state", current_in_state)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: invalid value {flag!r}; allowed: true, false")
        self.variant = variant
        self.valve_in_state = valve_in_state
        self.current_in_state = current_in_state
        super().__init__(backend, **kwargs)
        self._fing = np.array([i for i, n in enumerate(self.robot.names) if n != "valve"])
        self._valve = self.robot.names.index("valve")
        self.target_rad = FIXED_TARGET_RAD
        self.reset_report = None
        self._valve_seen_rad = (math.nan, math.nan)  # the valve angle at the last two observations, rad

    def goal_relabeler(self, fraction: float) -> Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]:
        """A picklable ``relabel(batch, rng)`` for the learner: `relabel_near_achieved` on ``fraction``
        of each batch (its replay keeps `relabel_info` from each step's info)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"relabel: invalid value {fraction!r}; allowed: a fraction in (0, 1]")
        return functools.partial(relabel_near_achieved, fraction=fraction, valve_in_state=self.valve_in_state)

    def _task_info(self, st: RobotState) -> dict[str, float]:
        return {"valve_rad": float(st.position[self._valve]), "valve_rad_before": self._valve_seen_rad[0]}

    def _state_size(self) -> int:
        n_f = len(self.robot.names) - 1
        size = 2 * n_f + len(self.act_idx) + (4 if self.valve_in_state else 2)
        return size + (n_f if self.current_in_state else 0)

    def _error(self, st: RobotState) -> float:
        return float(wrap_angle(self.target_rad - st.position[self._valve]))

    def _features(self, st: RobotState) -> np.ndarray:
        v = st.position[self._valve]
        # Every observation (reset's and each step's) passes here, so the step's info can report
        # the angle at the observation its action was taken from (a privileged critic's input).
        self._valve_seen_rad = (self._valve_seen_rad[1], float(v))
        if not self.valve_in_state:
            parts = [st.position[self._fing], st.velocity[self._fing], self.last_action,
                     [math.cos(self.target_rad), math.sin(self.target_rad)]]
        else:
            parts = [st.position[self._fing], st.velocity[self._fing],
                     [math.cos(v), math.sin(v), st.velocity[self._valve]], self.last_action, [self._error(st)]]
        if self.current_in_state:
            parts.append(st.current[self._fing])
        return np.concatenate(parts)

    def _reward(self, st: RobotState, action: np.ndarray) -> tuple[dict[str, float], bool, float, bool]:
        dist = abs(self._error(st))
        vel = st.velocity[self._fing]
        terms = {
            **{k: float(v) for k, v in target_terms(dist).items()},
            "pose_diff_cost": -float(np.linalg.norm(st.position[self._fing] - self.nominal_rad[self._fing])),
            "joint_vel_cost": -float(np.linalg.norm(vel[np.abs(vel) >= JOINT_VEL_THRESHOLD_RAD_S])),
        }
        return terms, dist < SUCCESS_RAD, -dist, False

    def _reset_robot(self, options: dict[str, Any]) -> dict[str, Any]:
        if self.variant == "random":
            start = float(self.np_random.uniform(-math.pi / 3, math.pi / 3))
            target = float(wrap_angle(math.pi + self.np_random.uniform(-math.pi / 3, math.pi / 3)))
        else:
            start, target = FIXED_START_RAD, FIXED_TARGET_RAD
        start = float(options.get("start_rad", start))
        self.target_rad = float(options.get("target_rad", target))
        self.reset_report = reset_claw(self.robot, start, human_help=self.human_help)
        r = self.reset_report
        return {"target_rad": self.target_rad, "start_rad": r.valve_start_rad, "reset_attempts": r.attempts,
                "reset_disentangled": list(r.disentangled), "reset_current_stops": r.current_stops, "reset_duration_s": r.duration_s}
