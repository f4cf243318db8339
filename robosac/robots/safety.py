"""The safety monitor every command passes before it reaches a servo.

Three pieces:

- `SafetyLimits`: the thresholds (per-joint position limits in rad, joint speed in rad/s, current
  warn/stop in A, temperature warn/stop in degC, optional roll/pitch tilt limit in rad), validated
  on construction; `SafetyLimits.from_config(robot_config)` takes the joint limits from the servo
  config and documented defaults for the rest.
- `SafetyMonitor(limits, dt_s)`: pure logic, no bus. `filter_command(q_goal, q_now)` rejects
  NaN/inf (`UnsafeCommandError`), clips to the joint limits and rate-limits to
  max speed x dt per step; `check_state(state, tilt)` applies warn/stop thresholds and latches a
  stop; `estop(reason)` and SIGINT/SIGTERM (`install_signal_handlers()`) latch an e-stop. While
  latched every command raises `SafetyStop` until `reset()`. `events` is a dict of counters for
  a Gymnasium `info`.
- `SafeBus(bus, monitor)`: `step(q_goal)` = read_state -> check_state -> filter_command ->
  write_goal_positions; on `SafetyStop` or any `BusError` it switches torque off and re-raises.

Event counters count *occurrences*: a warn condition that holds for 10 cycles counts 10; a clip
counts once per clipped joint per command.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = [
    "TEMPERATURE_WARN_C",
    "TEMPERATURE_STOP_C",
    "CURRENT_WARN_FRACTION",
    "CURRENT_STOP_FRACTION",
    "SafetyConfigError",
    "UnsafeCommandError",
    "SafetyStop",
    "SafetyEvent",
    "SafetyLimits",
    "SafetyMonitor",
    "SafeBus",
    "StepResult",
]

# X-series (XM430/XH430/XL430) servos shut themselves down (Hardware Error Status bit 2,
# "overheating") when Present Temperature exceeds Temperature Limit, factory value 80 degC. That
# shutdown latches until a reboot and drops the joint mid-motion, so the host must act first:
# - stop at 72 degC leaves 8 degC of headroom: the winding keeps heating for a few seconds after the
#   load is removed (the sensor sits on the driver board and lags the coil), and the 1 degC
#   sensor resolution plus +-3 degC sensor spread between units would eat a smaller margin;
# - warn at 65 degC gives a policy/operator time (typically tens of seconds under stall-level
#   load) to back off before the stop.
TEMPERATURE_WARN_C: float = 65.0
TEMPERATURE_STOP_C: float = 72.0
# Current thresholds as a fraction of the joint's configured current limit (limits.current_a), or of
# the model's maximum Current Limit when none is configured. Stop at the limit itself: in current-
# based position mode the servo saturates there, so reaching it means the joint is stalled or
# pushing against something; warn at 80 %.
CURRENT_WARN_FRACTION: float = 0.8
CURRENT_STOP_FRACTION: float = 1.0

_COUNTERS = (
    "commands",  # filter_command calls that returned a goal
    "nonfinite_commands",  # commands rejected for NaN/inf
    "refused_commands",  # commands refused while a stop was latched
    "joint_limit_clips",  # joints clipped to their position limits (per joint per command)
    "rate_limits",  # joints slowed to max speed x dt (per joint per command)
    "current_warn",
    "current_stop",
    "temperature_warn",
    "temperature_stop",
    "hardware_error_stop",  # a servo reported Hardware Error Status bits
    "hardware_error_recovered",  # the bus rebooted a servo for a hardware error during the read
    "tilt_stop",
    "tilt_invalid",  # tilt given but not finite (tracking lost): counted, not a stop
    "estops",  # e-stop requests (Python call or signal)
    "bus_faults",  # BusError seen by SafeBus
    "trips",  # transitions into the latched stop state
    "resets",
    "torque_offs",  # torque-off actions taken by SafeBus
)


class SafetyConfigError(ValueError):
    """Invalid safety limits; the message names the field (and joint), the value and what is allowed."""


class UnsafeCommandError(ValueError):
    """A command was rejected (NaN/inf); nothing was sent, the servos keep their last goal."""


class SafetyStop(RuntimeError):
    """A latched safety stop: stop-level condition or e-stop. Commands are refused until reset()."""

    def __init__(self, reason: str, events: Sequence["SafetyEvent"] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.events = list(events)


@dataclass(frozen=True)
class SafetyEvent:
    """One detected condition. level is "warn" or "stop"; value/limit in the kind's unit."""

    kind: str  # e.g. "temperature", "current", "hardware_error", "tilt", "joint_limit", "rate_limit"
    level: str
    joint: str | None
    value: float
    limit: float
    message: str


