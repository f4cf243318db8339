"""The quadruped's autonomous stand-up: a scripted reset with the robot's own means (no teleporting).

At every episode reset the 12-servo quadruped (hardware_configs/quadruped.yaml) gets up by itself
from standing, collapsed, or fallen after (small) random actions, then checks it is upright by
tracking (the torso marker seen by the overhead camera):

    report = stand_up(robot)            # raises StandUpError if a human has to help

The routine only sends joint goals with `robot.step(q_goal)`, so every command goes through the
safety monitor (clipped to the joint limits, rate-limited, current stop). It is a list of named key
poses, each reached by linear interpolation over `move_s` and then held for `hold_s`:

    1. fold       thighs back, shins forward (the "tuck" pose): a compact, symmetric shape;
                  then the torso must be roughly level (tilt <= `lying_above_rad`), else
                  StandUpError (lying on a side or on its nose: see Limits);
    2. tuck       the same pose again, held (feet on the floor, torso up on them);
    3. crouch     feet under the hips, hips straight: the body rests on its four feet;
    4. rise       slowly to the stand pose (hip 0, knee 0.6, foot -1.2, the MJCF keyframe "stand");
    5. settle     hold the stand pose, then verify: tilt < `tilt_ok_rad`, marker height within
                  `height_tol_m` of `stand_height_m`, joints within `joint_tol_rad` of the pose.

The sequence is retried up to `max_attempts` times. A safety stop during an attempt (SafetyStop,
e.g. the current stop: a servo at its current limit for 0.5 s; torque is off by then) counts as a
failed attempt: `robot.recover()` (torque on, holding the present pose) and the next attempt starts
from wherever the robot lies; `StandUpReport.safety_stops` counts them. If recover() refuses, or
the torso is upside down (tilt > `upside_down_above_rad`: the marker on its back faces the floor,
and on hardware the tracker returns None), or it is still not up, StandUpError says what was seen.

Heights: `TorsoPose.height_m` and every height here is the MARKER centre above the floor (the
marker lies 0.036 m above the torso centre): 0.292 m when standing in the twin.

Limits (found in the MuJoCo twin, 2026-11):
    Lying on a side is NOT handled: stand_up raises StandUpError ("lying on its side ... a human
    has to put the robot on its feet") after the harmless fold, without trying anything else.
    A brace-and-swing roll-over (low legs straight and abducted outward to lift the torso past
    the side, then drop them flat along the body while the high legs swing out) reliably gets it
    belly-down with the legs flat along the body (roll 0, torso centre 0.091 m), but from there
    every quasi-static route to the crouch tips it onto its nose (pitch +60..+90 deg): the feet
    start 0.1-0.2 m behind the hips and must come forward while loaded; the friction that drags
    them pitches the body nose-down (tried: tuck / crouch / straight legs, all legs or front /
    rear pairs, diagonal and side pairs, one leg at a time in four orders, slow moves, hip
    abduction). The one sequence that worked (rear legs flat, front legs one after the other,
    the formerly low one first, to hip -0.5 / knee 0.3 / foot -1.5 over 0.75-0.8 s) is a
    knife edge: 0.7 or 0.85 s, or hip -0.4, leave it on its side or flip it upside down, so it is
    not used. A fix probably needs a different leg (knee range past vertical) or a dynamic
    manoeuvre designed with margin.
    Wide random actions can flip it upside down: also StandUpError.

Duck-typed robot interface (robosac.robots.robot.Robot: SimRobot or HardwareRobot):
    names, dt_s, limits_min_rad, limits_max_rad, read() -> state(.position), step(q_goal) ->
    state (may raise SafetyStop), recover(), torso() -> pose(.roll/.pitch/.tilt/.height_m) or None.

Joint conventions (sim/models/quadruped.xml), the same on all four legs: hip = abduction,
positive = foot toward the body's centre line; knee = thigh pitch, positive = thigh back;
foot = shin pitch relative to the thigh, negative = shin forward. With knee k and foot -2k the foot
is right under the hip; marker height = 0.075 + 0.2 cos(k) + 0.018 + 0.036 m (k = 0.6: 0.294 m).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from robosac.robots.safety import SafetyStop

__all__ = ["STAND", "CROUCH", "TUCK", "KeyPose", "StandUpConfig", "StandUpError", "StandUpReport", "stand_up", "leg_pose"]

LEGS = ("fr", "fl", "br", "bl")
JOINTS = ("hip", "knee", "foot")


class StandUpError(RuntimeError):
    """The robot could not get up by itself (or cannot be seen): a human has to help."""


def leg_pose(hip_rad: float, knee_rad: float, foot_rad: float, **per_leg: tuple[float, float, float]) -> dict[str, float]:
    """Joint goals by name: the same (hip, knee, foot) on every leg, except legs named in
    `per_leg` (e.g. fr=(h, k, f))."""
    out: dict[str, float] = {}
    for leg in LEGS:
        h, k, f = per_leg.get(leg, (hip_rad, knee_rad, foot_rad))
        out.update({f"{leg}_hip": h, f"{leg}_knee": k, f"{leg}_foot": f})
    return out


@dataclass(frozen=True)
class KeyPose:
    """A named joint-space key pose: reached by linear interpolation over move_s, then held hold_s."""

    name: str
    goals_rad: dict[str, float]
    move_s: float
    hold_s: float


# Tuck: thighs straight back, shins forward-down (foot at its -2.0 limit): the feet land ~6 cm
# behind the hips, the torso ~0.18 m up. From lying flat (legs along the body) a direct move to the
# crouch swings the front feet down first and tips the robot onto its rear end; via the tuck all
# four feet touch down together.
TUCK = leg_pose(0.0, math.pi / 2, -2.0)
# Stand pose = MJCF keyframe "stand": feet right under the hips (foot = -2 x knee).
STAND = leg_pose(0.0, 0.6, -1.2)
# Lowest crouch with the feet under the hips (knee 1.0, foot -2.0 = the foot's limit): torso
# centre ~0.20 m up on its feet, or resting on the folded legs when it lies down.
CROUCH = leg_pose(0.0, 1.0, -2.0)


@dataclass(frozen=True)
class StandUpConfig:
    """Tuning of the stand-up. Angles rad, lengths m, times s. Heights are the torso MARKER centre
    above the floor (TorsoPose.height_m), not the torso centre (0.036 m lower)."""

    stand_pose_rad: dict[str, float] = field(default_factory=lambda: dict(STAND))
    crouch_pose_rad: dict[str, float] = field(default_factory=lambda: dict(CROUCH))
    tuck_pose_rad: dict[str, float] = field(default_factory=lambda: dict(TUCK))
    max_attempts: int = 3
    # Verification (step 5).
    tilt_ok_rad: float = math.radians(10.0)
    stand_height_m: float = 0.292  # marker height where the stand pose settles in the twin (keyframe: 0.294)
    height_tol_m: float = 0.03
    joint_tol_rad: float = 0.15
    # After the fold the torso must be roughly level: more tilt = lying on a side or on its nose,
    # which this routine cannot fix (module docstring, Limits).
    lying_above_rad: float = math.radians(40.0)
    # More tilt = upside down: the marker faces the floor (hardware: the tracker returns None).
    upside_down_above_rad: float = math.radians(120.0)
    # Slow-down factor on every move and hold (>1 = slower; the real robot may want 1.5-2).
    time_scale: float = 1.0
    # Poll the tracker for this long (s, one control period apart, holding the pose) before
    # concluding it sees nothing. 3 periods (0.15 s) was too short on the twin under CI load: a
    # standing robot's marker went unseen that long now and then, and the stand-up gave up.
    tracker_wait_s: float = 0.5


@dataclass(frozen=True)
class StandUpReport:
    attempts: int  # full stand-up sequences run (0: it was standing and only settled)
    duration_s: float  # control periods sent x dt_s (robot time, not wall clock)
    wall_s: float
    final_tilt_rad: float
    final_height_m: float  # marker centre above the floor
    final_roll_rad: float
    final_pitch_rad: float
    max_joint_error_rad: float
    safety_stops: int  # attempts cut short by a SafetyStop (then robot.recover())
    poses: tuple[str, ...]  # key poses sent, in order


def _stand_poses(cfg: StandUpConfig) -> list[KeyPose]:
    return [
        KeyPose("tuck", cfg.tuck_pose_rad, move_s=0.8, hold_s=0.3),
        KeyPose("crouch", cfg.crouch_pose_rad, move_s=0.8, hold_s=0.4),
        KeyPose("rise", cfg.stand_pose_rad, move_s=1.5, hold_s=0.0),
        KeyPose("settle", cfg.stand_pose_rad, move_s=0.0, hold_s=1.0),
    ]


class _Driver:
    """Sends interpolated key poses with robot.step and keeps the time count."""

    def __init__(self, robot, cfg: StandUpConfig) -> None:
        self.robot = robot
        self.cfg = cfg
        self.names = tuple(robot.names)
        self.lo = np.asarray(robot.limits_min_rad, dtype=float)
        self.hi = np.asarray(robot.limits_max_rad, dtype=float)
        self.dt = float(robot.dt_s)
        self.steps = 0
        self.sent: list[str] = []
        self.last_goal = np.asarray(robot.read().position, dtype=float).copy()

    def resync(self) -> None:
        """After recover(): interpolate from the measured pose."""
        self.last_goal = np.asarray(self.robot.read().position, dtype=float).copy()

    def vector(self, goals: dict[str, float]) -> np.ndarray:
        missing = set(self.names) - set(goals)
        if missing:
            raise ValueError(f"key pose lacks joints {sorted(missing)}")
        return np.clip(np.array([goals[n] for n in self.names], dtype=float), self.lo, self.hi)

    def go(self, kp: KeyPose) -> None:
        self.sent.append(kp.name)
        target = self.vector(kp.goals_rad)
        start = self.last_goal
        n_move = max(1, int(round(kp.move_s * self.cfg.time_scale / self.dt)))
        n_hold = int(round(kp.hold_s * self.cfg.time_scale / self.dt))
        for i in range(1, n_move + 1):
            self._step(start + (target - start) * (i / n_move))
        for _ in range(n_hold):
            self._step(target)

    def _step(self, q: np.ndarray) -> None:
        self.robot.step(q)
        self.last_goal = q
        self.steps += 1

    def pose(self):
        """The tracked torso pose, polling a few periods (holding the last goal) if it is unseen."""
        for _ in range(max(1, math.ceil(self.cfg.tracker_wait_s / self.dt))):
            p = self.robot.torso()
            if p is not None:
                return p
            self._step(self.last_goal)
        return None


def _describe(p) -> str:
    def deg(v):
        return "?" if v is None else f"{math.degrees(v):.1f}"

    h = "?" if p.height_m is None else f"{p.height_m:.3f}"
    return f"tilt {deg(p.tilt)} deg (roll {deg(p.roll)}, pitch {deg(p.pitch)}), marker height {h} m"


_HUMAN = "A human has to put the robot on its feet."


def stand_up(robot, config: StandUpConfig = StandUpConfig()) -> StandUpReport:
    """Get the quadruped up from standing, collapsed or fallen on its feet side; verify by tracking.

    Returns a StandUpReport; raises StandUpError (with what was seen) when the torso is not visible,
    upside down, lying on a side (see Limits in the module docstring), a safety stop cannot be
    recovered, or it is still not up after `config.max_attempts` attempts."""
    cfg = config
    if cfg.max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {cfg.max_attempts}")
    t0 = time.monotonic()
    drv = _Driver(robot, cfg)
    stand_q = drv.vector(cfg.stand_pose_rad)
    stops = 0
    seen = "nothing yet"

    def look(attempt: int, when: str):
        p = drv.pose()
        if p is None or (p.tilt is not None and p.tilt > cfg.upside_down_above_rad):
            what = "the tracker does not see the torso marker (upside down, or out of view)" if p is None else (
                f"upside down ({_describe(p)}): the marker faces the floor")
            raise StandUpError(f"stand-up attempt {attempt}, {when}: {what}; before that: {seen}. {_HUMAN}")
        return p

    def torso_up(p) -> bool:
        return (
            p is not None and p.tilt is not None and p.height_m is not None
            and p.tilt < cfg.tilt_ok_rad
            and abs(p.height_m - cfg.stand_height_m) <= cfg.height_tol_m
        )

    def up_ok(p, q: np.ndarray) -> bool:
        return torso_up(p) and float(np.max(np.abs(q - stand_q))) <= cfg.joint_tol_rad

    def report(attempt: int, p, jerr: float) -> StandUpReport:
        return StandUpReport(
            attempts=attempt,
            duration_s=drv.steps * drv.dt,
            wall_s=time.monotonic() - t0,
            final_tilt_rad=float(p.tilt),
            final_height_m=float(p.height_m),
            final_roll_rad=float(p.roll if p.roll is not None else math.nan),
            final_pitch_rad=float(p.pitch if p.pitch is not None else math.nan),
            max_joint_error_rad=jerr,
            safety_stops=stops,
            poses=tuple(drv.sent),
        )

    # Already up (the usual case after an episode that did not fall): the torso is level at about
    # standing height, the legs wherever the policy left them. Settle into the exact stand pose and
    # check again, instead of folding down and getting up (6 s on the robot).
    p0 = drv.pose()
    if torso_up(p0):
        try:
            drv.go(KeyPose("settle", cfg.stand_pose_rad, move_s=0.6, hold_s=0.3))
            p = drv.pose()
            q = np.asarray(robot.read().position, dtype=float)
            if up_ok(p, q):
                return report(0, p, float(np.max(np.abs(q - stand_q))))
        except SafetyStop:
            robot.recover()
            drv.resync()

    for attempt in range(1, cfg.max_attempts + 1):
        try:
            p = look(attempt, "at the start")
            if seen == "nothing yet":
                seen = f"at the start {_describe(p)}"
            # 1. Fold: compact shape; from a side this also brings the feet near the floor.
            drv.go(KeyPose("fold", cfg.tuck_pose_rad, move_s=0.8, hold_s=0.4))
            p = look(attempt, "after the fold")
            if p.tilt is not None and p.tilt > cfg.lying_above_rad:
                raise StandUpError(
                    f"stand-up attempt {attempt}: lying on its side or nose after the fold ({_describe(p)}); "
                    f"there is no self-righting manoeuvre for that (see Limits in robosac.robots.quadruped_reset). "
                    f"{_HUMAN}"
                )
            # 2.-5. Feet under the body, rise slowly, settle.
            for kp in _stand_poses(cfg):
                drv.go(kp)
        except SafetyStop as e:
            stops += 1
            seen = f"safety stop in attempt {attempt}: {e}"
            try:
                robot.recover()
            except SafetyStop as e2:
                raise StandUpError(f"stand-up attempt {attempt}: {seen}; recover() refused: {e2}. {_HUMAN}") from e2
            drv.resync()
            continue
        p = look(attempt, "after rising")
        q = np.asarray(robot.read().position, dtype=float)
        jerr = float(np.max(np.abs(q - stand_q)))
        seen = _describe(p) + f", max joint error {jerr:.2f} rad"
        ok = (
            p.tilt is not None
            and p.height_m is not None
            and p.tilt < cfg.tilt_ok_rad
            and abs(p.height_m - cfg.stand_height_m) <= cfg.height_tol_m
            and jerr <= cfg.joint_tol_rad
        )
        if ok:
            return report(attempt, p, jerr)
    raise StandUpError(
        f"not upright after {cfg.max_attempts} stand-up attempt(s): {seen} (want tilt < "
        f"{math.degrees(cfg.tilt_ok_rad):.0f} deg, marker height {cfg.stand_height_m:.3f} +- {cfg.height_tol_m:.3f} m, "
        f"joints within {cfg.joint_tol_rad:.2f} rad of the stand pose). A human has to help."
    )
