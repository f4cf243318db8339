"""Domain randomisation knobs for the MuJoCo models, applied to an `MjModel` with a seed.

Every knob is a range sampled uniformly; the neutral value (no randomisation) is the default, so
`DomainRandomization()` changes nothing. Scales multiply the model's NOMINAL values (the ones the
MJCF gives), which `MujocoSim` keeps, so randomising twice never compounds.

Reference point: ROBEL's sim variants draw actuator kp from U(1, 3) (their units) and joint
damping from U(0.005, 0.1) N·m·s/rad; the ranges below are relative to our servo-derived values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["DomainRandomization", "Nominal", "RandomizationSample"]

Range = tuple[float, float]


@dataclass(frozen=True)
class DomainRandomization:
    """Ranges (low, high) sampled uniformly per `apply`. Units in the names; scales are unitless.

    actuator_gain_scale:   × kp of every position actuator (the servo's Position P Gain spread).
    actuator_force_scale:  × the torque limit (supply voltage, motor spread).
    joint_damping_scale:   × every hinge's damping (back-EMF / gearbox spread).
    joint_friction_scale:  × every hinge's friction loss (gearbox Coulomb friction).
    mass_scale:            × every body's mass (and inertia, so density scales uniformly).
    valve_friction_nm:     friction loss of the valve joint, N·m (None = keep the MJCF's).
    valve_damping:         damping of the valve joint while its servo is limp, N·m·s/rad (None = keep).
    floor_friction_scale:  × sliding friction of every geom (foot/floor, finger/valve contacts).
    camera_pos_jitter_m:   each camera's position moves by U(−j, j) per axis, m.
    camera_rot_jitter_rad: each camera turns by a random axis-angle of at most this, rad (fixed
                           cameras only; a `targetbody` camera re-aims at its target, so for the
                           claw's valve_cam only the position jitter acts).
    light_scale:           × every light's diffuse intensity.
    light_pos_jitter_m:    each light's position moves by U(−j, j) per axis, m.
    observation_latency_s: `MujocoSim.read()` returns the state this long ago, s (the sim backend
                           reads so; `read_joint`, which the real-time twin serves, is never delayed).
    """

    actuator_gain_scale: Range = (1.0, 1.0)
    actuator_force_scale: Range = (1.0, 1.0)
    joint_damping_scale: Range = (1.0, 1.0)
    joint_friction_scale: Range = (1.0, 1.0)
    mass_scale: Range = (1.0, 1.0)
    valve_friction_nm: Range | None = None
    valve_damping: Range | None = None
    floor_friction_scale: Range = (1.0, 1.0)
    camera_pos_jitter_m: float = 0.0
    camera_rot_jitter_rad: float = 0.0
    light_scale: Range = (1.0, 1.0)
    light_pos_jitter_m: float = 0.0
    observation_latency_s: Range = (0.0, 0.0)

    @classmethod
    def typical(cls) -> "DomainRandomization":
        """A moderate setting for sim-to-real training (a starting point, not a tuned result)."""
        return cls(
            actuator_gain_scale=(0.7, 1.3),
            actuator_force_scale=(0.8, 1.0),
            joint_damping_scale=(0.7, 1.5),
            joint_friction_scale=(0.5, 2.0),
            mass_scale=(0.9, 1.1),
            # The limp valve servo's backdriven gearbox friction is uncertain: the MJCF's 0.01 N·m
            # estimate up to ~0.23 N·m, the torque lost to friction in ROBOTIS's XM430-W350
            # torque-current line (0 N·m output at ~0.13 A), so train across the whole range.
            valve_friction_nm=(0.01, 0.3),
            floor_friction_scale=(0.7, 1.2),
            camera_pos_jitter_m=0.01,
            camera_rot_jitter_rad=0.02,
            light_scale=(0.7, 1.3),
            light_pos_jitter_m=0.2,
            observation_latency_s=(0.0, 0.02),
        )


@dataclass
class Nominal:
    """The model's unrandomised parameters (copied once at load)."""

    gainprm: np.ndarray
    biasprm: np.ndarray
    forcerange: np.ndarray
    dof_damping: np.ndarray
    dof_frictionloss: np.ndarray
    body_mass: np.ndarray
    body_inertia: np.ndarray
    geom_friction: np.ndarray
    cam_pos: np.ndarray
    cam_quat: np.ndarray
    light_diffuse: np.ndarray
    light_pos: np.ndarray

    @classmethod
    def of(cls, m: Any) -> "Nominal":
        return cls(
            m.actuator_gainprm.copy(), m.actuator_biasprm.copy(), m.actuator_forcerange.copy(),
            m.dof_damping.copy(), m.dof_frictionloss.copy(), m.body_mass.copy(), m.body_inertia.copy(),
            m.geom_friction.copy(), m.cam_pos.copy(), m.cam_quat.copy(), m.light_diffuse.copy(), m.light_pos.copy(),
        )

    def restore(self, m: Any) -> None:
        m.actuator_gainprm[:] = self.gainprm
        m.actuator_biasprm[:] = self.biasprm
        m.actuator_forcerange[:] = self.forcerange
        m.dof_damping[:] = self.dof_damping
        m.dof_frictionloss[:] = self.dof_frictionloss
        m.body_mass[:] = self.body_mass
        m.body_inertia[:] = self.body_inertia
        m.geom_friction[:] = self.geom_friction
        m.cam_pos[:] = self.cam_pos
        m.cam_quat[:] = self.cam_quat
        m.light_diffuse[:] = self.light_diffuse
        m.light_pos[:] = self.light_pos


@dataclass(frozen=True)
class RandomizationSample:
    """What one `apply` drew (for logging with the episode)."""

    seed: int | None
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def apply(dr: DomainRandomization, m: Any, nominal: Nominal, seed: int | None, valve_dof: int | None = None) -> RandomizationSample:
    """Restore `nominal` into model `m`, then draw and apply one sample of `dr`.

    Scales are drawn once per knob (the whole robot shares them; per-joint spread is a later
    refinement). Returns what was drawn. `valve_dof`: the valve joint's dof index, if any.
    """
    rng = np.random.default_rng(seed)
    nominal.restore(m)
    v: dict[str, Any] = {}
    v["actuator_gain_scale"] = g = _u(rng, dr.actuator_gain_scale)
    m.actuator_gainprm[:, 0] *= g
    m.actuator_biasprm[:, 1] *= g
    v["actuator_force_scale"] = f = _u(rng, dr.actuator_force_scale)
    m.actuator_forcerange[:] *= f
    v["joint_damping_scale"] = dmp = _u(rng, dr.joint_damping_scale)
    v["joint_friction_scale"] = fr = _u(rng, dr.joint_friction_scale)
    # All dofs: free-joint dofs have no damping/friction in our models, and scaling zero keeps zero.
    m.dof_damping[:] *= dmp
    m.dof_frictionloss[:] *= fr
    v["mass_scale"] = ms = _u(rng, dr.mass_scale)
    m.body_mass[:] *= ms
    m.body_inertia[:] *= ms
    if valve_dof is not None and dr.valve_friction_nm is not None:
        v["valve_friction_nm"] = m.dof_frictionloss[valve_dof] = _u(rng, dr.valve_friction_nm)
    if valve_dof is not None and dr.valve_damping is not None:
        v["valve_damping"] = _u(rng, dr.valve_damping)
    v["floor_friction_scale"] = ff = _u(rng, dr.floor_friction_scale)
    m.geom_friction[:, 0] *= ff
    if dr.camera_pos_jitter_m > 0:
        j = dr.camera_pos_jitter_m
        m.cam_pos[:] += rng.uniform(-j, j, size=m.cam_pos.shape)
    if dr.camera_rot_jitter_rad > 0:
        for i in range(m.ncam):
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            ang = rng.uniform(0, dr.camera_rot_jitter_rad)
            dq = np.concatenate([[math.cos(ang / 2)], math.sin(ang / 2) * axis])
            m.cam_quat[i] = _quat_mul(m.cam_quat[i], dq)
    v["light_scale"] = ls = _u(rng, dr.light_scale)
    m.light_diffuse[:] = np.clip(m.light_diffuse * ls, 0.0, 1.0)
    if dr.light_pos_jitter_m > 0:
        j = dr.light_pos_jitter_m
        m.light_pos[:] += rng.uniform(-j, j, size=m.light_pos.shape)
    v["observation_latency_s"] = _u(rng, dr.observation_latency_s)
    return RandomizationSample(seed=seed, values=v)
