"""X-series servo figures and the MuJoCo actuator parameters derived from them.

The MJCF models (sim/models/*.xml) carry these numbers literally, with the derivation in XML
comments; `tests/test_twin_models.py` checks that the XML and this module agree, so the numbers
have one source. Units: N·m, rad, rad/s, A, kg·m².

Model of a servo in position mode (Dynamixel e-manual, "Position Control Mode" block diagram):
the firmware's P controller outputs PWM = KPP·e with KPP = P/128 (P = Position P Gain, e in
encoder ticks), saturating at PWM 885 (100 %). A DC motor at duty d turning at ω delivers
    τ = τ_stall·d − (τ_stall/ω_noload)·ω
so, at the horn:
- kp  = τ_stall / e_sat, e_sat = 885·128/P ticks (P = 800: 141.6 ticks = 0.2172 rad), N·m/rad
- the back-EMF term is a viscous damping b = τ_stall/ω_noload (N·m·s/rad) that acts only while
  the driver is on (torque off leaves the windings open: the joint is limp);
- the drive torque kp·e is clamped to ±τ_stall, or to ±kt·I_limit when the current limit is lower
  (kt = τ_stall/I_stall);
- armature = J_rotor·N² (rotor inertia reflected through the gearbox).
Because the damping is outside the clamp, a saturated joint runs at exactly ω_noload (unloaded).

Sources: stall torque, no-load speed and gear ratio from /work/shared/reference/dynamixel.md §7
(ROBOTIS spec sheets, 12 V). Stall current 2.3 A (XM430-W210/-W350 spec sheets at 12 V), 2.1 A for
XH430, 1.4 A for XL430 (no current sensing). Rotor inertia ≈ 1.0e-7 kg·m² is an ESTIMATE for the
coreless motors of this size (no ROBOTIS figure); it only shapes the first few ms of a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ServoFigures", "SERVO_FIGURES", "ActuatorParams", "actuator_params", "predicted_settle_time_s", "E_SAT_RAD_AT_P800"]

RPM = 2.0 * math.pi / 60.0
TICK_RAD = 2.0 * math.pi / 4096.0
PWM_MAX = 885  # PWM Limit range, 100 % duty
E_SAT_RAD_AT_P800 = PWM_MAX * 128 / 800 * TICK_RAD  # 0.2172 rad: the error that saturates the PWM
ROTOR_INERTIA_KGM2 = 1.0e-7  # estimate, see module docstring
# Gearbox viscous damping when back-driven with the driver off (limp), N·m·s/rad. Estimate: a
# limp X430 horn spun by hand coasts for well under a second.
LIMP_DAMPING = 0.01


@dataclass(frozen=True)
class ServoFigures:
    stall_torque_nm: float
    noload_speed_rad_s: float
    gear_ratio: float
    stall_current_a: float


SERVO_FIGURES: dict[str, ServoFigures] = {
    "XM430-W350": ServoFigures(4.1, 46 * RPM, 353.5, 2.3),
    "XM430-W210": ServoFigures(3.0, 77 * RPM, 212.6, 2.3),
    "XH430-W350": ServoFigures(3.4, 46 * RPM, 353.5, 2.1),
    "XH430-W210": ServoFigures(2.5, 77 * RPM, 212.6, 2.1),
    "XL430-W250": ServoFigures(1.4, 57 * RPM, 258.5, 1.4),
}


@dataclass(frozen=True)
class ActuatorParams:
    """MuJoCo parameters of one servo at the horn (see the module docstring for the derivation)."""

    kp: float  # N·m/rad, position gain at Position P Gain = p_gain
    damping: float  # N·m·s/rad, back-EMF damping while torque is on
    force_limit: float  # N·m, clamp of the drive torque (stall torque)
    armature: float  # kg·m², reflected rotor inertia
    torque_constant: float  # N·m/A, for Present Current = τ / kt
    noload_speed: float  # rad/s


def actuator_params(model: str, p_gain: int = 800) -> ActuatorParams:
    f = SERVO_FIGURES[model]
    e_sat = PWM_MAX * 128 / max(p_gain, 1) * TICK_RAD
    return ActuatorParams(
        kp=f.stall_torque_nm / e_sat,
        damping=f.stall_torque_nm / f.noload_speed_rad_s,
        force_limit=f.stall_torque_nm,
        armature=ROTOR_INERTIA_KGM2 * f.gear_ratio**2,
        torque_constant=f.stall_torque_nm / f.stall_current_a,
        noload_speed=f.noload_speed_rad_s,
    )


def predicted_settle_time_s(model: str, step_rad: float, load_inertia_kgm2: float = 0.0, band_rad: float = 0.02, p_gain: int = 800) -> float:
    """Time (s) for an unloaded joint to come within `band_rad` of a step of `step_rad`.

    Saturated phase: the joint runs at no-load speed until the error falls to e_sat; then the
    linear second-order system J·ë + b·ė + kp·e = 0 (J = armature + load) decays from e_sat with
    its slowest rate σ (overdamped) or ζω_n (underdamped): t = ln(e0/band)/σ.
    """
    a = actuator_params(model, p_gain)
    e_sat = a.force_limit / a.kp
    step = abs(step_rad)
    t_sat = max(0.0, step - e_sat) / a.noload_speed
    e0 = min(step, e_sat)
    if e0 <= band_rad:
        return t_sat
    j = a.armature + load_inertia_kgm2
    disc = a.damping**2 - 4 * j * a.kp
    sigma = (a.damping - math.sqrt(disc)) / (2 * j) if disc > 0 else a.damping / (2 * j)
    return t_sat + math.log(e0 / band_rad) / sigma
