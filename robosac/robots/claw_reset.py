"""The claw's own reset: fingers to their reset pose, then the valve servo sets the start angle.

Sequence (only joint goals through `Robot.step`, so every move is clipped and rate limited):
1. valve limp, fingers torque on. A finger away from `reset.pose_rad` goes there by a path that
   keeps its tip off the valve: one reaching in over the valve (`_reaches_in`) first curls its
   tip joint to the `reset.clear_pose_rad` value (the tip lifts off the hub and the prongs) and
   then swings out to the clear pose; one whose tip is out already, or hangs straight at the
   prongs' height (limp after power-up or a stop), swings out first, its tip as it is (curled, it
   would sweep into the hub). Out there the tip joint goes to its pose value, and only then do all
   fingers go to the pose. Swung straight to the pose, a tip dragged on the hub, or came down on a
   prong's end when a prong sat under the finger, at the current cap (BENCHMARKS.md);
2. a finger still further than `reset.tolerance_rad` from its pose after `reset.timeout_s` (held,
   jammed) is tried again by the same path, after first side-stepping: its top (spread) joint goes
   SIDESTEP_RAD to one side of its pose value on the second attempt and to the other side on the
   third. A finger wedged on a prong (middle in over the valve, tip bent out) tripped a current
   stop on every move of either path and was freed only sideways (or by turning the valve): one
   `make demo` run, f0 at middle -0.88, tip +0.87 rad (BENCHMARKS.md). A current stop (every
   servo switched off) halts the finger that tripped it: torque comes back on at once where every
   joint is (the valve limp again), that finger backs out to where it was when that move began
   (the next move of the path goes on from there), and the other fingers carry on (they are
   neither dropped limp nor counted as missed);
3. after `reset.max_attempts` misses: `human_help(message)` is called if given (the env passes a
   console prompt on a terminal) and the sequence starts over once; otherwise `ResetError`;
4. the valve servo drives the valve to the start angle (`valve_goal_rad`: at most 3/4 of a turn
   away, the equivalent multi-turn angle nearest zero, so the turns the policy made are unwound),
   holds it briefly, then goes limp.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from robosac.hal.units import wrap_angle
from robosac.robots.robot import Robot, RobotState
from robosac.robots.safety import SafetyStop

__all__ = ["ResetError", "ClawResetReport", "reset_claw", "valve_goal_rad"]

VALVE = "valve"
VALVE_TOLERANCE_RAD = 0.05
VALVE_SETTLE_S = 0.2
# A finger reaches in over the valve when its middle joint is past straight (< 0) or its tip link
# points in (middle + bottom) by more than this, rad.
REACH_IN_RAD = 0.3
# A missed finger's side-step before it is tried again, rad on its top joint (limits +-0.48).
SIDESTEP_RAD = 0.4


class ResetError(RuntimeError):
    """The robot could not reset itself (and no human was asked, or it failed after help)."""


@dataclass
class ClawResetReport:
    attempts: int = 0
    disentangled: list[str] = field(default_factory=list)  # fingers that missed the pose and were tried again
    current_stops: int = 0
    human_asked: int = 0
    valve_start_rad: float = math.nan
    duration_s: float = 0.0  # wall-clock time (hardware) or steps x dt (sim), s


def _clock(robot: Robot) -> float:
    """The robot's time, s: simulation time for a SimRobot, the wall clock otherwise."""
    sim = getattr(robot, "sim", None)
    return sim.time if sim is not None else time.monotonic()


