"""Robot hardware configuration: typed, validated objects loaded from a YAML file.

`load_config(path) -> RobotConfig` is the one entry point. Every problem in the file raises
`ConfigError` whose message names the full key path (e.g. ``servos[3].model``), the bad value and
what is allowed, so a typo is caught at start-up instead of on the bench.

Schema (units in the key names; angles in rad at the *joint*, i.e. after calibration)::

    name: claw                      # robot name (str)
    model_xml: sim/models/claw.xml  # MJCF model for the twin (str, optional)
    bus:
      port: /dev/ttyUSB0            # serial device (the twin overrides it)
      baud: 1000000                 # one of BAUD_RATES
      return_delay_us: 0            # 0..508, even (servo units are 2 us)
      watchdog_ms: 0                # 0 = off, else 20..2540 in steps of 20 (servo units are 20 ms)
      shutdown: [overload, electrical_shock, encoder, overheating]   # names or an int bit mask
    servos:
      - name: f0_top                # unique
        id: 1                       # 0..252, unique
        model: XM430-W210           # one of SERVO_MODELS
        operating_mode: 3           # 3 position, 4 extended position, 5 current-based position
        calibration: {sign: 1, offset_rad: 0.0}   # joint = sign * (servo_angle - offset_rad)
        limits:
          min_rad: -0.48
          max_rad: 0.48
          max_velocity_rad_s: 6.0   # > 0, at most the model's velocity-limit range
          current_a: 1.2            # optional; not allowed on models without current control
        pid: {p: 800, i: 0, d: 0}   # optional raw position gains (0..16383)
        profile: {velocity_rad_s: 0.0, acceleration_rad_s2: 0.0}   # optional, 0 = no profile

    camera:                         # optional: the robot's camera as robosac opens it
      source: 0                     # cv2.VideoCapture source: USB index, file or URL (the twin prints its own URL)
      width: 128                    # frame width, px
      height: 128                   # frame height, px
      fps: 30                       # frames per second
      roi: [0.14, 0.06, 0.7, 0.7]   # optional: the part the policy sees, [x, y, width, height] as fractions of the frame
    sim:                            # optional: how the MuJoCo twin renders this robot
      camera: overhead              # MJCF camera the twin serves as the robot's camera
      timestep_s: 0.002             # physics step, s (default: the MJCF's own)
    control:                        # optional: how an environment drives the robot
      rate_hz: 10                   # env steps per second (0.5..1000)
      episode_s: 8.0                # time limit of an episode, s
      action_joints: [f0_top, ...]  # servos the policy moves (default: all)
      action_center_rad: {f0_top: 0.0, ...}  # joint -> rad that action 0 commands (default: reset.pose_rad)
      action_range_rad: {fr_hip: [-0.25, 0.14], ...}  # joint -> [rad at action -1, rad at +1] (default: its limits)
    safety:                         # optional: safety monitor thresholds (robosac.robots.safety)
      max_speed_rad_s: 6.0          # cap on every joint's commanded speed (default: each servo's limit)
      current_warn_fraction: 0.8    # of limits.current_a
      current_stop_fraction: 1.0
      temperature_warn_c: 65
      temperature_stop_c: 72
      tilt_limit_rad: 0.7           # |roll| or |pitch| that stops the robot (omit: no tilt check)
      max_frame_age_s: 0.2          # a camera frame older than this is refused, s
      current_stop_s: 0.5           # current at the stop level for this long stops the robot, s
    reset:                          # optional: the robot's own reset routine
      pose_rad: {f0_top: 0.0, ...}  # joint -> rad: the reset pose (and, by default, action 0's)
      clear_pose_rad: {...}         # claw: fingers clear of the valve while it turns
      tolerance_rad: 0.1            # a joint within this of its pose has reached it
      timeout_s: 3.0                # time allowed to reach a pose, s
      max_attempts: 3               # tries before a human is asked (hardware) or reset fails
    tracker:                        # optional: ArUco marker tracking with the robot's camera
      marker_id: 0
      dictionary: DICT_4X4_50
      marker_size_m: 0.1125         # side of the black square, m
      plane_z_m: 0.29               # height of the marker above the floor when standing, m
      camera_matrix: [[f, 0, cx], [0, f, cy], [0, 0, 1]]   # intrinsics at width x height, px
      dist_coeffs: [0, 0, 0, 0, 0]  # OpenCV distortion (optional)
      camera_position_m: [0, 0, 2.3]                      # camera centre in the world, m
      camera_rotation: [[1, 0, 0], [0, -1, 0], [0, 0, -1]] # camera->world, OpenCV axes

To add a section: a parser in `_SECTIONS` and a field in `RobotConfig`. Unknown keys anywhere are
errors listing allowed keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

__all__ = [
    "BAUD_RATES",
    "SHUTDOWN_BITS",
    "SERVO_MODELS",
    "ConfigError",
    "ServoModelInfo",
    "BusConfig",
    "Calibration",
    "JointLimits",
    "PidGains",
    "Profile",
    "ServoConfig",
    "CameraConfig",
    "SimConfig",
    "ControlConfig",
    "SafetyConfig",
    "ResetConfig",
    "TrackerConfig",
    "RobotConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """A hardware config is invalid; the message names the key path, the value and what is allowed."""


@dataclass(frozen=True)
class ServoModelInfo:
    """Facts about a servo model the config needs to validate against (from the e-manual)."""

    model_number: int
    has_current: bool  # XL430 has no current sensing / current limit (Present Load instead)
    current_unit_a: float  # A per raw unit of Current Limit / Present Current (0 if absent)
    current_limit_max: int  # raw maximum of Current Limit (addr 38); 0 if absent
    velocity_limit_max: int = 1023  # raw maximum of Velocity Limit (addr 44)


# Velocity unit of every X430 model: 0.229 rev/min per unit.
VELOCITY_UNIT_RAD_S: float = 0.229 * 2.0 * math.pi / 60.0

SERVO_MODELS: dict[str, ServoModelInfo] = {
    "XM430-W210": ServoModelInfo(1030, True, 0.00269, 1193),
    "XM430-W350": ServoModelInfo(1020, True, 0.00269, 1193),
    "XH430-W210": ServoModelInfo(1010, True, 0.00269, 648),
    "XH430-W350": ServoModelInfo(1000, True, 0.00269, 648),
    "XL430-W250": ServoModelInfo(1060, False, 0.0, 0),
}

# Baud rates the stock SDK accepts (4.5M is rejected by PortHandler), bps.
BAUD_RATES: tuple[int, ...] = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)

# Hardware Error Status / Shutdown bit names (addr 63 / 70).
SHUTDOWN_BITS: dict[str, int] = {
    "input_voltage": 0x01,
    "overheating": 0x04,
    "encoder": 0x08,
    "electrical_shock": 0x10,
    "overload": 0x20,
}
_DEFAULT_SHUTDOWN = 0x34  # factory default: overheating | electrical_shock | overload

OPERATING_MODES: dict[int, str] = {3: "position", 4: "extended position", 5: "current-based position"}


@dataclass(frozen=True)
class BusConfig:
    port: str
    baud: int
    return_delay_us: int = 0
    watchdog_ms: int = 0
    shutdown: int = _DEFAULT_SHUTDOWN  # bit mask, see SHUTDOWN_BITS


@dataclass(frozen=True)
class Calibration:
    """joint_rad = sign * (servo_rad - offset_rad); servo_rad is 0 at tick 2048 (mode 3 centre)."""

    sign: int = 1
    offset_rad: float = 0.0


@dataclass(frozen=True)
class JointLimits:
    min_rad: float
    max_rad: float
    max_velocity_rad_s: float
    current_a: float | None = None


@dataclass(frozen=True)
class PidGains:
    """Raw position PID gains (control table units, 0..16383)."""

    p: int
    i: int = 0
    d: int = 0


@dataclass(frozen=True)
class Profile:
    """Servo-side motion profile; 0 means no limit (step to goal)."""

    velocity_rad_s: float = 0.0
    acceleration_rad_s2: float = 0.0


@dataclass(frozen=True)
class ServoConfig:
    name: str
    id: int
    model: str
    operating_mode: int
    calibration: Calibration
    limits: JointLimits
    pid: PidGains | None = None
    profile: Profile | None = None

    @property
    def model_info(self) -> ServoModelInfo:
        return SERVO_MODELS[self.model]


@dataclass(frozen=True)
class CameraConfig:
    """The robot's camera: an OpenCV capture source and the frame size (px) and rate (frames/s)."""

    source: int | str = 0
    width: int = 128
    height: int = 128
    fps: float = 30.0
    # The region the policy sees: (x, y, width, height), fractions of the frame from its top left
    # corner; None = the whole frame. A tighter view of the task object spends the policy's few
    # pixels on it (the fingers are in the state anyway). Videos keep the whole frame.
    roi: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class SimConfig:
    """Twin settings: the MJCF camera served as the robot's camera; physics step (s, None = MJCF's)."""

    camera: str | None = None
    timestep_s: float | None = None


@dataclass(frozen=True)
class ControlConfig:
    """Env stepping: rate_hz (Hz), episode_s (s), action_joints (servo names the policy moves; None = all),
    action_center_rad (joint -> rad that action 0 commands; a joint not named: its reset pose),
    action_range_rad (joint -> (lo, hi) rad that actions -1 and +1 command; a joint not named: its limits)."""

    rate_hz: float = 10.0
    episode_s: float = 10.0
    action_joints: tuple[str, ...] | None = None
    action_center_rad: Mapping[str, float] | None = None
    action_range_rad: Mapping[str, tuple[float, float]] | None = None

    @property
    def dt_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def max_steps(self) -> int:
        return max(1, int(round(self.episode_s * self.rate_hz)))


@dataclass(frozen=True)
class SafetyConfig:
    """Safety monitor thresholds (see robosac.robots.safety for what each does and why the defaults)."""

    max_speed_rad_s: float | None = None  # None: each servo's limits.max_velocity_rad_s
    current_warn_fraction: float = 0.8
    current_stop_fraction: float = 1.0
    temperature_warn_c: float = 65.0
    temperature_stop_c: float = 72.0
    tilt_limit_rad: float | None = None
    max_frame_age_s: float = 0.2
    current_stop_s: float = 0.5  # |current| >= stop level for this long before it stops, s


