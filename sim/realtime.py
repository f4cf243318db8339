"""The real-time twin: a `MujocoSim` stepped against the wall clock in its own thread, with each
emulated servo's `JointModel` bound to its simulated joint.

Binding (sim/dxl/physics.py units at the servo horn ↔ the config's joint units):
    horn_rad = π + offset_rad + sign·joint_rad      (tick 2048 = π = servo 0 rad; sign = ±1)
    joint_rad = sign·(horn_rad − π − offset_rad)     (the config's calibration, in reverse)
Velocity and current change sign with `sign`. Goal Position → actuator target; Torque Enable →
actuator on / limp joint; Position P Gain scales kp; the servo's speed cap (profile velocity /
Velocity Limit) rate-limits the target; Goal Current / Current Limit clamps torque in mode 5 only
(what the firmware does). `jam(on, seconds)` → `MujocoSim.jam` / `unjam` (the joint's range clamped
around where it is; a timed jam ends after that much simulated time, which the physics thread keeps
in step with the wall clock).

Clock: the physics thread owes `wall elapsed − sim elapsed` seconds of simulation and steps until
it has paid, then sleeps until the next step is due. Falling more than `overrun_s` behind starts an
OVERRUN (counted); more than `max_lag_s` behind drops the backlog (counted in `dropped_s`, and it
lowers the real-time factor) rather than fast-forwarding physics in a burst.

Threading: one lock (`RealtimeTwin.lock`) guards the MujocoSim. The emulator thread takes it
inside the JointModel methods (it already holds the chain lock; this thread never takes the chain
lock, so there is no lock-order cycle). Cameras render in their own processes: each registers a
`scene_observers` callable, which this thread calls with the MjData after every step (under the
lock; it must never wait).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from sim.dxl.physics import JointState, JointTarget
from sim.mujoco_sim import MujocoSim

__all__ = ["RealtimeTwin", "ServoJoint", "TwinStats"]


@dataclass(frozen=True)
class TwinStats:
    """Clock report. Times in s; rtf = simulated / wall time since start (1.0 = real time)."""

    sim_time_s: float
    wall_time_s: float
    rtf: float
    rtf_recent: float  # over the last report window
    steps: int
    overruns: int  # episodes of lagging more than overrun_s behind the wall clock
    dropped_s: float  # simulated time skipped after lagging more than max_lag_s
    max_lag_s: float  # worst lag seen

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServoJoint:
    """`sim.dxl.physics.JointModel` for one servo, backed by its joint in the twin's MujocoSim."""

    def __init__(self, twin: "RealtimeTwin", index: int) -> None:
        self._twin = twin
        self._sim = twin.sim
        self.index = index
        sc = twin.sim.config.servos[index]
        self.name = sc.name
        self._sign = float(sc.calibration.sign)
        self._offset = float(sc.calibration.offset_rad)
        self._mode = sc.operating_mode

    def horn_from_joint(self, joint_rad: float) -> float:
        return math.pi + self._offset + self._sign * joint_rad

    def joint_from_horn(self, horn_rad: float) -> float:
        return self._sign * (horn_rad - math.pi - self._offset)

    def set_torque(self, on: bool) -> None:
        with self._twin.lock:
            if on:
                # Start from where the joint is: no jump toward a stale target.
                q = self._sim.read_joint(self.index)[0]
                self._sim._ref[self.index] = q
            self._sim.set_torque(on, index=self.index)

    def set_target(self, target: JointTarget) -> None:
        i = self.index
        with self._twin.lock:
            self._sim.set_gain_scale(i, target.position_p_gain / 800.0)
            caps = self._sim._vcap.copy()
            caps[i] = target.max_velocity_rad_s
            self._sim.set_velocity_caps(caps)
            if self._mode == 5 and target.max_current_a is not None:
                cur = self._sim._current_cap.copy()
                cur[i] = target.max_current_a
                self._sim.set_current_limits(cur)
            self._sim.set_target(i, self.joint_from_horn(target.position_rad))

    def jam(self, on: bool, seconds: float | None = None) -> None:
        """Fault hook (see sim/dxl/physics.py): hold the joint where it is, or release it."""
        with self._twin.lock:
            if on:
                self._sim.jam(self.index, seconds)
            else:
                self._sim.unjam(self.index)

    @property
    def jammed(self) -> bool:
        with self._twin.lock:
            return self.index in self._sim.jammed()

    def read(self) -> JointState:
        with self._twin.lock:
            q, v, c = self._sim.read_joint(self.index)
        return JointState(self.horn_from_joint(q), self._sign * v, self._sign * c)


