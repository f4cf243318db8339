"""Raw servo values <-> SI units, and per-joint calibration. Used once, at the bus boundary.

Conventions (documented once here, used everywhere):
  * servo angle  theta = (ticks - 2048) * 2*pi/4096  [rad]; tick 2048 (mode-3 centre) -> 0 rad,
    as robosac.config documents (servo 0 rad = tick 2048).
  * joint angle  q = sign * (theta - offset_rad)  [rad]; so offset_rad is the servo angle at which
    the joint reads zero and sign (+1/-1) flips the direction. The inverse is
    theta = sign * q + offset_rad  (sign is its own inverse).
  * velocity     qd = sign * raw * 0.229 rev/min  [rad/s]
  * current      i = sign * raw * amps_per_unit  [A]; sign applied so that positive current
    accompanies positive joint velocity (torque direction follows the joint frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robosac.hal.control_table import (
    CENTER_TICK,
    RAD_PER_TICK,
    RAD_S2_PER_ACC_UNIT,
    RAD_S_PER_VEL_UNIT,
    VOLT_PER_UNIT,
)


def to_signed(value: int, size: int) -> int:
    """Two's-complement decode of an unsigned `size`-byte value (the SDK's getData is unsigned)."""
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def to_unsigned(value: int, size: int) -> int:
    """Two's-complement encode of a signed int into `size` bytes; range-checked.

    Uses a mask, not `value + 2**bits - 1` style arithmetic (ROBEL's off-by-one, -1 -> 0xFFFFFFFE).
    """
    bits = 8 * size
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
    if not lo <= value <= hi:
        raise ValueError(f"{value} does not fit in {size} byte(s)")
    return value & ((1 << bits) - 1)


def le_bytes(value: int, size: int) -> list[int]:
    """Little-endian byte list of a (possibly negative) value, as the SDK's group writes take."""
    u = to_unsigned(value, size)
    return [(u >> (8 * k)) & 0xFF for k in range(size)]


@dataclass(frozen=True)
class Calibration:
    """Joint frame <-> servo frame: q = sign * (theta - offset_rad)."""

    sign: int = 1
    offset_rad: float = 0.0

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"calibration sign must be +1 or -1, got {self.sign}")

    # positions
    def ticks_to_rad(self, ticks: int) -> float:
        return self.sign * ((ticks - CENTER_TICK) * RAD_PER_TICK - self.offset_rad)

    def rad_to_ticks(self, q: float) -> int:
        return int(round((self.sign * q + self.offset_rad) / RAD_PER_TICK)) + CENTER_TICK

    # velocities
    def vel_to_rad_s(self, raw: int) -> float:
        return self.sign * raw * RAD_S_PER_VEL_UNIT

    def rad_s_to_vel(self, qd: float) -> int:
        return int(round(self.sign * qd / RAD_S_PER_VEL_UNIT))


def rad_s_to_vel_units(qd: float) -> int:
    """Magnitude (limits, profiles): rad/s -> 0.229 rev/min units, rounded."""
    return int(round(abs(qd) / RAD_S_PER_VEL_UNIT))


def rad_s2_to_acc_units(qdd: float) -> int:
    """Magnitude: rad/s^2 -> 214.577 rev/min^2 units, rounded."""
    return int(round(abs(qdd) / RAD_S2_PER_ACC_UNIT))


def amps_to_current_units(amps: float, amps_per_unit: float) -> int:
    """Magnitude: A -> current units of the model, rounded."""
    return int(round(abs(amps) / amps_per_unit))


def volts(raw: int) -> float:
    return raw * VOLT_PER_UNIT


def wrap_to_pi(x: float) -> float:
    """Angle wrapped into [-pi, pi)."""
    return (x + math.pi) % (2.0 * math.pi) - math.pi


def wrap_angle(a: Any) -> Any:
    """Angle (rad, a float or an array) wrapped to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi
