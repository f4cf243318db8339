"""A Robot: servos + camera (+ tracker) behind the safety monitor, for the hardware or the fast sim.

`Robot` is what an environment and a reset routine talk to; two implementations share every line of
safety logic (the `SafetyMonitor` from robosac.robots.safety):

- `HardwareRobot(config, port=..., camera_source=...)`: a `ServoBus` (dynamixel-sdk over pyserial)
  and a `Camera` (cv2.VideoCapture), real servos or the twin (`robosac twin` prints the serial path
  and camera URL). Time is the wall clock: `step` waits for the control period's deadline.
- `SimRobot(config)`: the MJCF model in `sim.mujoco_sim.MujocoSim`, stepped as fast as the CPU
  allows; `step` advances physics by one control period.

One control period, `step(q_goal)`:
    filter_command(q_goal, last measured q)  -> NaN refused, clipped to limits, rate limited
    write goals                              -> then the period elapses (deadline / physics)
    read state, check_state(state, tilt)     -> a stop-level condition latches the monitor,
                                                switches torque off and raises SafetyStop
Torque-off joints ("limp", e.g. the claw's valve during an episode) get goal = measured position.
Units: rad, rad/s, A, degC, s. Arrays are (n,) in config servo order.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from robosac.config import RobotConfig
from robosac.robots.safety import SafetyLimits, SafetyMonitor, SafetyStop

if TYPE_CHECKING:
    from sim.randomization import DomainRandomization

__all__ = ["Robot", "RobotState", "TorsoPose", "HardwareRobot", "SimRobot", "SIM_TEMPERATURE_C"]

# The simulation has no thermal model: its servos report a constant room-temperature reading.
SIM_TEMPERATURE_C = 30.0


@dataclass
class RobotState:
    """One read of every servo (the fields `SafetyMonitor.check_state` needs, plus stamp)."""

    position: np.ndarray  # rad
    velocity: np.ndarray  # rad/s
    current: np.ndarray  # A
    temperature: np.ndarray  # degC
    hardware_error: np.ndarray  # Hardware Error Status bits (0 = none)
    stamp: float  # s: time.monotonic() (hardware) or simulation time (sim)
    errors_seen: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TorsoPose:
    """The quadruped torso as tracked: floor-plane position (m), heading (rad, about +z from +x),
    roll/pitch (rad; None if the tracker cannot tell), tilt (rad from vertical, >= 0; None if
    unknown), height_m (marker centre above the floor, m; None if unknown), stamp (s)."""

    x: float
    y: float
    heading: float
    stamp: float
    roll: float | None = None
    pitch: float | None = None
    tilt: float | None = None
    height_m: float | None = None


class Robot:
    """Base class: the safety-checked control period and torque bookkeeping (see module docstring).

    Subclasses implement _write(q), _wait_period(), _read() -> RobotState, _set_torque(mask),
    frame() and optionally torso()."""

    def __init__(self, config: RobotConfig) -> None:
        self.config = config
        self.names: tuple[str, ...] = tuple(s.name for s in config.servos)
        self.n = len(self.names)
        self.dt_s = config.control.dt_s
        self.limits = SafetyLimits.from_config(config)
        self.monitor = SafetyMonitor(self.limits, self.dt_s)
        self.limits_min_rad = np.asarray(self.limits.min_rad)
        self.limits_max_rad = np.asarray(self.limits.max_rad)
        self.torque_on = np.zeros(self.n, dtype=bool)
        self.last_state: RobotState | None = None
        self.last_events: list[Any] = []
        # Timing of the last period (hardware; 0 in the sim): |wake-up - deadline| and the time from
        # the previous read (the observation) to this write (the action), s.
        self.last_late_s = 0.0
        self.last_obs_to_action_s = 0.0
        self.last_settle_s = 0.0  # s the last recover() waited for a limp robot to come to rest
        self._t_read: float | None = None

    # -- subclass hooks ------------------------------------------------------------------------
    def _write(self, q: np.ndarray) -> None:
        raise NotImplementedError

    def _wait_period(self) -> None:
        raise NotImplementedError

    def _read(self) -> RobotState:
        raise NotImplementedError

    def _set_torque(self, mask: np.ndarray, on: bool) -> None:
        raise NotImplementedError

    def _settle_limp(self) -> float:
        """Wait for a limp robot to come to rest; returns the time waited (s). The simulation
        does not move between reads, so there is nothing to wait for there."""
        return 0.0

    def frame(self) -> tuple[np.ndarray, float]:
        """The newest camera frame (RGB uint8, H x W x 3) and its capture time (s).
        StaleFrameError when it is older than the configured safety.max_frame_age_s."""
        raise NotImplementedError

    def frame_age_s(self) -> float:
        return 0.0

    def torso(self) -> TorsoPose | None:
        """The tracked torso pose (quadruped), None when not seen or not tracked."""
        return None

    def close(self) -> None:
        pass

    # -- public --------------------------------------------------------------------------------
    def index(self, names: Sequence[str]) -> np.ndarray:
        """Indices of joints by name."""
        return np.array([self.names.index(n) for n in names], dtype=int)

    def read(self) -> RobotState:
        """Read every servo now (no safety check, no command)."""
        st = self._read()
        self.last_state = st
        return st

    def set_torque(self, on: bool, joints: Sequence[str] | None = None) -> None:
        """Torque on (holding the present position) or off (limp), for all or the named joints."""
        mask = np.ones(self.n, dtype=bool) if joints is None else np.isin(self.names, list(joints))
        self._set_torque(mask, on)
        self.torque_on[mask] = on

    def step(self, q_goal: np.ndarray, tilt: Sequence[float] | None = None) -> RobotState:
        """One control period (see module docstring). q_goal (n,) rad; tilt (roll, pitch) rad for
        the tilt check. Raises UnsafeCommandError (NaN: nothing sent, servos hold) or SafetyStop
        (torque is off by then)."""
        if self.monitor.tripped:
            # An e-stop (signal, another thread) or an earlier stop: torque off, refuse (counted).
            self.safe_stop()
            self.monitor.filter_command(q_goal)  # raises SafetyStop
        st = self.last_state if self.last_state is not None else self.read()
        q_safe = self.monitor.filter_command(q_goal, st.position, limp=~self.torque_on)
        try:
            self._write(q_safe)
            self._wait_period()
            st = self.read()
        except Exception as e:
            from robosac.hal.faults import BusError

            if isinstance(e, BusError):
                # Retries and reboots are the bus's job; what reaches us persisted: stop safely.
                self.monitor.count("bus_faults")
                self.monitor.trip(f"bus fault: {type(e).__name__}: {e}")
                self.safe_stop()
            raise
        try:
            self.last_events = self.monitor.check_state(st, tilt)
        except Exception:
            self.safe_stop()
            raise
        if self.monitor.tripped:
            self.safe_stop()
            raise SafetyStop(self.monitor.reason or "safety stop", self.monitor.stop_events)
        return st

    def hold(self, seconds: float, tilt: Sequence[float] | None = None) -> RobotState:
        """Keep the last goal for `seconds` (whole control periods)."""
        st = self.last_state or self.read()
        goal = self.monitor.last_goal if self.monitor.last_goal is not None else st.position
        for _ in range(max(1, int(round(seconds / self.dt_s)))):
            st = self.step(goal, tilt)
        return st

    def safe_stop(self) -> None:
        """Torque off everywhere (the fault response for anything we cannot recover from)."""
        self.monitor.count("torque_offs")
        try:
            self.set_torque(False)
        except Exception:  # noqa: BLE001 - best effort; the servos' bus watchdog is the backstop
            self.torque_on[:] = False

    def recover(self, settle: bool = True) -> None:
        """Before an episode: clear a latched stop if its cause is gone, and torque on.

        settle: a limp robot first comes to rest (`_settle_limp`, hardware only). False turns torque
        on at once, holding every joint where it is: for a caller that wants joints held rather
        than falling, e.g. the claw's reset after a current stop mid-move (limp fingers drop onto
        the valve). Raises SafetyStop if an e-stop is latched (a person must call `clear_estop()`)
        or a stop-level condition (temperature, current, hardware error) is still present."""
        m = self.monitor
        if m.tripped and (m.reason or "").startswith("e-stop"):
            raise SafetyStop(f"{m.reason}; call robot.clear_estop() once the robot is safe", m.stop_events)
        st = self.read()
        if m.tripped:
            probe = SafetyMonitor(self.limits, self.dt_s)
            stops = [e for e in probe.check_state(st) if e.level == "stop"]
            if stops:
                raise SafetyStop("still unsafe: " + "; ".join(e.message for e in stops), stops)
        m.reset()
        if settle and not self.torque_on.any():
            self.last_settle_s = self._settle_limp()
        self.set_torque(True)
        self.last_state = self.read()

    def clear_estop(self) -> None:
        """A person confirms the robot is safe after an e-stop."""
        self.monitor.reset()

    def info(self) -> dict[str, Any]:
        """Safety counters and latch (ints/str/bool) for a Gymnasium info dict."""
        return self.monitor.info()


# ------------------------------------------------------------------------------------------------


# A limp robot counts as at rest when every joint is slower than this (rad/s) for this many reads
# one control period apart; the wait gives up after SETTLE_TIMEOUT_S (s).
SETTLE_RAD_S = 0.2
SETTLE_READS = 3
SETTLE_TIMEOUT_S = 3.0


class HardwareRobot(Robot):
    """Real servos (or the twin) over the serial port, the camera over cv2.VideoCapture.

    port: serial device (default: the config's bus.port; the twin prints its own).
    camera_source: overrides the config's camera.source (a USB index, file or URL; the twin prints a URL).
    bus_settings: ServoBus settings overrides (e.g. margin_ms for a loaded machine).
    Signals: created in the main thread, it maps SIGINT/SIGTERM to an e-stop (see SafetyMonitor).
    Timing: `step` schedules against the wall clock: sleep to 1 ms before the deadline, then spin.
    A period that starts more than one period late is an overrun: counted, and the schedule
    restarts on the grid below (no burst of catch-up commands). Deadlines lie on a grid of the
    system's monotonic clock: k * dt_s + phase * dt_s (rounded down to whole ms) + 0.5 ms.
    `phase` (fraction of a period, 0-1) staggers several robots' loops on one computer
    (robosac.distributed does this), so their busy windows (wake-up, spin, step) never coincide.
    The half millisecond keeps deadlines off the whole milliseconds where the kernel's timer tick
    interrupts: a spin that ends on a tick is ~11 us late at p50 instead of ~1 us (measured here,
    BENCHMARKS.md)."""

    def __init__(
        self,
        config: RobotConfig,
        *,
        port: str | None = None,
        camera_source: int | str | None = None,
        use_camera: bool = True,
        **bus_settings: Any,
    ) -> None:
        from robosac.hal import ServoBus
        from robosac.hal.camera import Camera

        super().__init__(config)
        self.bus = ServoBus.from_config(config, port=port, **bus_settings).open()
        self.camera = None
        self.tracker = None
        try:
            self.bus.verify()
            self.bus.configure()
            if use_camera and config.camera is not None:
                src = config.camera.source if camera_source is None else camera_source
                self.camera = Camera(src, config.camera.width, config.camera.height, config.safety.max_frame_age_s).start()
                if config.tracker is not None:
                    from robosac.hal.aruco import ArucoTracker

                    self.tracker = ArucoTracker(tracker_calibration(config))
        except BaseException:
            self.close()
            raise
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C / SIGTERM latch an e-stop: torque goes off at the next step (a second signal
            # ends the program). Restored by close().
            self.monitor.install_signal_handlers()
        self._deadline: float | None = None
        self.phase = 0.0
        self.overruns = 0
        self.last_period_s = 0.0
        self._pose_cache: tuple[float, TorsoPose | None] = (-math.inf, None)

    def _write(self, q: np.ndarray) -> None:
        t = time.monotonic()
        if self._t_read is not None:
            self.last_obs_to_action_s = t - self._t_read
        self.bus.write_goal_positions(q)

    def _wait_period(self) -> None:
        now = time.monotonic()
        if self._deadline is None or now > self._deadline + self.dt_s:
            if self._deadline is not None:
                self.overruns += 1
            self._deadline = self._grid_start(now)
        start = self._deadline
        self._deadline += self.dt_s
        pause = self._deadline - time.monotonic() - 0.001
        if pause > 0:
            time.sleep(pause)
        while time.monotonic() < self._deadline:
            pass
        now = time.monotonic()
        self.last_late_s = now - self._deadline
        self.last_period_s = now - start

    def _grid_start(self, now: float) -> float:
        """The grid point one period before the first deadline, which is at least half a period
        after `now` (s, time.monotonic); see the class docstring for the grid."""
        offset = math.floor(self.phase % 1.0 * self.dt_s * 1000.0) / 1000.0 + 0.0005
        first = offset + math.ceil((now + 0.5 * self.dt_s - offset) / self.dt_s) * self.dt_s
        return first - self.dt_s

    def _settle_limp(self) -> float:
        """A limp robot (just powered up, or after a safety stop) may still be falling or swinging.
        Torque on holds every joint where it is, so joints locked mid-fall would land the robot on
        stiff legs (a precaution: the twin's quadruped is still collapsing ~1 s after power-up; the
        CI failure this came with turned out to be elsewhere). So wait until every joint is slower
        than SETTLE_RAD_S for SETTLE_READS reads one period apart, at most SETTLE_TIMEOUT_S (then go
        on: a joint that keeps moving, such as a free-spinning valve, must not block the reset)."""
        t0 = time.monotonic()
        still = 0
        while still < SETTLE_READS and time.monotonic() - t0 < SETTLE_TIMEOUT_S:
            time.sleep(self.dt_s)
            v = np.asarray(self.read().velocity, dtype=float)
            still = still + 1 if bool(np.all(np.abs(v[np.isfinite(v)]) < SETTLE_RAD_S)) else 0
        return time.monotonic() - t0

    def _read(self) -> RobotState:
        b = self.bus.read_state()
        self._t_read = b.stamp
        return RobotState(b.position, b.velocity, b.current, b.temperature, b.hardware_error, b.stamp, dict(b.errors_seen))

    def safe_stop(self) -> None:
        """Torque off everywhere: checked writes, else one broadcast Torque Enable = 0 packet (a
        servo that stopped answering still hears a broadcast); the Bus Watchdog is the backstop."""
        from robosac.robots.safety import SafeBus

        SafeBus(self.bus, self.monitor).torque_off()  # counts torque_offs
        self.torque_on[:] = False
        self._deadline = None

    def _set_torque(self, mask: np.ndarray, on: bool) -> None:
        ids = [sid for sid, m in zip(self.bus.ids, mask) if m]
        if on:
            self.bus.enable_torque(ids)
        else:
            self.bus.disable_torque(ids)
        self._deadline = None  # torque changes take bus time: restart the schedule

    def frame(self) -> tuple[np.ndarray, float]:
        if self.camera is None:
            raise RuntimeError(f"{self.config.name}: no camera configured (add a camera: section)")
        return self.camera.get()

    def frame_age_s(self) -> float:
        return self.camera.frame_age() if self.camera is not None else math.nan

    def torso(self) -> TorsoPose | None:
        if self.tracker is None or self.camera is None:
            return None
        frame, stamp = self.camera.latest()
        if frame is None:
            return None
        if stamp == self._pose_cache[0]:
            return self._pose_cache[1]
        p = self.tracker.update(frame, stamp)
        pose = None
        if p is not None:
            pose = TorsoPose(p.x, p.y, p.heading, stamp, p.roll, p.pitch, p.tilt, p.z)
        self._pose_cache = (stamp, pose)
        return pose

    def close(self) -> None:
        """Torque off and release the port and the camera."""
        self.monitor.uninstall_signal_handlers()
        if getattr(self, "camera", None) is not None:
            self.camera.stop()
        if getattr(self, "bus", None) is not None and self.bus.is_open:
            try:
                self.bus.close(torque_off=True)
            except Exception:  # noqa: BLE001 - closing anyway
                pass


def tracker_calibration(config: RobotConfig, sim: Any = None) -> Any:
    """ArucoCalibration from the config's tracker section (or, without camera_matrix, from the
    twin's model `sim` at the config's camera size)."""
    from robosac.hal.aruco import ArucoCalibration

    t = config.tracker
    if t is None or config.camera is None:
        raise ValueError(f"{config.name}: tracking needs both a camera: and a tracker: section")
    kw: dict[str, Any] = dict(marker_id=t.marker_id, dictionary=t.dictionary, heading_offset_rad=t.heading_offset_rad,
                              marker_size_m=t.marker_size_m)
    if t.camera_matrix is None:
        if sim is None:
            raise ValueError(f"{config.name}: tracker.camera_matrix, camera_position_m and camera_rotation are needed on hardware")
        cam = config.sim.camera if config.sim and config.sim.camera else sim.model.camera(0).name
        return ArucoCalibration.from_sim(sim, cam, config.camera.width, config.camera.height, plane_z_m=t.plane_z_m, **kw)
    return ArucoCalibration(
        K=np.asarray(t.camera_matrix), cam_pos=np.asarray(t.camera_position_m), cam_rot=np.asarray(t.camera_rotation),
        plane_z_m=t.plane_z_m, dist=None if t.dist_coeffs is None else np.asarray(t.dist_coeffs), **kw,
    )


# ------------------------------------------------------------------------------------------------


class SimRobot(Robot):
    """The robot's MJCF model stepped directly (no serial, no real time).

    Servo speed caps follow the config (limits.max_velocity_rad_s, what the bus writes to Velocity
    Limit), so a goal is followed as on the twin. Temperatures read SIM_TEMPERATURE_C; hardware
    errors never occur. Frames are rendered at the config's camera size (64 x 64 without a camera
    section), the size the hardware camera delivers, so the env shrinks both backends' frames to its
    image_size the same way (area averaging keeps sub-pixel edges; a frame rendered straight at 32 px
    is aliased, and its colours differ from the bench's). torso() is the simulator's ground truth. randomization / seed: the
    domain randomisation drawn at construction (see `randomize`; None = the MJCF's nominal model)."""

    def __init__(
        self,
        config: RobotConfig,
        *,
        seed: int | None = None,
        randomization: "DomainRandomization | None" = None,
    ) -> None:
        from sim.mujoco_sim import MujocoSim

        super().__init__(config)
        self.sim = MujocoSim(config, seed=seed, randomization=randomization, torque=False)
        self.sim.set_velocity_caps(np.array([s.limits.max_velocity_rad_s for s in config.servos]))
        self._substeps = max(1, int(round(self.dt_s / self.sim.dt)))
        cam = config.camera
        self.image_size = (cam.width, cam.height) if cam else (64, 64)  # px
        self._camera_name = config.sim.camera if config.sim and config.sim.camera else None

    def randomize(self, randomization: "DomainRandomization", seed: int | None) -> dict[str, float]:
        """A fresh draw of `randomization` from `seed`, applied to the nominal model (draws never
        compound); returns {knob: value drawn} (scales unitless, else the knob's unit). The state
        is kept: the caller restarts or resets the robot afterwards. Simulation only."""
        return {k: float(v) for k, v in self.sim.randomize(seed, randomization).values.items()}

    def restart(self) -> None:
        """Back to the model's initial state (all servos limp) with a fresh safety monitor, so a
        seeded episode is reproducible. Simulation only: a real robot cannot be teleported."""
        self.sim.reset()
        self.sim.set_torque(False)
        self.torque_on[:] = False
        self.monitor = SafetyMonitor(self.limits, self.dt_s)
        self.last_state = None
        self.last_events = []

    def _write(self, q: np.ndarray) -> None:
        self.sim.set_targets(q)

    def _wait_period(self) -> None:
        self.sim.step(self._substeps)

    def _read(self) -> RobotState:
        s = self.sim.read()
        n = self.n
        return RobotState(s.positions_rad, s.velocities_rad_s, s.currents_a, np.full(n, SIM_TEMPERATURE_C),
                          np.zeros(n, dtype=np.uint8), s.time_s)

    def _set_torque(self, mask: np.ndarray, on: bool) -> None:
        if on:
            # Hold where the joint is (the bus writes goal = present before torque on).
            q = self.sim.read().positions_rad
            for i in np.flatnonzero(mask):
                self.sim.set_target(int(i), float(q[i]))
                self.sim._ref[i] = q[i]
        torque = self.sim.torque
        torque[mask] = on
        self.sim.set_torque(torque)

    def frame(self) -> tuple[np.ndarray, float]:
        w, h = self.image_size
        return self.sim.render(self._camera_name, w, h), self.sim.time

    def torso(self) -> TorsoPose | None:
        if self.sim._torso is None:
            return None
        from robosac.hal.aruco import roll_pitch_tilt

        pos, _ = self.sim.torso_pose()
        R = self.sim.data.xmat[self.sim._torso].reshape(3, 3)  # torso -> world
        roll, pitch, tilt = roll_pitch_tilt(R)
        heading = math.atan2(R[1, 0], R[0, 0])
        height = float(self.sim.marker_position()[2]) if self.sim._marker is not None else float(pos[2])
        return TorsoPose(float(pos[0]), float(pos[1]), heading, self.sim.time, roll, pitch, tilt, height)

    def close(self) -> None:
        self.sim.close()