def _fingers(names: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if n != VALVE:
            out.setdefault(n.split("_")[0], []).append(i)
    return out


def _drive(robot: Robot, goal: np.ndarray, mask: np.ndarray, tol: float, timeout_s: float, report: ClawResetReport) -> RobotState:
    """Step toward goal until every joint in mask is within tol or timeout. A current stop (which
    switched every servo off) halts only the finger that tripped it: the robot recovers at once
    (torque on where every joint is, no limp settle: limp fingers would fall onto the valve), the
    joints that were limp go limp again (the valve during the finger moves: held in place, it would
    keep a finger hooked on a prong pressing at the current cap), the tripping finger goes back to
    where it was when this move began (pushed on, a tip wedged against the hub stays wedged; backed
    out, it is free again), or stays where it is if it trips on the way back, and the other joints
    carry on. The caller's next move goes on from where the tripping finger ended up."""
    goal, mask = goal.copy(), mask.copy()
    st = robot.last_state or robot.read()
    start = st.position.copy()
    backed = np.zeros(len(goal), dtype=bool)
    limp = [n for n, on in zip(robot.names, robot.torque_on) if not on]  # read before a stop turns all off
    for _ in range(max(1, int(math.ceil(timeout_s / robot.dt_s)))):
        try:
            st = robot.step(goal)
        except SafetyStop as e:
            if any(ev.kind != "current" for ev in e.events):
                raise
            report.current_stops += 1
            robot.recover(settle=False)
            if limp:
                robot.set_torque(False, limp)
            st = robot.last_state or robot.read()
            held = np.isin([n.split("_")[0] for n in robot.names], [ev.joint.split("_")[0] for ev in e.events])
            back = held & ~backed
            goal[back] = start[back]  # back the way it came: it was free there
            goal[held & backed] = st.position[held & backed]  # stopped again on the way back: stay
            backed |= held
            mask = (mask & ~held) | back
        if np.all(np.abs(st.position[mask] - goal[mask]) <= tol):
            break
    return st


def _off_pose(q: np.ndarray, pose: np.ndarray, fingers: dict[str, list[int]], tol: float) -> list[str]:
    """The fingers with a joint further than tol from its pose value (q, pose: rad, every joint)."""
    return [f for f, idx in fingers.items() if np.any(np.abs(q[idx] - pose[idx]) > tol)]


def _reaches_in(middle_rad: float, tip_rad: float) -> bool:
    """Whether a finger reaches in over the valve, so its tip must curl up before it swings out:
    its tip link points in (middle + tip < -REACH_IN_RAD), or its middle joint is past straight
    (< 0) while the tip link does not point out (< REACH_IN_RAD). A tip bent out (middle -0.92,
    tip +1.43 rad, one real-time run) curled into the hub and wedged there; swung out, it cleared."""
    return middle_rad + tip_rad < -REACH_IN_RAD or (middle_rad < 0 and middle_rad + tip_rad < REACH_IN_RAD)


def _move_to_pose(robot: Robot, pose: np.ndarray, clear: np.ndarray, fingers: dict[str, list[int]], tol: float,
                  timeout_s: float, report: ClawResetReport, sidestep_rad: float = 0.0) -> RobotState:
    """Steps 1 and 2 of the module docstring. fingers: name -> joint indices, base to tip.
    sidestep_rad: each finger away from its pose first moves its top joint to its pose value plus
    this, the others held (a trip backs it out, as in every move)."""
    st = robot.last_state or robot.read()
    away = [fingers[f] for f in _off_pose(st.position, pose, fingers, tol)]
    if away and sidestep_rad:
        goal, mask = st.position.copy(), np.zeros(len(pose), dtype=bool)
        for idx in away:
            goal[idx[0]] = pose[idx[0]] + sidestep_rad
            mask[idx] = True
        st = _drive(robot, goal, mask, tol, timeout_s, report)
    if away:
        goal = pose.copy()
        mask = np.zeros(len(pose), dtype=bool)
        for idx in away:
            q = st.position[idx]
            goal[idx] = q
            if _reaches_in(q[-2], q[-1]):
                goal[idx[-1]] = clear[idx[-1]]  # reaching in over the valve: curl the tip up first
            else:
                goal[idx[:-1]] = clear[idx[:-1]]  # tip out or hanging at the prongs' height: swing out first
            mask[idx] = True
        st = _drive(robot, goal, mask, tol, timeout_s, report)
        for idx in away:
            goal[idx[:-1]] = clear[idx[:-1]]  # swung out, the tip as it is
        st = _drive(robot, goal, mask, tol, timeout_s, report)
        for idx in away:
            goal[idx[-1]] = pose[idx[-1]]  # uncurl the tip outside the prongs
        st = _drive(robot, goal, mask, tol, timeout_s, report)
    finger_mask = np.zeros(len(pose), dtype=bool)
    finger_mask[[i for idx in fingers.values() for i in idx]] = True
    return _drive(robot, pose, finger_mask, tol, timeout_s, report)


def valve_goal_rad(q_rad: float, start_rad: float, limit_rad: float) -> float:
    """The multi-turn valve angle to reset to, rad: one equivalent to start_rad (mod 2 pi).

    Of the equivalent angles at most 1.5 pi away from q_rad (there is always one within pi), the
    one nearest zero: a valve the policy left half a turn on is taken back rather than on, so
    episode after episode of turning the same way does not wind the servo's multi-turn count up.
    (Taking the shortest way did: one real-time run hit the config's 100-turn limit at episode 315,
    BENCHMARKS.md.) A valve already more than half of limit_rad out (spun by the policy) goes one
    more turn towards zero.
    """
    base = q_rad + float(wrap_angle(start_rad - q_rad))
    near = [base + k * 2 * math.pi for k in (-1, 0, 1) if abs(base + k * 2 * math.pi - q_rad) <= 1.5 * math.pi]
    goal = min(near, key=abs)
    if abs(goal) > 0.5 * limit_rad:
        goal -= math.copysign(2 * math.pi, goal)
    return goal


def reset_claw(
    robot: Robot,
    start_angle_rad: float,
    *,
    human_help: Callable[[str], None] | None = None,
) -> ClawResetReport:
    """Reset the claw (see module docstring). start_angle_rad: the valve's start angle, rad."""
    cfg = robot.config.reset
    if cfg.pose_rad is None:
        raise ResetError(f"{robot.config.name}: reset.pose_rad is not configured")
    t0 = _clock(robot)
    report = ClawResetReport()
    names = robot.names
    v = names.index(VALVE)
    fingers = _fingers(names)
    pose = np.array([cfg.pose_rad.get(n, 0.0) for n in names])
    clear = np.array([(cfg.clear_pose_rad or cfg.pose_rad).get(n, 0.0) for n in names])

    robot.set_torque(False, [VALVE])
    robot.set_torque(True, [n for n in names if n != VALVE])
    asked = False
    while True:
        for k in range(cfg.max_attempts):
            report.attempts += 1
            sidestep = (0.0, SIDESTEP_RAD, -SIDESTEP_RAD)[k % 3]
            st = _move_to_pose(robot, pose, clear, fingers, cfg.tolerance_rad, cfg.timeout_s, report, sidestep)
            missed = _off_pose(st.position, pose, fingers, cfg.tolerance_rad)
            if not missed:
                break
            report.disentangled.extend(missed)
        else:
            at = "; ".join(f"{f} at {np.round(st.position[fingers[f]], 2).tolist()} rad" for f in missed)
            msg = (f"claw reset: finger(s) {', '.join(missed)} did not reach the reset pose within "
                   f"{cfg.tolerance_rad} rad after {cfg.max_attempts} attempts ({at}; "
                   f"{report.current_stops} current stop(s) on the way)")
            if human_help is None or asked:
                raise ResetError(msg)
            report.human_asked += 1
            asked = True
            human_help(msg)
            robot.recover()
            robot.set_torque(False, [VALVE])
            continue
        break

    # The valve: drive to the start angle (unwinding the turns the policy made), then limp.
    robot.set_torque(True, [VALVE])
    q_v = (robot.last_state or robot.read()).position[v]
    target = valve_goal_rad(q_v, start_angle_rad, robot.limits_max_rad[v])
    goal = pose.copy()
    goal[v] = target
    vmask = np.zeros(len(names), dtype=bool)
    vmask[v] = True
    travel_s = abs(target - q_v) / robot.limits.max_speed_rad_s[v]
    st = _drive(robot, goal, vmask, VALVE_TOLERANCE_RAD, cfg.timeout_s + travel_s, report)
    robot.hold(VALVE_SETTLE_S)
    st = robot.last_state or st
    err = abs(float(wrap_angle(st.position[v] - start_angle_rad)))
    robot.set_torque(False, [VALVE])
    if err > 2 * VALVE_TOLERANCE_RAD:
        raise ResetError(f"claw reset: the valve servo reached {st.position[v]:.3f} rad, {err:.3f} rad from the start angle {start_angle_rad:.3f}")
    report.valve_start_rad = float(st.position[v])
    report.duration_s = _clock(robot) - t0
    return report