@dataclass(frozen=True)
class ResetConfig:
    """The robot's own reset: poses as {joint name: rad}; tolerance rad; timeout s; attempts."""

    pose_rad: Mapping[str, float] | None = None
    clear_pose_rad: Mapping[str, float] | None = None
    tolerance_rad: float = 0.1
    timeout_s: float = 3.0
    max_attempts: int = 3


@dataclass(frozen=True)
class TrackerConfig:
    """ArUco tracking calibration. camera_matrix None = take it from the twin's model (sim only)."""

    marker_id: int = 0
    dictionary: str = "DICT_4X4_50"
    marker_size_m: float | None = None
    plane_z_m: float = 0.0
    heading_offset_rad: float = 0.0
    camera_matrix: tuple[tuple[float, ...], ...] | None = None
    dist_coeffs: tuple[float, ...] | None = None
    camera_position_m: tuple[float, ...] | None = None
    camera_rotation: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class RobotConfig:
    name: str
    bus: BusConfig
    servos: tuple[ServoConfig, ...]
    model_xml: str | None = None
    source: str | None = None  # path the config was loaded from, if any
    camera: CameraConfig | None = None
    sim: SimConfig | None = None
    control: ControlConfig = ControlConfig()
    safety: SafetyConfig = SafetyConfig()
    reset: ResetConfig = ResetConfig()
    tracker: TrackerConfig | None = None

    def servo(self, name: str) -> ServoConfig:
        for s in self.servos:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.servos)

    def with_port(self, port: str) -> "RobotConfig":
        """A copy with another serial port (the twin overrides the port)."""
        return replace(self, bus=replace(self.bus, port=port))


# --------------------------------------------------------------------------------------------
# Validation helpers. Each takes the key path so errors can name it.


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path}: invalid value {value!r}; allowed: {allowed}")


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, value, "a mapping (key: value)")
    return value


