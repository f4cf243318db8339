"""What moves behind an emulated servo: the `JointModel` interface and a default first-order model.

Units at this interface are SI at the servo horn, *before* the control table's Drive Mode /
Homing Offset are applied:

- position: rad, multi-turn, 0 rad = encoder tick 0 (so tick 2048 = pi rad); 4096 ticks = 2 pi rad
- velocity: rad/s
- current: A (positive in the positive direction of motion)

The servo (servo.py) converts its control table into a target for the joint and the joint's state
back into Present Position / Velocity / Current. With no physics attached every servo gets a
`FirstOrderJoint`; the MuJoCo twin attaches its own joints through the same three methods.

Optional fault hook: a joint model may also have ``jam(on: bool, seconds: float | None = None)``
(`sim.dxl.faults.Faults.jam` checks for it with hasattr). While jammed the joint is physically held
where it was when the jam began and does not follow its target; the servo keeps answering and reads
the joint as usual. The jam ends by itself after `seconds` of the model's own clock (None or 0: until
``jam(False)``). Jamming a jammed joint keeps its anchor and only replaces the duration.

Threading: the emulator thread calls these methods with the chain's lock held, whenever a packet
touches the servo (and from the watchdog timer). An implementation stepped by another thread (a
physics loop) must guard its own state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class JointState:
    position_rad: float
    velocity_rad_s: float
    current_a: float


@dataclass(frozen=True)
class JointTarget:
    """What the servo's controller asks of the joint.

    position_rad: goal (rad, horn, multi-turn). max_velocity_rad_s: the servo's speed cap
    (profile velocity if set, else Velocity Limit, else the motor's no-load speed).
    max_current_a: current cap (Goal Current in mode 5, else Current Limit); None where the model
    has no current control (XL430). position_p_gain: raw Position P Gain, for models that use it.
    """

    position_rad: float
    max_velocity_rad_s: float
    max_current_a: float | None
    position_p_gain: int = 800


@runtime_checkable
class JointModel(Protocol):
    def set_torque(self, on: bool) -> None:
        """Torque on: track the target. Torque off: the joint is free (limp)."""

    def set_target(self, target: JointTarget) -> None:
        """New goal for the joint (only meaningful while torque is on)."""

    def read(self) -> JointState:
        """The joint's state now (the servo calls this whenever the host reads present values)."""


class FirstOrderJoint:
    """A rate-limited first-order tracker: dx/dt = clamp((target - x) / tau, +-v_max).

    Integrated exactly on wall-clock time whenever it is read, so no thread steps it. Current is a
    made-up but plausible figure: a holding term proportional to the position error plus a term
    proportional to speed, clamped to the current cap. Torque off: the joint stays where it is.

    `jam(True, seconds)`: the joint stops where it is (velocity 0) until the jam ends; the current
    is the same holding term on the (growing) error, so a servo pushing against the jam draws up to
    its cap. When a timed jam ends the integration resumes from that instant, not from the read.
    """

    def __init__(self, position_rad: float = math.pi, tau_s: float = 0.03, clock=time.monotonic) -> None:
        self._clock = clock
        self._x = float(position_rad)
        self._v = 0.0
        self._i = 0.0
        self._tau = tau_s
        self._torque = False
        self._target = JointTarget(position_rad=self._x, max_velocity_rad_s=5.0, max_current_a=None)
        self._t = clock()
        self._jam_until: float | None = None  # clock time the jam ends (inf: until jam(False))

    def set_torque(self, on: bool) -> None:
        self._advance()
        self._torque = bool(on)
        if not on:
            self._v = 0.0
            self._i = 0.0

    def set_target(self, target: JointTarget) -> None:
        self._advance()
        self._target = target

    def read(self) -> JointState:
        self._advance()
        return JointState(self._x, self._v, self._i)

    # Tests (and faults) may move a limp joint by hand.
    def move_to(self, position_rad: float) -> None:
        self._advance()
        self._x = float(position_rad)

    def jam(self, on: bool, seconds: float | None = None) -> None:
        """Hold the joint where it is now (on) for `seconds` (None/0: until jam(False)), or release it."""
        self._advance()
        if not on:
            self._jam_until = None
            return
        self._v = 0.0
        self._jam_until = self._clock() + seconds if seconds else math.inf

    @property
    def jammed(self) -> bool:
        self._advance()
        return self._jam_until is not None

    def _advance(self) -> None:
        now = self._clock()
        if self._jam_until is not None:
            if now < self._jam_until:
                self._t = now
                self._v = 0.0
                self._i = self._current(0.0) if self._torque else 0.0
                return
            # The jam ended between the last update and now: the joint was held until then.
            self._t = max(self._t, self._jam_until)
            self._jam_until = None
        dt = now - self._t
        self._t = now
        if dt <= 0 or not self._torque:
            return
        tgt = self._target
        vmax = max(tgt.max_velocity_rad_s, 1e-6)
        err = tgt.position_rad - self._x
        # Exact solution of the first-order lag while unsaturated; saturate at vmax.
        if abs(err) / self._tau > vmax:
            # Saturated phase: move at vmax until the error falls to vmax*tau, then exponential.
            t_sat = (abs(err) - vmax * self._tau) / vmax
            if dt <= t_sat:
                self._x += math.copysign(vmax * dt, err)
                self._v = math.copysign(vmax, err)
                dt = 0.0
            else:
                self._x += math.copysign(vmax * t_sat, err)
                dt -= t_sat
                err = tgt.position_rad - self._x
        if dt > 0:
            decay = math.exp(-dt / self._tau)
            new_err = err * decay
            self._x = tgt.position_rad - new_err
            self._v = new_err / self._tau
        if abs(self._v) < 1e-4:
            self._v = 0.0
        self._i = self._current(self._v)

    def _current(self, v: float) -> float:
        """Holding effort on the error plus a speed term (A), clamped to the current cap."""
        tgt = self._target
        i = 0.5 * (tgt.position_rad - self._x) * tgt.position_p_gain / 800.0 + 0.05 * v
        if tgt.max_current_a is not None:
            i = max(-tgt.max_current_a, min(tgt.max_current_a, i))
        return i