# ------------------------------------------------------------------------------------------------
# Limits


def _err(field_: str, value: Any, allowed: str) -> SafetyConfigError:
    return SafetyConfigError(f"SafetyLimits.{field_}: invalid value {value!r}; allowed: {allowed}")


def _vec(name: str, value: Any, n: int, names: Sequence[str], *, allow_nan: bool = False) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise _err(name, value, f"a sequence of {n} numbers (one per joint)")
    if len(value) != n:
        raise _err(name, value, f"a sequence of {n} numbers (one per joint: {', '.join(names)})")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise _err(f"{name}[{i}] ({names[i]})", v, "a number")
        f = float(v)
        if math.isinf(f) or (math.isnan(f) and not allow_nan):
            raise _err(f"{name}[{i}] ({names[i]})", v, "a finite number" + (" or NaN (no check)" if allow_nan else ""))
        out.append(f)
    return tuple(out)


def _scalar(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _err(name, value, f"a number in ({lo}, {hi}]")
    f = float(value)
    if not (lo < f <= hi):  # also rejects NaN
        raise _err(name, value, f"a number in ({lo}, {hi}]")
    return f


@dataclass(frozen=True)
class SafetyLimits:
    """Thresholds of the safety monitor; per-joint sequences are in config (bus) order.

    Units: min_rad/max_rad rad (joint frame), max_speed_rad_s rad/s, current_*_a A (compared with
    |current|; NaN = no current check, e.g. XL430 without a current sensor), temperature_*_c degC,
    tilt_limit_rad rad for |roll| and |pitch| (None = no tilt check)."""

    names: tuple[str, ...]
    min_rad: tuple[float, ...]
    max_rad: tuple[float, ...]
    max_speed_rad_s: tuple[float, ...]
    current_warn_a: tuple[float, ...]
    current_stop_a: tuple[float, ...]
    temperature_warn_c: float = TEMPERATURE_WARN_C
    temperature_stop_c: float = TEMPERATURE_STOP_C
    tilt_limit_rad: float | None = None
    stop_on_recovered_hardware_error: bool = False  # the bus rebooted a servo within its budget
    # A current stop needs |current| >= current_stop_a for this long (s, by state stamps): a
    # servo accelerating or pushing briefly draws stall-level current for tens of ms, which is
    # normal; a stall held for longer heats the motor. 0 = stop on the first reading.
    current_stop_s: float = 0.0

    def __post_init__(self) -> None:
        names = self.names
        if isinstance(names, str) or not hasattr(names, "__len__") or len(names) == 0:
            raise _err("names", names, "a non-empty sequence of joint names")
        if not all(isinstance(s, str) and s for s in names):
            raise _err("names", names, "non-empty strings")
        names = tuple(names)
        n = len(names)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        set_("names", names)
        set_("min_rad", _vec("min_rad", self.min_rad, n, names))
        set_("max_rad", _vec("max_rad", self.max_rad, n, names))
        for i in range(n):
            if not self.min_rad[i] < self.max_rad[i]:
                raise SafetyConfigError(
                    f"SafetyLimits.min_rad[{i}] ({names[i]}): {self.min_rad[i]} must be less than max_rad[{i}] ({self.max_rad[i]})"
                )
        set_("max_speed_rad_s", _vec("max_speed_rad_s", self.max_speed_rad_s, n, names))
        for i, v in enumerate(self.max_speed_rad_s):
            if not v > 0:
                raise _err(f"max_speed_rad_s[{i}] ({names[i]})", v, "a finite number > 0 (rad/s)")
        set_("current_warn_a", _vec("current_warn_a", self.current_warn_a, n, names, allow_nan=True))
        set_("current_stop_a", _vec("current_stop_a", self.current_stop_a, n, names, allow_nan=True))
        for i in range(n):
            w, s = self.current_warn_a[i], self.current_stop_a[i]
            if math.isnan(w) != math.isnan(s):
                raise _err(f"current_warn_a[{i}] ({names[i]})", w, "NaN together with current_stop_a (no current check) or both numbers")
            if not math.isnan(s):
                if not s > 0:
                    raise _err(f"current_stop_a[{i}] ({names[i]})", s, "a number > 0 (A)")
                if not 0 < w <= s:
                    raise _err(f"current_warn_a[{i}] ({names[i]})", w, f"a number in (0, current_stop_a[{i}] = {s}] (A)")
        # 100 degC is the top of the servo's own Temperature Limit range.
        set_("temperature_stop_c", _scalar("temperature_stop_c", self.temperature_stop_c, 0.0, 100.0))
        set_("temperature_warn_c", _scalar("temperature_warn_c", self.temperature_warn_c, 0.0, self.temperature_stop_c))
        if self.tilt_limit_rad is not None:
            set_("tilt_limit_rad", _scalar("tilt_limit_rad", self.tilt_limit_rad, 0.0, math.pi))
        cs = self.current_stop_s
        if isinstance(cs, bool) or not isinstance(cs, (int, float, np.integer, np.floating)) or not 0.0 <= float(cs) <= 60.0:
            raise _err("current_stop_s", cs, "a number in [0, 60] (s)")
        set_("current_stop_s", float(cs))
        if not isinstance(self.stop_on_recovered_hardware_error, bool):
            raise _err("stop_on_recovered_hardware_error", self.stop_on_recovered_hardware_error, "True or False")

    @property
    def n(self) -> int:
        return len(self.names)

    @classmethod
    def from_config(
        cls,
        robot_config: Any,
        *,
        max_speed_rad_s: float | Sequence[float] | None = None,
        current_warn_fraction: float | None = None,
        current_stop_fraction: float | None = None,
        temperature_warn_c: float | None = None,
        temperature_stop_c: float | None = None,
        tilt_limit_rad: float | None = None,
        stop_on_recovered_hardware_error: bool = False,
        current_stop_s: float | None = None,
    ) -> "SafetyLimits":
        """Limits from a `RobotConfig`: joint min/max and speed (servos[i].limits.max_velocity_rad_s)
        from the servo config; speed may be lowered (scalar or per joint, rad/s). Current thresholds
        are fractions of limits.current_a (or the model's maximum Current Limit when unset; none for
        models without current sensing). Every argument left None comes from the config's `safety:`
        section when it has one, else the module defaults (TEMPERATURE_WARN_C / _STOP_C,
        CURRENT_WARN_FRACTION / _STOP_FRACTION, no tilt check)."""
        sc = getattr(robot_config, "safety", None)
        if sc is not None:
            max_speed_rad_s = sc.max_speed_rad_s if max_speed_rad_s is None else max_speed_rad_s
            current_warn_fraction = sc.current_warn_fraction if current_warn_fraction is None else current_warn_fraction
            current_stop_fraction = sc.current_stop_fraction if current_stop_fraction is None else current_stop_fraction
            temperature_warn_c = sc.temperature_warn_c if temperature_warn_c is None else temperature_warn_c
            temperature_stop_c = sc.temperature_stop_c if temperature_stop_c is None else temperature_stop_c
            tilt_limit_rad = sc.tilt_limit_rad if tilt_limit_rad is None else tilt_limit_rad
            current_stop_s = sc.current_stop_s if current_stop_s is None else current_stop_s
        current_warn_fraction = CURRENT_WARN_FRACTION if current_warn_fraction is None else current_warn_fraction
        current_stop_fraction = CURRENT_STOP_FRACTION if current_stop_fraction is None else current_stop_fraction
        temperature_warn_c = TEMPERATURE_WARN_C if temperature_warn_c is None else temperature_warn_c
        temperature_stop_c = TEMPERATURE_STOP_C if temperature_stop_c is None else temperature_stop_c
        servos = tuple(robot_config.servos)
        if not servos:
            raise _err("names", (), "a config with at least one servo")
        frac_w = _scalar("current_warn_fraction", current_warn_fraction, 0.0, 10.0)
        frac_s = _scalar("current_stop_fraction", current_stop_fraction, 0.0, 10.0)
        if frac_w > frac_s:
            raise _err("current_warn_fraction", current_warn_fraction, f"a number <= current_stop_fraction ({frac_s})")
        if max_speed_rad_s is None:
            speed: Any = [s.limits.max_velocity_rad_s for s in servos]
        elif isinstance(max_speed_rad_s, (int, float, np.integer, np.floating)) and not isinstance(max_speed_rad_s, bool):
            # A global cap lowers fast joints; it never raises a servo's own limit.
            speed = [min(float(max_speed_rad_s), s.limits.max_velocity_rad_s) for s in servos]
        else:
            speed = max_speed_rad_s
        warn, stop = [], []
        for s in servos:
            info = s.model_info
            if not info.has_current:
                warn.append(math.nan)
                stop.append(math.nan)
                continue
            base = s.limits.current_a if s.limits.current_a is not None else info.current_limit_max * info.current_unit_a
            warn.append(frac_w * base)
            stop.append(frac_s * base)
        return cls(
            names=tuple(s.name for s in servos),
            min_rad=tuple(s.limits.min_rad for s in servos),
            max_rad=tuple(s.limits.max_rad for s in servos),
            max_speed_rad_s=speed,
            current_warn_a=tuple(warn),
            current_stop_a=tuple(stop),
            temperature_warn_c=temperature_warn_c,
            temperature_stop_c=temperature_stop_c,
            tilt_limit_rad=tilt_limit_rad,
            stop_on_recovered_hardware_error=stop_on_recovered_hardware_error,
            current_stop_s=0.0 if current_stop_s is None else current_stop_s,
        )


# ------------------------------------------------------------------------------------------------
# Monitor


def _describe_hw(bits: int) -> str:
    try:
        from robosac.hal.control_table import describe_hw_error

        return ", ".join(describe_hw_error(bits))
    except Exception:  # noqa: BLE001 - only for the message
        return f"0x{bits:02x}"


class SafetyMonitor:
    """Pure safety logic between a policy and the servos (see the module docstring).

    dt_s: the control period in s; a joint's goal moves at most max_speed_rad_s * dt_s per
    filter_command call, relative to the last goal this monitor returned."""

    def __init__(self, limits: SafetyLimits, dt_s: float) -> None:
        if not isinstance(limits, SafetyLimits):
            raise SafetyConfigError(f"SafetyMonitor.limits: expected SafetyLimits, got {type(limits).__name__}")
        if isinstance(dt_s, bool) or not isinstance(dt_s, (int, float, np.integer, np.floating)) or not (0 < float(dt_s) <= 10.0):
            raise SafetyConfigError(f"SafetyMonitor.dt_s: invalid value {dt_s!r}; allowed: a number in (0, 10] (s)")
        self.limits = limits
        self.dt_s = float(dt_s)
        self._qmin = np.asarray(limits.min_rad, dtype=float)
        self._qmax = np.asarray(limits.max_rad, dtype=float)
        self._step = np.asarray(limits.max_speed_rad_s, dtype=float) * self.dt_s
        self._iw = np.asarray(limits.current_warn_a, dtype=float)
        self._is = np.asarray(limits.current_stop_a, dtype=float)
        self._counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._last_goal: np.ndarray | None = None
        self._over_since = np.full(limits.n, np.nan)  # stamp (s) since which |current| >= stop, per joint
        self._checks = 0
        self.tripped = False
        self.reason: str | None = None
        self.stop_events: list[SafetyEvent] = []
        self._prev_handlers: dict[int, Any] | None = None
        self._signals_seen: set[int] = set()  # signals received since the last reset

    # -- state ---------------------------------------------------------------------------------

    @property
    def events(self) -> dict[str, int]:
        """Counters of every event since creation (a fresh dict of ints; stable keys for `info`)."""
        return dict(self._counts)

    def info(self) -> dict[str, Any]:
        """`events` plus the latch: {"tripped": bool, "reason": str|None, **events}."""
        return {"tripped": self.tripped, "reason": self.reason, **self._counts}

    @property
    def last_goal(self) -> np.ndarray | None:
        """The last goal returned by filter_command (rad), None after reset()."""
        return None if self._last_goal is None else self._last_goal.copy()

    def count(self, key: str, k: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + k

    def _trip(self, reason: str, events: Sequence[SafetyEvent] = ()) -> None:
        # Signal-handler safe: no locks, no I/O. The first reason is kept (it is the cause).
        if not self.tripped:
            self.reason = reason
            self.stop_events = list(events)
            self._counts["trips"] += 1
            self.tripped = True

    def estop(self, reason: str = "e-stop") -> None:
        """Latch an e-stop (callable from any thread or a signal handler); commands are refused until reset()."""
        self._counts["estops"] += 1
        self._trip(f"e-stop: {reason}")

    def trip(self, reason: str) -> None:
        """Latch a stop for an outside reason (e.g. a bus fault)."""
        self._trip(reason)

    def reset(self) -> None:
        """Clear the latch and the rate limiter's reference (the next command starts from q_now)."""
        self.tripped = False
        self.reason = None
        self.stop_events = []
        self._last_goal = None
        self._over_since[:] = np.nan
        self._signals_seen = set()
        self._counts["resets"] += 1

    def raise_if_tripped(self) -> None:
        if self.tripped:
            raise SafetyStop(self.reason or "safety stop", self.stop_events)

    # -- commands ------------------------------------------------------------------------------

    def filter_command(
        self,
        q_goal: Sequence[float] | np.ndarray,
        q_now: Sequence[float] | np.ndarray | None = None,
        limp: np.ndarray | None = None,
    ) -> np.ndarray:
        """The goal (N,) rad that is safe to send now, or an exception; nothing else reaches a servo.

        - latched stop: SafetyStop (counted refused_commands);
        - NaN/inf anywhere in q_goal: UnsafeCommandError (counted nonfinite_commands), no state change,
          so the servos keep holding their last goal;
        - clip to [min_rad, max_rad] (joint_limit_clips);
        - rate limit: at most max_speed_rad_s * dt_s away from the last returned goal, or from q_now
          (the measured position, rad) on the first call after creation/reset (rate_limits);
        - limp: (N,) bool mask of joints whose torque is off: their goal is q_now (it moves nothing,
          and the rate limiter restarts from where the joint is when its torque comes back)."""
        if self.tripped:
            self._counts["refused_commands"] += 1
            raise SafetyStop(self.reason or "safety stop", self.stop_events)
        n = self.limits.n
        q = np.asarray(q_goal, dtype=float).reshape(-1)
        if q.shape[0] != n:
            raise ValueError(f"q_goal: expected {n} joint goals (rad), got shape {np.shape(q_goal)}")
        if not np.all(np.isfinite(q)):
            self._counts["nonfinite_commands"] += 1
            bad = [self.limits.names[i] for i in np.flatnonzero(~np.isfinite(q))]
            raise UnsafeCommandError(f"non-finite goal for joint(s) {bad}: {q.tolist()}; command not sent")
        if limp is not None and np.any(limp):
            if q_now is None:
                raise ValueError("q_now (measured joint positions, rad) is required with limp joints")
            limp = np.asarray(limp, dtype=bool).reshape(-1)
            q = np.where(limp, np.asarray(q_now, dtype=float).reshape(-1), q)
            if self._last_goal is not None:
                self._last_goal = np.where(limp, q, self._last_goal)
        if self._last_goal is not None:
            ref = self._last_goal
        else:
            if q_now is None:
                raise ValueError("q_now (measured joint positions, rad) is required for the first command after creation/reset")
            ref = np.asarray(q_now, dtype=float).reshape(-1)
            if ref.shape[0] != n:
                raise ValueError(f"q_now: expected {n} joint positions (rad), got shape {np.shape(q_now)}")
            if not np.all(np.isfinite(ref)):
                self._counts["nonfinite_commands"] += 1
                raise UnsafeCommandError(f"non-finite measured position q_now {ref.tolist()}; command not sent")
        qc = np.clip(q, self._qmin, self._qmax)
        clipped = int(np.count_nonzero(qc != q))
        delta = qc - ref
        lim = np.clip(delta, -self._step, self._step)
        limited = int(np.count_nonzero(lim != delta))
        # Clip again: only matters when ref itself lies outside the limits (a joint measured out of range).
        out = np.clip(ref + lim, self._qmin, self._qmax)
        self._counts["joint_limit_clips"] += clipped
        self._counts["rate_limits"] += limited
        self._counts["commands"] += 1
        self._last_goal = out
        return out.copy()

    # -- state checks --------------------------------------------------------------------------

    def check_state(self, state: Any, tilt: Sequence[float] | None = None) -> list[SafetyEvent]:
        """Check a BusState (or anything with current [A], temperature [degC], hardware_error
        (N,) arrays and optionally errors_seen {id: bits}) and an optional (roll, pitch) tilt in rad.

        Returns the events found (warn and stop). Any stop-level event latches the monitor
        (`tripped`, `reason`); the next filter_command raises SafetyStop."""
        L = self.limits
        ev: list[SafetyEvent] = []
        cur = np.abs(np.asarray(state.current, dtype=float).reshape(-1))
        temp = np.asarray(state.temperature, dtype=float).reshape(-1)
        hw = np.asarray(state.hardware_error).reshape(-1).astype(int)
        for arr, what in ((cur, "current"), (temp, "temperature"), (hw, "hardware_error")):
            if arr.shape[0] != L.n:
                raise ValueError(f"state.{what}: expected {L.n} values, got {arr.shape[0]}")
        with np.errstate(invalid="ignore"):
            i_over = cur >= self._is  # NaN (no sensor / no check) compares False
            stamp = getattr(state, "stamp", None)
            self._checks += 1
            now = float(stamp) if stamp is not None else self._checks * self.dt_s
            self._over_since = np.where(i_over, np.where(np.isnan(self._over_since), now, self._over_since), np.nan)
            i_stop = i_over & (now - self._over_since >= L.current_stop_s - 1e-9)
            i_warn = (cur >= self._iw) & ~i_stop
            t_stop = temp >= L.temperature_stop_c
            t_warn = (temp >= L.temperature_warn_c) & ~t_stop
        for i in np.flatnonzero(i_stop):
            ev.append(SafetyEvent("current", "stop", L.names[i], float(cur[i]), float(self._is[i]),
                                  f"{L.names[i]}: |current| {cur[i]:.3f} A >= stop {self._is[i]:.3f} A"))
        for i in np.flatnonzero(i_warn):
            ev.append(SafetyEvent("current", "warn", L.names[i], float(cur[i]), float(self._iw[i]),
                                  f"{L.names[i]}: |current| {cur[i]:.3f} A >= warn {self._iw[i]:.3f} A"))
        for i in np.flatnonzero(t_stop):
            ev.append(SafetyEvent("temperature", "stop", L.names[i], float(temp[i]), L.temperature_stop_c,
                                  f"{L.names[i]}: temperature {temp[i]:.0f} degC >= stop {L.temperature_stop_c:.0f} degC"))
        for i in np.flatnonzero(t_warn):
            ev.append(SafetyEvent("temperature", "warn", L.names[i], float(temp[i]), L.temperature_warn_c,
                                  f"{L.names[i]}: temperature {temp[i]:.0f} degC >= warn {L.temperature_warn_c:.0f} degC"))
        for i in np.flatnonzero(hw):
            ev.append(SafetyEvent("hardware_error", "stop", L.names[i], float(hw[i]), 0.0,
                                  f"{L.names[i]}: hardware error 0x{hw[i]:02x} ({_describe_hw(int(hw[i]))})"))
        seen = getattr(state, "errors_seen", None) or {}
        for sid, bits in seen.items():
            lvl = "stop" if L.stop_on_recovered_hardware_error else "warn"
            ev.append(SafetyEvent("hardware_error_recovered", lvl, f"id {sid}", float(bits), 0.0,
                                  f"servo id {sid}: hardware error 0x{bits:02x} ({_describe_hw(int(bits))}) rebooted and restored by the bus"))
        if tilt is not None and L.tilt_limit_rad is not None:
            t = np.asarray(tilt, dtype=float).reshape(-1)
            if t.shape[0] != 2:
                raise ValueError(f"tilt: expected (roll, pitch) in rad, got {tilt!r}")
            if not np.all(np.isfinite(t)):
                ev.append(SafetyEvent("tilt_invalid", "warn", None, math.nan, L.tilt_limit_rad,
                                      f"tilt {t.tolist()} not finite (tracking lost?); not checked"))
            else:
                for k, axis in enumerate(("roll", "pitch")):
                    if abs(t[k]) >= L.tilt_limit_rad:
                        ev.append(SafetyEvent("tilt", "stop", axis, float(t[k]), L.tilt_limit_rad,
                                              f"{axis} {t[k]:.3f} rad beyond limit {L.tilt_limit_rad:.3f} rad"))
        for e in ev:
            key = {"hardware_error": "hardware_error_stop", "tilt": "tilt_stop",
                   "hardware_error_recovered": "hardware_error_recovered", "tilt_invalid": "tilt_invalid"}.get(e.kind)
            self._counts[key or f"{e.kind}_{e.level}"] += 1
        stops = [e for e in ev if e.level == "stop"]
        if stops:
            self._trip("safety stop: " + "; ".join(e.message for e in stops), stops)
        return ev

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.tripped and signum in self._signals_seen:
            # Second Ctrl-C / SIGTERM while latched: the e-stop is set already; let the program end.
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self._signals_seen.add(signum)
        self.estop(f"{name} received")

    def install_signal_handlers(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Map SIGINT/SIGTERM to estop() (main thread only). The first signal latches the e-stop
        (the next SafeBus.step switches torque off); a second one of the same kind raises
        KeyboardInterrupt (SIGINT) or SystemExit(128+signum) so the program can still be ended."""
        if self._prev_handlers is not None:
            return
        prev: dict[int, Any] = {}
        try:
            for s in signals:
                prev[s] = signal.signal(s, self._on_signal)
        except BaseException:
            for s, h in prev.items():
                signal.signal(s, h)
            raise
        self._prev_handlers = prev

    def uninstall_signal_handlers(self) -> None:
        """Restore the handlers that were in place before install_signal_handlers()."""
        if self._prev_handlers is None:
            return
        for s, h in self._prev_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._prev_handlers = None

    @property
    def signal_handlers_installed(self) -> bool:
        return self._prev_handlers is not None


# ------------------------------------------------------------------------------------------------
# The bus wrapper


class StepResult(NamedTuple):
    state: Any  # the BusState read this cycle (before the goal was written)
    q_sent: np.ndarray  # the goal actually written (rad), after the monitor and the bus's tick rounding
    events: list[SafetyEvent]  # what check_state found this cycle (warn-level only, or it would have raised)


_BROADCAST_ID = 254
_TORQUE_ENABLE_ADDR = 64


class SafeBus:
    """A ServoBus behind a SafetyMonitor: the only way this wrapper writes goals is step().

    step(q_goal, tilt=None): read_state -> check_state -> filter_command -> write_goal_positions.
    - UnsafeCommandError (NaN/inf): re-raised, nothing written; servos hold their last goal.
    - SafetyStop (latched stop, e-stop) or any BusError: torque off on every servo (checked
      per servo, falling back to a broadcast), the monitor is latched, the error re-raised.
    reset() clears the latch and (by default) re-enables torque with goal = present position."""

    def __init__(self, bus: Any, monitor: SafetyMonitor) -> None:
        if len(bus.joints) != monitor.limits.n:
            raise SafetyConfigError(f"SafeBus: bus has {len(bus.joints)} joints, limits have {monitor.limits.n}")
        self.bus = bus
        self.monitor = monitor
        self.last_events: list[SafetyEvent] = []

    def torque_off(self) -> None:
        """Best effort: per-servo checked writes, else one broadcast packet (the servos' bus
        watchdog is the backstop if even that cannot be sent)."""
        self.monitor.count("torque_offs")
        try:
            self.bus.disable_torque()
            return
        except Exception:  # noqa: BLE001 - fall back to the broadcast
            pass
        try:
            self.bus.packet_handler.write1ByteTxOnly(self.bus.port_handler, _BROADCAST_ID, _TORQUE_ENABLE_ADDR, 0)
        except Exception:  # noqa: BLE001 - nothing more we can do from the host
            pass

    def step(self, q_goal: Sequence[float] | np.ndarray, tilt: Sequence[float] | None = None) -> StepResult:
        from robosac.hal.faults import BusError

        try:
            if self.monitor.tripped:
                # Refuse before touching the bus (a tripped monitor may be a dead bus).
                self.monitor.filter_command(q_goal)
            state = self.bus.read_state()
            events = self.monitor.check_state(state, tilt)
            self.last_events = events
            q_safe = self.monitor.filter_command(q_goal, state.position)
            q_sent = self.bus.write_goal_positions(q_safe)
            return StepResult(state, np.asarray(q_sent, dtype=float), events)
        except SafetyStop:
            self.torque_off()
            raise
        except BusError as e:
            self.monitor.count("bus_faults")
            self.monitor.trip(f"bus fault: {type(e).__name__}: {e}")
            self.torque_off()
            raise

    def reset(self, enable_torque: bool = True) -> None:
        """Clear the monitor's latch; enable torque (goal = present, so nothing jumps)."""
        self.monitor.reset()
        if enable_torque:
            self.bus.enable_torque()

    def info(self) -> dict[str, Any]:
        """Monitor counters and latch plus the bus counters (prefixed bus/)."""
        out = self.monitor.info()
        out.update({f"bus/{k}": v for k, v in self.bus.counters.as_dict().items()})
        return out
