"""Fast simulation of a robot's MJCF model: no serial, no real time, same joints and units as the HAL.

`MujocoSim(config)` loads the model a hardware config names and exposes its servos' joints in the
config's servo order, in SI units at the JOINT (after calibration: what `robosac.hal` returns):
positions rad, velocities rad/s, currents A. It steps as fast as the CPU allows; the environments'
"sim" backend and learning experiments use it, and the real-time twin wraps it.

Actuation follows sim/servo_model.py: a position actuator per servo (kp, torque clamp) plus the
motor's back-EMF damping on the joint. Torque off zeroes the actuator and swaps the joint's damping
for the limp gearbox value, so a limp joint (e.g. the valve) spins freely.

Jam (a fault: a joint that cannot move): `jam(index, seconds)` clamps that joint's range in the
MjModel to ±JAM_HALF_WIDTH_RAD around its position now, with a stiff limit constraint, so the joint
is physically stopped there (an obstacle for its actuator and for anything pushing it; the reported
position is the joint's real one). Its actuator keeps driving toward the target, so in torque-on
modes the drive saturates against the jam (current up to stall / the current limit). The original
range is restored by `unjam`, by `reset`, or by `step` once `seconds` of simulated time have passed.

Threading: not thread-safe; one thread owns a MujocoSim (the real-time twin guards it with a lock).
`render` keeps one OpenGL context per calling thread (an EGL context is current on one thread).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robosac.config import RobotConfig, load_config  # noqa: E402
from sim import assets  # noqa: E402
from sim.randomization import DomainRandomization, Nominal, RandomizationSample, apply  # noqa: E402
from sim.servo_model import LIMP_DAMPING, SERVO_FIGURES  # noqa: E402

__all__ = ["MujocoSim", "SimState", "REPO_ROOT", "resolve_model_path", "JAM_HALF_WIDTH_RAD"]

REPO_ROOT = Path(__file__).resolve().parent.parent

JAM_HALF_WIDTH_RAD = 1e-3  # a jammed joint's range: its position ± this
# Limit constraint of a jammed joint: time constant = 2 steps (the stiffest MuJoCo allows stably)
# and impedance near 1 (default solimp 0.9/0.95 lets a stalled finger sink ~0.014 rad; this ~0.001).
_JAM_SOLIMP = (0.99, 0.999, 0.001, 0.5, 2.0)


@dataclass(frozen=True)
class SimState:
    """Joint state in config servo order. Arrays of shape (n_servos,), float64."""

    time_s: float
    positions_rad: np.ndarray
    velocities_rad_s: np.ndarray
    currents_a: np.ndarray


def resolve_model_path(config: RobotConfig) -> Path:
    """The config's `model_xml`, relative to the config file's repo (or the cwd), else sim/models/<name>.xml."""
    rel = config.model_xml or f"sim/models/{config.name}.xml"
    p = Path(rel)
    if p.is_absolute():
        return p
    cands = [REPO_ROOT / p, Path.cwd() / p]
    if config.source:
        src = Path(config.source).resolve()
        cands += [src.parent / p, src.parent.parent / p]
    for c in cands:
        if c.exists():
            return c
    raise FileNotFoundError(f"model_xml {rel!r} not found (looked in {', '.join(str(c) for c in cands)})")


class MujocoSim:
    """One robot in MuJoCo, addressed by the config's servos.

    config: a RobotConfig or a path to a hardware config YAML.
    randomization / seed: domain randomisation applied at construction (see `randomize`).
    keyframe: MJCF keyframe to start from (default "stand" if the model has it, else the MJCF pose).
    torque: initial torque state of every servo (the twin starts with False, like powered-up servos).
    """

    def __init__(
        self,
        config: RobotConfig | str | Path,
        *,
        randomization: DomainRandomization | None = None,
        seed: int | None = None,
        keyframe: str | None = None,
        torque: bool = True,
    ) -> None:
        self.config = config if isinstance(config, RobotConfig) else load_config(config)
        assets.ensure_assets()
        self.model_path = resolve_model_path(self.config)
        self.model = mujoco.MjModel.from_xml_path(str(self.model_path))
        if self.config.sim is not None and self.config.sim.timestep_s is not None:
            self.model.opt.timestep = self.config.sim.timestep_s
        self.data = mujoco.MjData(self.model)
        m = self.model
        names = [s.name for s in self.config.servos]
        self.joint_names: tuple[str, ...] = tuple(names)
        self.n = len(names)
        try:
            jids = [m.joint(nm).id for nm in names]
            self._act = np.array([m.actuator(nm).id for nm in names], dtype=int)
        except KeyError as e:
            raise KeyError(f"{self.model_path}: the model has no joint/actuator for servo {e}") from None
        self._qadr = np.array([m.jnt_qposadr[j] for j in jids], dtype=int)
        self._dadr = np.array([m.jnt_dofadr[j] for j in jids], dtype=int)
        self._kt = np.array([SERVO_FIGURES[s.model].stall_torque_nm / SERVO_FIGURES[s.model].stall_current_a for s in self.config.servos])
        # The firmware enforces Current Limit only in current-based position mode (5); in modes
        # 3/4 the PWM limit bounds the drive and the stall torque is the clamp.
        self._current_cap = np.array(
            [s.limits.current_a if s.operating_mode == 5 and s.limits.current_a is not None else np.inf for s in self.config.servos]
        )
        self._valve = names.index("valve") if "valve" in names else None
        self._torso = m.body("torso").id if _has(m.body, "torso") else None
        self._marker = m.site("marker").id if _has(m.site, "marker") else None
        self._nominal = Nominal.of(m)
        self._renderers: dict[tuple[int, int, int], mujoco.Renderer] = {}  # (width, height, thread id)
        self._torque = np.zeros(self.n, dtype=bool)
        self._target = np.zeros(self.n)
        self._vcap = np.full(self.n, np.inf)
        self._ref = np.zeros(self.n)
        self._history: deque[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = deque()
        self._jnt = np.array(jids, dtype=int)
        self._jams: dict[int, float] = {}  # servo index -> sim time the jam ends (inf: until unjam)
        self._jam_saved: dict[int, tuple[np.ndarray, int, np.ndarray, np.ndarray]] = {}
        self.latency_s = 0.0
        self.randomization = randomization or DomainRandomization()
        self.sample = self.randomize(seed)
        self.reset(keyframe)
        self.set_torque(torque)

    # ------------------------------------------------------------------ set-up
    @property
    def dt(self) -> float:
        """Physics step, s."""
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        """Simulation time, s."""
        return float(self.data.time)

    @property
    def has_valve(self) -> bool:
        return self._valve is not None

    def randomize(self, seed: int | None = None, randomization: DomainRandomization | None = None) -> RandomizationSample:
        """Restore the nominal model and apply a fresh draw of the domain randomisation (seeded)."""
        if randomization is not None:
            self.randomization = randomization
        vdof = int(self._dadr[self._valve]) if self._valve is not None else None
        s = apply(self.randomization, self.model, self._nominal, seed, valve_dof=vdof)
        m = self.model
        # Torque-on damping = randomised MJCF value; limp = gearbox value (valve: its own knob).
        self._damp_on = m.dof_damping[self._dadr].copy()
        self._damp_off = np.full(self.n, LIMP_DAMPING)
        if self._valve is not None and "valve_damping" in s.values:
            self._damp_off[self._valve] = s.values["valve_damping"]
        self._kp = m.actuator_gainprm[self._act, 0].copy()
        self._kp_scale = np.ones(self.n)
        self._force_max = m.actuator_forcerange[self._act, 1].copy()
        self.latency_s = float(s.values.get("observation_latency_s", 0.0))
        self._history.clear()
        if hasattr(self, "_torque"):
            self._apply_torque()
            self._apply_force_limits()
        return s

    def reset(self, keyframe: str | None = None, positions_rad: np.ndarray | None = None) -> None:
        """Reset the state: to `keyframe` (default "stand" if present), then optionally put the
        servo joints at `positions_rad` (config order). Targets follow the joints (no jump).
        Releases every jam (the joints are put somewhere else)."""
        for i in list(self._jams):
            self.unjam(i)
        m, d = self.model, self.data
        if keyframe is None and m.nkey and _has(m.key, "stand"):
            keyframe = "stand"
        if keyframe is not None:
            mujoco.mj_resetDataKeyframe(m, d, m.key(keyframe).id)
        else:
            mujoco.mj_resetData(m, d)
        if positions_rad is not None:
            d.qpos[self._qadr] = np.asarray(positions_rad, dtype=float)
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        self._target[:] = d.qpos[self._qadr]
        self._ref[:] = self._target
        d.ctrl[self._act] = self._target
        self._history.clear()

    # ------------------------------------------------------------------ commands
    def set_targets(self, positions_rad: np.ndarray) -> None:
        """Goal positions (rad at the joint), shape (n_servos,). Not clipped: limits are the
        safety layer's job (the MJCF's joint ranges still stop the joint physically)."""
        self._target[:] = positions_rad
        if not np.isfinite(self._vcap).any():
            self._ref[:] = self._target
            self.data.ctrl[self._act] = self._target

    def set_target(self, index: int, position_rad: float) -> None:
        self._target[index] = position_rad
        if not math.isfinite(self._vcap[index]):
            self._ref[index] = position_rad
            self.data.ctrl[self._act[index]] = position_rad

    def set_velocity_caps(self, caps_rad_s: np.ndarray) -> None:
        """Servo-side profile velocity, rad/s per servo (inf = none): the reference moves toward
        the goal at this speed, as a servo's velocity profile does."""
        self._vcap[:] = caps_rad_s

    def set_torque(self, on: bool | np.ndarray, index: int | None = None) -> None:
        """Torque on (track the target) or off (limp), for all servos, a mask, or one `index`.
        Turning torque on holds the current position unless a target was set while off."""
        if index is not None:
            self._torque[index] = bool(on)
        else:
            self._torque[:] = on
        self._apply_torque()

    @property
    def torque(self) -> np.ndarray:
        return self._torque.copy()

    def set_current_limits(self, currents_a: np.ndarray) -> None:
        """Current limit per servo, A (inf = none): the drive torque is clamped to kt·I (what a
        servo in current-based position mode does with Goal Current / Current Limit)."""
        self._current_cap[:] = currents_a
        self._apply_force_limits()

    def set_gain_scale(self, index: int, scale: float) -> None:
        """Scale one servo's kp (Position P Gain / 800)."""
        self._kp_scale[index] = scale
        self._apply_torque()

    def jam(self, index: int, seconds: float | None = None) -> None:
        """Jam servo `index`'s joint where it is now for `seconds` of simulated time (None or 0:
        until `unjam`). Jamming a jammed joint keeps where it is held and replaces the duration."""
        if seconds is not None and seconds < 0:
            raise ValueError(f"jam seconds must be >= 0, got {seconds}")
        m, j = self.model, int(self._jnt[index])
        if index not in self._jam_saved:
            self._jam_saved[index] = (m.jnt_range[j].copy(), int(m.jnt_limited[j]), m.jnt_solref[j].copy(), m.jnt_solimp[j].copy())
            q = float(self.data.qpos[self._qadr[index]])
            m.jnt_range[j] = (q - JAM_HALF_WIDTH_RAD, q + JAM_HALF_WIDTH_RAD)
            m.jnt_limited[j] = 1
            m.jnt_solref[j] = (2.0 * self.dt, 1.0)
            m.jnt_solimp[j] = _JAM_SOLIMP
        self._jams[index] = self.time + seconds if seconds else math.inf

    def unjam(self, index: int) -> None:
        """Release a jammed joint (restore its range); no-op if it is not jammed."""
        self._jams.pop(index, None)
        saved = self._jam_saved.pop(index, None)
        if saved is not None:
            m, j = self.model, int(self._jnt[index])
            m.jnt_range[j], m.jnt_limited[j], m.jnt_solref[j], m.jnt_solimp[j] = saved

    def jammed(self) -> dict[int, float | None]:
        """{servo index: simulated seconds the jam still lasts (None: until unjam)}."""
        return {i: (t - self.time if math.isfinite(t) else None) for i, t in self._jams.items()}

    def _release_jams(self) -> None:
        for i, t in list(self._jams.items()):
            if self.data.time >= t - 1e-9:
                self.unjam(i)

    def _apply_torque(self) -> None:
        m = self.model
        on = self._torque
        kp = np.where(on, self._kp * self._kp_scale, 0.0)
        m.actuator_gainprm[self._act, 0] = kp
        m.actuator_biasprm[self._act, 1] = -kp
        m.dof_damping[self._dadr] = np.where(on, self._damp_on, self._damp_off)

    def _apply_force_limits(self) -> None:
        lim = np.minimum(self._force_max, self._kt * self._current_cap)
        self.model.actuator_forcerange[self._act, 0] = -lim
        self.model.actuator_forcerange[self._act, 1] = lim

    # ------------------------------------------------------------------ stepping
    def step(self, n: int = 1) -> None:
        """Advance n physics steps (n·dt seconds). Timed jams end at the first step boundary at or
        after their end time."""
        n = int(n)
        if not self._jams:
            self._step(n)
            return
        while n > 0:
            self._release_jams()
            k = n
            if self._jams:
                left = min(self._jams.values()) - self.data.time
                if math.isfinite(left):
                    k = min(n, max(1, math.ceil(left / self.dt - 1e-6)))
            self._step(k)
            n -= k
        self._release_jams()

    def _step(self, n: int) -> None:
        m, d = self.model, self.data
        rate_limited = np.isfinite(self._vcap).any()
        n = int(n)
        if not rate_limited and self.latency_s <= 0.0:
            mujoco.mj_step(m, d, nstep=n)
            return
        # `read` needs the state from `latency_s` ago: recording only the last latency/dt + 2 steps
        # of each call is enough and keeps the latency knob cheap (the sim backend steps 50 at once).
        record_from = n - (math.ceil(self.latency_s / m.opt.timestep) + 2) if self.latency_s > 0.0 else n
        for j in range(n):
            if rate_limited:
                lim = self._vcap * m.opt.timestep
                self._ref += np.clip(self._target - self._ref, -lim, lim)
                fin = np.isfinite(self._vcap)
                self._ref[~fin] = self._target[~fin]
                d.ctrl[self._act] = self._ref
            mujoco.mj_step(m, d)
            if j >= record_from:
                self._record()

    def step_for(self, seconds: float) -> None:
        """Advance by `seconds` of simulated time (rounded to whole steps)."""
        self.step(max(0, int(round(seconds / self.dt))))

    # ------------------------------------------------------------------ reading
    def _now(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.data
        q = d.qpos[self._qadr].copy()
        v = d.qvel[self._dadr].copy()
        # Motor current ∝ the motor's net electromagnetic torque: drive torque minus back-EMF.
        tau = d.actuator_force[self._act] - self._damp_on * v
        i = np.where(self._torque, tau / self._kt, 0.0)
        return q, v, i

    def _record(self) -> None:
        q, v, i = self._now()
        self._history.append((self.time, q, v, i))
        horizon = self.time - self.latency_s - 2 * self.dt
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            self._history.popleft()

    def read(self) -> SimState:
        """Joint state (config order), delayed by the observation latency if one is set."""
        if self.latency_s > 0.0 and self._history:
            t_want = self.time - self.latency_s
            for t, q, v, i in reversed(self._history):
                if t <= t_want:
                    return SimState(t, q, v, i)
            t, q, v, i = self._history[0]
            return SimState(t, q, v, i)
        q, v, i = self._now()
        return SimState(self.time, q, v, i)

    def read_joint(self, index: int) -> tuple[float, float, float]:
        """(position rad, velocity rad/s, current A) of one servo now (no latency)."""
        d = self.data
        v = float(d.qvel[self._dadr[index]])
        if self._torque[index]:
            tau = float(d.actuator_force[self._act[index]]) - self._damp_on[index] * v
            cur = tau / self._kt[index]
        else:
            cur = 0.0
        return float(d.qpos[self._qadr[index]]), v, cur

    def valve_angle(self) -> float:
        """The valve's angle, rad (multi-turn, unwrapped). Claw only."""
        if self._valve is None:
            raise AttributeError("this model has no valve")
        return float(self.data.qpos[self._qadr[self._valve]])

    def set_valve(self, angle_rad: float, velocity_rad_s: float = 0.0) -> None:
        """Put the valve at an angle (and spin), e.g. to start an episode. Claw only."""
        if self._valve is None:
            raise AttributeError("this model has no valve")
        self.data.qpos[self._qadr[self._valve]] = angle_rad
        self.data.qvel[self._dadr[self._valve]] = velocity_rad_s
        mujoco.mj_forward(self.model, self.data)

    def torso_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth torso pose: position (3,) m in the world, orientation quaternion (4,) w,x,y,z."""
        if self._torso is None:
            raise AttributeError("this model has no torso")
        return self.data.xpos[self._torso].copy(), self.data.xquat[self._torso].copy()

    def marker_position(self) -> np.ndarray:
        """Ground-truth centre of the ArUco marker on the torso's back, (3,) m in the world."""
        if self._marker is None:
            raise AttributeError("this model has no marker")
        return self.data.site_xpos[self._marker].copy()

    def upright(self) -> float:
        """Cosine of the torso's tilt (1 = upright): z component of the torso's z axis."""
        if self._torso is None:
            raise AttributeError("this model has no torso")
        return float(self.data.xmat[self._torso][8])

    # ------------------------------------------------------------------ cameras
    def camera_pose(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """Camera position (3,) m and rotation (3, 3) camera-to-world in MuJoCo's convention
        (camera looks along its −z, image up = +y, right = +x)."""
        c = self.model.camera(camera).id
        return self.data.cam_xpos[c].copy(), self.data.cam_xmat[c].reshape(3, 3).copy()

    def camera_matrix(self, camera: str, width: int, height: int) -> np.ndarray:
        """Pinhole intrinsics K (3, 3) of a rendered image, OpenCV convention (pixel centres at
        integers, v down). MuJoCo's fovy is vertical; pixels are square."""
        fovy = math.radians(float(self.model.cam_fovy[self.model.camera(camera).id]))
        f = 0.5 * height / math.tan(0.5 * fovy)
        return np.array([[f, 0.0, 0.5 * width - 0.5], [0.0, f, 0.5 * height - 0.5], [0.0, 0.0, 1.0]])

    def render(self, camera: str | None = None, width: int = 64, height: int = 64) -> np.ndarray:
        """An RGB image (height, width, 3) uint8 from a named MJCF camera (default: the config's
        sim camera, else the model's first camera). Renderers are cached per size and thread."""
        if camera is None:
            camera = (self.config.sim.camera if self.config.sim else None) or self.model.camera(0).name
        # One renderer (and GL context) per size and per calling thread: an EGL context is
        # current on one thread only (e.g. the collector thread renders, then the main thread).
        key = (width, height, threading.get_ident())
        r = self._renderers.get(key)
        if r is None:
            r = self._renderers[key] = mujoco.Renderer(self.model, height, width)
            _release_egl_at_thread_exit()
        r.update_scene(self.data, camera)
        return r.render()

    def close(self) -> None:
        for r in self._renderers.values():
            try:
                r.close()
            except Exception:  # noqa: BLE001 - a context made on a thread that has ended
                pass
        self._renderers.clear()

    def __enter__(self) -> "MujocoSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_thread_state = threading.local()


class _EglRelease:
    def __init__(self) -> None:
        from OpenGL import EGL

        self._release = EGL.eglReleaseThread

    def __del__(self) -> None:
        self._release()


def _release_egl_at_thread_exit() -> None:
    """A renderer's EGL context stays current on the thread that made it, and no other thread can
    then close it (EGL_BAD_ACCESS, printed at exit from the renderer's __del__). CPython clears a
    thread's locals on that thread as it ends, so this releases the context there."""
    if (os.environ.get("MUJOCO_GL") == "egl" and threading.current_thread() is not threading.main_thread()
            and not hasattr(_thread_state, "egl")):
        _thread_state.egl = _EglRelease()


def _has(accessor, name: str) -> bool:
    try:
        accessor(name)
        return True
    except KeyError:
        return False