def _check_keys(m: Mapping[str, Any], path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    allowed = required + optional
    for k in m:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise ConfigError(f"{where}: unknown key {k!r}; allowed keys: {', '.join(allowed)}")
    for k in required:
        if k not in m:
            where = f"{path}.{k}" if path else k
            raise ConfigError(f"{where}: missing required key; required keys: {', '.join(required)}")


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, value, f"an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise _fail(path, value, f"an integer in [{lo}, {hi}]")
    return value


def _float(value: Any, path: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> float:
    rng = f"a number in {'(' if lo_open else '['}{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, value, rng)
    v = float(value)
    if math.isnan(v) or v < lo or v > hi or (lo_open and v == lo):
        raise _fail(path, value, rng)
    return v


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, value, "a non-empty string")
    return value


# --------------------------------------------------------------------------------------------
# Section parsers.


def _parse_shutdown(value: Any, path: str) -> int:
    names = ", ".join(SHUTDOWN_BITS)
    if isinstance(value, int) and not isinstance(value, bool):
        mask = sum(SHUTDOWN_BITS.values())
        if value < 0 or value & ~mask:
            raise _fail(path, value, f"a bit mask of {mask:#04x} ({names}) or a list of those names")
        return value
    if isinstance(value, list):
        bits = 0
        for i, name in enumerate(value):
            if name not in SHUTDOWN_BITS:
                raise _fail(f"{path}[{i}]", name, names)
            bits |= SHUTDOWN_BITS[name]
        return bits
    raise _fail(path, value, f"a list of names ({names}) or an integer bit mask")


def _parse_bus(value: Any, path: str = "bus") -> BusConfig:
    m = _mapping(value, path)
    _check_keys(m, path, ("port", "baud"), ("return_delay_us", "watchdog_ms", "shutdown"))
    port = _str(m["port"], f"{path}.port")
    baud = m["baud"]
    if isinstance(baud, bool) or baud not in BAUD_RATES:
        raise _fail(f"{path}.baud", baud, ", ".join(str(b) for b in BAUD_RATES))
    rd = _int(m.get("return_delay_us", 0), f"{path}.return_delay_us", 0, 508)
    if rd % 2:
        raise _fail(f"{path}.return_delay_us", rd, "an even number of microseconds in [0, 508] (2 us units)")
    wd = _int(m.get("watchdog_ms", 0), f"{path}.watchdog_ms", 0, 2540)
    if wd % 20:
        raise _fail(f"{path}.watchdog_ms", wd, "0 (off) or a multiple of 20 ms up to 2540")
    sd = _parse_shutdown(m.get("shutdown", _DEFAULT_SHUTDOWN), f"{path}.shutdown")
    return BusConfig(port=port, baud=int(baud), return_delay_us=rd, watchdog_ms=wd, shutdown=sd)


def _parse_servo(value: Any, path: str) -> ServoConfig:
    m = _mapping(value, path)
    _check_keys(m, path, ("name", "id", "model", "limits"), ("operating_mode", "calibration", "pid", "profile"))
    name = _str(m["name"], f"{path}.name")
    sid = _int(m["id"], f"{path}.id", 0, 252)
    model = m["model"]
    if model not in SERVO_MODELS:
        raise _fail(f"{path}.model", model, ", ".join(SERVO_MODELS))
    info = SERVO_MODELS[model]
    mode = m.get("operating_mode", 3)
    if isinstance(mode, bool) or mode not in OPERATING_MODES:
        raise _fail(f"{path}.operating_mode", mode, ", ".join(f"{k} ({v})" for k, v in OPERATING_MODES.items()))

    cal_m = _mapping(m.get("calibration", {}), f"{path}.calibration")
    _check_keys(cal_m, f"{path}.calibration", (), ("sign", "offset_rad"))
    sign = cal_m.get("sign", 1)
    if isinstance(sign, bool) or sign not in (1, -1):
        raise _fail(f"{path}.calibration.sign", sign, "1 or -1")
    offset = _float(cal_m.get("offset_rad", 0.0), f"{path}.calibration.offset_rad", -2 * math.pi * 256, 2 * math.pi * 256)
    cal = Calibration(sign=int(sign), offset_rad=offset)

    lp = f"{path}.limits"
    lim_m = _mapping(m["limits"], lp)
    _check_keys(lim_m, lp, ("min_rad", "max_rad", "max_velocity_rad_s"), ("current_a",))
    # Mode 3 works within one turn; modes 4/5 span +-256 turns.
    span = math.pi if mode == 3 else 1_048_575 * 2 * math.pi / 4096
    lo = _float(lim_m["min_rad"], f"{lp}.min_rad", -span, span)
    hi = _float(lim_m["max_rad"], f"{lp}.max_rad", -span, span)
    if not lo < hi:
        raise ConfigError(f"{lp}: min_rad ({lo}) must be less than max_rad ({hi})")
    vmax = info.velocity_limit_max * VELOCITY_UNIT_RAD_S
    vel = _float(lim_m["max_velocity_rad_s"], f"{lp}.max_velocity_rad_s", 0.0, round(vmax, 3), lo_open=True)
    cur: float | None = None
    if "current_a" in lim_m:
        if not info.has_current:
            raise ConfigError(
                f"{lp}.current_a: invalid value {lim_m['current_a']!r}; allowed: nothing — "
                f"{model} has no current limit (remove the key)"
            )
        cmax = round(info.current_limit_max * info.current_unit_a, 3)
        cur = _float(lim_m["current_a"], f"{lp}.current_a", 0.0, cmax, lo_open=True)
    elif mode == 5 and info.has_current:
        pass  # firmware default current limit applies
    limits = JointLimits(min_rad=lo, max_rad=hi, max_velocity_rad_s=vel, current_a=cur)

    pid = None
    if m.get("pid") is not None:
        pp = f"{path}.pid"
        pm = _mapping(m["pid"], pp)
        _check_keys(pm, pp, ("p",), ("i", "d"))
        pid = PidGains(
            p=_int(pm["p"], f"{pp}.p", 0, 16383),
            i=_int(pm.get("i", 0), f"{pp}.i", 0, 16383),
            d=_int(pm.get("d", 0), f"{pp}.d", 0, 16383),
        )
    profile = None
    if m.get("profile") is not None:
        pp = f"{path}.profile"
        pm = _mapping(m["profile"], pp)
        _check_keys(pm, pp, (), ("velocity_rad_s", "acceleration_rad_s2"))
        profile = Profile(
            velocity_rad_s=_float(pm.get("velocity_rad_s", 0.0), f"{pp}.velocity_rad_s", 0.0, round(vmax, 3)),
            acceleration_rad_s2=_float(pm.get("acceleration_rad_s2", 0.0), f"{pp}.acceleration_rad_s2", 0.0, 1000.0),
        )
    return ServoConfig(
        name=name, id=sid, model=str(model), operating_mode=int(mode), calibration=cal, limits=limits, pid=pid, profile=profile
    )


def _parse_servos(value: Any, path: str = "servos") -> tuple[ServoConfig, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(path, value, "a non-empty list of servo mappings")
    servos = tuple(_parse_servo(v, f"{path}[{i}]") for i, v in enumerate(value))
    seen_id: dict[int, int] = {}
    seen_name: dict[str, int] = {}
    for i, s in enumerate(servos):
        if s.id in seen_id:
            raise ConfigError(f"{path}[{i}].id: duplicate id {s.id} (also servos[{seen_id[s.id]}].id); ids must be unique")
        if s.name in seen_name:
            raise ConfigError(
                f"{path}[{i}].name: duplicate name {s.name!r} (also servos[{seen_name[s.name]}].name); names must be unique"
            )
        seen_id[s.id] = i
        seen_name[s.name] = i
    return servos


def _parse_camera(value: Any, path: str = "camera") -> CameraConfig:
    m = _mapping(value, path)
    _check_keys(m, path, (), ("source", "width", "height", "fps", "roi"))
    src = m.get("source", 0)
    if isinstance(src, bool) or not isinstance(src, (int, str)) or (isinstance(src, str) and not src.strip()):
        raise _fail(f"{path}.source", src, "a camera index (int >= 0), a file path or a URL")
    if isinstance(src, int) and src < 0:
        raise _fail(f"{path}.source", src, "a camera index (int >= 0), a file path or a URL")
    return CameraConfig(
        source=src,
        width=_int(m.get("width", 128), f"{path}.width", 16, 4096),
        height=_int(m.get("height", 128), f"{path}.height", 16, 4096),
        fps=_float(m.get("fps", 30.0), f"{path}.fps", 0.0, 240.0, lo_open=True),
        roi=None if m.get("roi") is None else _parse_roi(m["roi"], f"{path}.roi"),
    )


def _parse_roi(value: Any, path: str) -> tuple[float, float, float, float]:
    allowed = "[x, y, width, height], fractions of the frame: x, y >= 0, width, height > 0, x + width <= 1, y + height <= 1"
    if not isinstance(value, (list, tuple)) or len(value) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise _fail(path, value, allowed)
    x, y, w, h = (float(v) for v in value)
    if not (x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9):
        raise _fail(path, value, allowed)
    return (x, y, w, h)


def _parse_sim(value: Any, path: str = "sim") -> SimConfig:
    m = _mapping(value, path)
    _check_keys(m, path, (), ("camera", "timestep_s"))
    cam = m.get("camera")
    ts = m.get("timestep_s")
    return SimConfig(
        camera=None if cam is None else _str(cam, f"{path}.camera"),
        timestep_s=None if ts is None else _float(ts, f"{path}.timestep_s", 0.0, 0.05, lo_open=True),
    )


def _names(value: Any, path: str) -> tuple[str, ...]:
    """A list of distinct names (checked against the servos in _check_joint_names)."""
    if not isinstance(value, list) or not value:
        raise _fail(path, value, "a non-empty list of servo names")
    for i, v in enumerate(value):
        _str(v, f"{path}[{i}]")
    if len(set(value)) != len(value):
        raise _fail(path, value, "servo names without repeats")
    return tuple(value)


def _parse_control(value: Any, path: str = "control") -> ControlConfig:
    m = _mapping(value, path)
    _check_keys(m, path, (), ("rate_hz", "episode_s", "action_joints", "action_center_rad", "action_range_rad"))
    aj = m.get("action_joints")
    center = m.get("action_center_rad")
    ranges = m.get("action_range_rad")
    return ControlConfig(
        rate_hz=_float(m.get("rate_hz", 10.0), f"{path}.rate_hz", 0.5, 1000.0),
        episode_s=_float(m.get("episode_s", 10.0), f"{path}.episode_s", 0.0, 86400.0, lo_open=True),
        action_joints=None if aj is None else _names(aj, f"{path}.action_joints"),
        action_center_rad=None if center is None else _pose(center, f"{path}.action_center_rad"),
        action_range_rad=None if ranges is None else _ranges(ranges, f"{path}.action_range_rad"),
    )


def _ranges(value: Any, path: str) -> dict[str, tuple[float, float]]:
    m = _mapping(value, path)
    if not m:
        raise _fail(path, value, "a non-empty mapping {servo name: [lo, hi] in rad}")
    out = {}
    for k, v in m.items():
        if not isinstance(v, list) or len(v) != 2:
            raise _fail(f"{path}.{k}", v, "[lo, hi] in rad, lo < hi")
        lo, hi = (_float(x, f"{path}.{k}", -1e4, 1e4) for x in v)
        if not lo < hi:
            raise _fail(f"{path}.{k}", v, "[lo, hi] in rad, lo < hi")
        out[str(k)] = (lo, hi)
    return out


def _parse_safety(value: Any, path: str = "safety") -> SafetyConfig:
    m = _mapping(value, path)
    keys = ("max_speed_rad_s", "current_warn_fraction", "current_stop_fraction", "temperature_warn_c",
            "temperature_stop_c", "tilt_limit_rad", "max_frame_age_s", "current_stop_s")
    _check_keys(m, path, (), keys)
    d = SafetyConfig()
    ms = m.get("max_speed_rad_s")
    tl = m.get("tilt_limit_rad")
    stop_f = _float(m.get("current_stop_fraction", d.current_stop_fraction), f"{path}.current_stop_fraction", 0.0, 10.0, lo_open=True)
    stop_c = _float(m.get("temperature_stop_c", d.temperature_stop_c), f"{path}.temperature_stop_c", 0.0, 100.0, lo_open=True)
    return SafetyConfig(
        max_speed_rad_s=None if ms is None else _float(ms, f"{path}.max_speed_rad_s", 0.0, 100.0, lo_open=True),
        current_warn_fraction=_float(m.get("current_warn_fraction", d.current_warn_fraction), f"{path}.current_warn_fraction", 0.0, stop_f, lo_open=True),
        current_stop_fraction=stop_f,
        temperature_warn_c=_float(m.get("temperature_warn_c", d.temperature_warn_c), f"{path}.temperature_warn_c", 0.0, stop_c, lo_open=True),
        temperature_stop_c=stop_c,
        tilt_limit_rad=None if tl is None else _float(tl, f"{path}.tilt_limit_rad", 0.0, math.pi, lo_open=True),
        max_frame_age_s=_float(m.get("max_frame_age_s", d.max_frame_age_s), f"{path}.max_frame_age_s", 0.0, 10.0, lo_open=True),
        current_stop_s=_float(m.get("current_stop_s", d.current_stop_s), f"{path}.current_stop_s", 0.0, 60.0),
    )


def _pose(value: Any, path: str) -> dict[str, float]:
    m = _mapping(value, path)
    if not m:
        raise _fail(path, value, "a non-empty mapping {servo name: angle in rad}")
    return {str(k): _float(v, f"{path}.{k}", -1e4, 1e4) for k, v in m.items()}


def _parse_reset(value: Any, path: str = "reset") -> ResetConfig:
    m = _mapping(value, path)
    _check_keys(m, path, (), ("pose_rad", "clear_pose_rad", "tolerance_rad", "timeout_s", "max_attempts"))
    d = ResetConfig()
    return ResetConfig(
        pose_rad=None if m.get("pose_rad") is None else _pose(m["pose_rad"], f"{path}.pose_rad"),
        clear_pose_rad=None if m.get("clear_pose_rad") is None else _pose(m["clear_pose_rad"], f"{path}.clear_pose_rad"),
        tolerance_rad=_float(m.get("tolerance_rad", d.tolerance_rad), f"{path}.tolerance_rad", 0.0, 1.0, lo_open=True),
        timeout_s=_float(m.get("timeout_s", d.timeout_s), f"{path}.timeout_s", 0.0, 600.0, lo_open=True),
        max_attempts=_int(m.get("max_attempts", d.max_attempts), f"{path}.max_attempts", 1, 100),
    )


def _matrix(value: Any, path: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
    shape = f"a {rows}x{cols} list of lists of numbers"
    if not isinstance(value, list) or len(value) != rows:
        raise _fail(path, value, shape)
    out = []
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise _fail(f"{path}[{i}]", row, f"a list of {cols} numbers ({shape})")
        out.append(tuple(_float(x, f"{path}[{i}][{j}]") for j, x in enumerate(row)))
    return tuple(out)


def _parse_tracker(value: Any, path: str = "tracker") -> TrackerConfig:
    m = _mapping(value, path)
    _check_keys(m, path, (), ("marker_id", "dictionary", "marker_size_m", "plane_z_m", "heading_offset_rad",
                              "camera_matrix", "dist_coeffs", "camera_position_m", "camera_rotation"))
    d = TrackerConfig()
    dictionary = m.get("dictionary", d.dictionary)
    if not isinstance(dictionary, str) or not dictionary.startswith("DICT_"):
        raise _fail(f"{path}.dictionary", dictionary, "an OpenCV ArUco dictionary name such as DICT_4X4_50")
    calib = ("camera_matrix", "camera_position_m", "camera_rotation")
    given = [k for k in calib if m.get(k) is not None]
    if given and len(given) != len(calib):
        missing = [k for k in calib if k not in given]
        raise ConfigError(f"{path}.{missing[0]}: missing; camera_matrix, camera_position_m and camera_rotation go together")
    K = None if m.get("camera_matrix") is None else _matrix(m["camera_matrix"], f"{path}.camera_matrix", 3, 3)
    R = None if m.get("camera_rotation") is None else _matrix(m["camera_rotation"], f"{path}.camera_rotation", 3, 3)
    if R is not None:
        import numpy as np

        r = np.asarray(R)
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
            raise _fail(f"{path}.camera_rotation", [list(x) for x in R], "a rotation matrix (orthonormal, det +1), camera->world, OpenCV axes")
    pos = m.get("camera_position_m")
    if pos is not None and (not isinstance(pos, list) or len(pos) != 3):
        raise _fail(f"{path}.camera_position_m", pos, "a list of 3 numbers (m)")
    dist = m.get("dist_coeffs")
    if dist is not None and (not isinstance(dist, list) or len(dist) not in (4, 5, 8, 12, 14)):
        raise _fail(f"{path}.dist_coeffs", dist, "a list of 4, 5, 8, 12 or 14 numbers (OpenCV order)")
    size = m.get("marker_size_m")
    return TrackerConfig(
        marker_id=_int(m.get("marker_id", 0), f"{path}.marker_id", 0, 999),
        dictionary=dictionary,
        marker_size_m=None if size is None else _float(size, f"{path}.marker_size_m", 0.0, 2.0, lo_open=True),
        plane_z_m=_float(m.get("plane_z_m", 0.0), f"{path}.plane_z_m", -10.0, 10.0),
        heading_offset_rad=_float(m.get("heading_offset_rad", 0.0), f"{path}.heading_offset_rad", -2 * math.pi, 2 * math.pi),
        camera_matrix=K,
        dist_coeffs=None if dist is None else tuple(_float(x, f"{path}.dist_coeffs[{i}]") for i, x in enumerate(dist)),
        camera_position_m=None if pos is None else tuple(_float(x, f"{path}.camera_position_m[{i}]") for i, x in enumerate(pos)),
        camera_rotation=R,
    )


def _check_joint_names(cfg: RobotConfig) -> None:
    names = tuple(s.name for s in cfg.servos)
    if cfg.control.action_joints is not None:
        for i, n in enumerate(cfg.control.action_joints):
            if n not in names:
                raise _fail(f"control.action_joints[{i}]", n, ", ".join(names))
    poses = {"reset.pose_rad": cfg.reset.pose_rad, "reset.clear_pose_rad": cfg.reset.clear_pose_rad,
             "control.action_center_rad": cfg.control.action_center_rad}
    for key, pose in poses.items():
        for n, q in (pose or {}).items():
            if n not in names:
                raise _fail(f"{key}.{n}", n, f"servo names: {', '.join(names)}")
            lim = cfg.servo(n).limits
            if not lim.min_rad <= q <= lim.max_rad:
                raise _fail(f"{key}.{n}", q, f"an angle within servos[{names.index(n)}].limits [{lim.min_rad}, {lim.max_rad}] rad")
    center, pose = cfg.control.action_center_rad or {}, cfg.reset.pose_rad or {}
    for n, (lo, hi) in (cfg.control.action_range_rad or {}).items():
        if n not in names:
            raise _fail(f"control.action_range_rad.{n}", n, f"servo names: {', '.join(names)}")
        lim = cfg.servo(n).limits
        c = center.get(n, min(max(pose.get(n, 0.0), lim.min_rad), lim.max_rad))
        if not (lim.min_rad <= lo <= c <= hi <= lim.max_rad):
            raise _fail(f"control.action_range_rad.{n}", [lo, hi],
                        f"[lo, hi] within servos[{names.index(n)}].limits [{lim.min_rad}, {lim.max_rad}] rad, "
                        f"around the angle action 0 commands ({c} rad)")


# Top-level sections: key -> (required, parser).
_SECTIONS: dict[str, tuple[bool, Callable[[Any, str], Any]]] = {
    "name": (True, lambda v, p: _str(v, p)),
    "model_xml": (False, lambda v, p: None if v is None else _str(v, p)),
    "bus": (True, _parse_bus),
    "servos": (True, _parse_servos),
    "camera": (False, _parse_camera),
    "sim": (False, _parse_sim),
    "control": (False, _parse_control),
    "safety": (False, _parse_safety),
    "reset": (False, _parse_reset),
    "tracker": (False, _parse_tracker),
}


def parse_config(data: Any, source: str | None = None) -> RobotConfig:
    """Validate an already-loaded YAML document (a mapping) into a RobotConfig."""
    m = _mapping(data, "<top level>")
    required = tuple(k for k, (req, _) in _SECTIONS.items() if req)
    optional = tuple(k for k, (req, _) in _SECTIONS.items() if not req)
    _check_keys(m, "", required, optional)
    parsed = {k: parser(m[k], k) for k, (_, parser) in _SECTIONS.items() if k in m}
    cfg = RobotConfig(
        name=parsed["name"],
        bus=parsed["bus"],
        servos=parsed["servos"],
        model_xml=parsed.get("model_xml"),
        source=source,
        camera=parsed.get("camera"),
        sim=parsed.get("sim"),
        control=parsed.get("control", ControlConfig()),
        safety=parsed.get("safety", SafetyConfig()),
        reset=parsed.get("reset", ResetConfig()),
        tracker=parsed.get("tracker"),
    )
    _check_joint_names(cfg)
    return cfg


def load_config(path: str | Path) -> RobotConfig:
    """Load and validate a hardware config YAML file; raises ConfigError (or FileNotFoundError)."""
    p = Path(path)
    text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return parse_config(data, source=str(p))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