class RealtimeTwin:
    """Steps `sim` in real time in a daemon thread. Use `joint_models()` for ServoChain.from_config."""

    def __init__(self, sim: MujocoSim, *, overrun_s: float | None = None, max_lag_s: float = 0.1, max_steps_per_lock: int = 4) -> None:
        self.sim = sim
        self.lock = threading.RLock()
        self.overrun_s = overrun_s if overrun_s is not None else max(0.005, 3 * sim.dt)
        self.max_lag_s = max_lag_s
        self._chunk = max_steps_per_lock
        # Called with sim.data after each step, under the lock (CameraStreamer.publish_scene).
        self.scene_observers: list[Callable[[Any], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._joints = {sc.name: ServoJoint(self, i) for i, sc in enumerate(sim.config.servos)}
        self._steps = 0
        self._overruns = 0
        self._dropped = 0.0
        self._max_lag = 0.0
        self._wall0 = 0.0
        self._sim0 = 0.0
        self._win = (0.0, 0.0)  # (wall, sim) at the last stats(window=True)
        # Rate-limit targets from the start (servo speed caps are always finite in the twin).
        caps = np.array([self._noload(i) for i in range(sim.n)])
        sim.set_velocity_caps(caps)

    def _noload(self, i: int) -> float:
        from sim.servo_model import SERVO_FIGURES

        return SERVO_FIGURES[self.sim.config.servos[i].model].noload_speed_rad_s * 2.0

    def joint_models(self) -> dict[str, ServoJoint]:
        return dict(self._joints)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._wall0 = time.perf_counter()
        self._sim0 = self.sim.time
        self._win = (self._wall0, self._sim0)
        self._thread = threading.Thread(target=self._run, name="twin-physics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> "RealtimeTwin":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sim, dt = self.sim, self.sim.dt
        behind = False
        while not self._stop.is_set():
            now = time.perf_counter()
            owed = (now - self._wall0 - self._dropped) - (sim.time - self._sim0)
            if owed > self._max_lag:
                self._max_lag = owed
            if owed > self.max_lag_s:
                # Too far behind to catch up smoothly: skip the backlog (counted, lowers the RTF).
                self._dropped += owed - dt
                owed = dt
                if not behind:
                    self._overruns += 1
                    behind = True
            elif owed > self.overrun_s:
                if not behind:
                    self._overruns += 1
                    behind = True
            elif owed < dt:
                behind = False
            n = int(owed / dt)
            while n > 0:
                k = min(n, self._chunk)
                with self.lock:
                    sim.step(k)
                    for observe in self.scene_observers:
                        observe(sim.data)
                self._steps += k
                n -= k
            # Sleep until the next step falls due.
            due = self._wall0 + self._dropped + (sim.time - self._sim0) + dt
            pause = due - time.perf_counter()
            if pause > 0:
                self._stop.wait(pause) if pause > 0.01 else time.sleep(pause)

    # ------------------------------------------------------------------ reports
    def stats(self, window: bool = False) -> TwinStats:
        """Clock figures since start; window=True also restarts the `rtf_recent` window."""
        now = time.perf_counter()
        st = self.sim.time
        wall = now - self._wall0 if self._thread is not None or self._wall0 else 0.0
        simel = st - self._sim0
        w_wall, w_sim = self._win
        recent = (st - w_sim) / (now - w_wall) if now > w_wall else 0.0
        if window:
            self._win = (now, st)
        return TwinStats(
            sim_time_s=simel,
            wall_time_s=wall,
            rtf=simel / wall if wall > 0 else 0.0,
            rtf_recent=recent,
            steps=self._steps,
            overruns=self._overruns,
            dropped_s=self._dropped,
            max_lag_s=self._max_lag,
        )

    def ground_truth(self) -> dict[str, Any]:
        """The simulator's state for tests and operators (JSON-able): time, joints, torque, jammed
        joints, torso, marker, valve."""
        s = self.sim
        with self.lock:
            st = s.read()
            out: dict[str, Any] = {
                "time_s": s.time,
                "joints": dict(zip(s.joint_names, st.positions_rad.tolist())),
                "torque": dict(zip(s.joint_names, s.torque.tolist())),
                # Jammed joints (fault): {name: simulated seconds left, None = until unjammed}.
                "jammed": {s.joint_names[i]: left for i, left in s.jammed().items()},
            }
            if s.has_valve:
                out["valve_angle_rad"] = s.valve_angle()
            if s._torso is not None:
                p, q = s.torso_pose()
                out["torso_pos_m"] = p.tolist()
                out["torso_quat_wxyz"] = q.tolist()
            if s._marker is not None:
                out["marker_pos_m"] = s.marker_position().tolist()
        out["clock"] = self.stats().as_dict()
        return out
