"""ServoBus: every servo of a robot on one Protocol 2.0 serial bus, through the official dynamixel_sdk.

Per control cycle the bus does exactly two transactions:
  1. one group read (Fast Sync Read 0x8A when every servo's firmware supports it, else Sync Read
     0x82) of a 14-byte block that indirect addressing assembles on each servo:
     present current/load, velocity, position, Hardware Error Status, input voltage, temperature.
     So hardware errors are seen every cycle, although the SDK's group reads drop the status
     packet's ERR byte (and with it the Alert bit).
  2. one Sync Write (0x83) of the goal positions.

Units at the boundary are SI and in the joint frame (see robosac.hal.units for the calibration
convention): rad, rad/s, A, V, degC. XL430-W250 has no current sensor: its `current` entries are
NaN and `load` carries Present Load as a fraction of maximum torque (-1..1); for the other models
`load` is NaN.

Faults (robosac.hal.faults; every event is counted in `bus.counters`):
  * a timed-out or corrupt group read is retried up to `read_retries` times (after a short drain so
    a late reply is not taken for the retry's); if it still fails every servo is pinged and
    ServoSilentError names the silent ones. Single-servo reads/writes get the same budget.
  * a nonzero Hardware Error Status triggers reboot + restore of every RAM setting (indirect map,
    gains, profile, Goal Current in mode 5, watchdog, goal = present) + torque on where the host
    had it on, at most `max_reboots` per servo per `reboot_window_s`, else HardwareFault. Joints in
    modes 4/5 get their lost turn count back host-side (whole turns, from the last good reading).
  * input voltage reading 0 means the servo lost its RAM (a supply dip reset it, no error bit):
    restored the same way, without the reboot.
  * a host stall longer than the Bus Watchdog leaves goals read-only on the servos; the next goal
    write clears and re-arms the watchdog first.
  * a vanished port is reopened with exponential backoff (a fresh PortHandler, since the SDK's
    `is_using` flag sticks after a pyserial exception), else PortLostError.

Fail-safe choice: on every unrecoverable fault the bus broadcasts Torque Enable = 0 (one packet,
no reply needed, reaches every servo that still listens) before raising. The robots here (a claw,
a small quadruped) are safe limp, while holding position with a bus in an unknown state is not;
if even the broadcast cannot be sent (port gone) the servos' Bus Watchdog stops them.

A failed read never returns stale data: read_state either returns a fresh BusState (with its
monotonic `stamp`) or raises. All transactions hold one re-entrant lock.
"""

from __future__ import annotations

import collections
import termios
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import serial
from dynamixel_sdk import (
    BROADCAST_ID,
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
)

from robosac.hal.control_table import (
    CENTER_TICK,
    INDIRECT_ADDRESS_1,
    INDIRECT_DATA_1,
    INDIRECT_MAP,
    LOAD_FRACTION_PER_UNIT,
    RAD_PER_TICK,
    RAD_S_PER_VEL_UNIT,
    STATE_BLOCK_SIZE,
    STATE_OFFSETS,
    WATCHDOG_MS_PER_UNIT,
    Item,
    ModelSpec,
    model_by_name,
    model_name,
)
from robosac.hal.faults import (
    BusCounters,
    CommError,
    ConfigMismatchError,
    HardwareFault,
    PortError,
    PortLostError,
    ServoCommandError,
    ServoSilentError,
)
from robosac.hal.port import LowLatencyPortHandler, close_quietly, open_port, read_latency_timer
from robosac.hal.units import (
    Calibration,
    amps_to_current_units,
    le_bytes,
    rad_s2_to_acc_units,
    rad_s_to_vel_units,
    to_signed,
)

T = TypeVar("T")

_GOAL_POSITION = 116  # Goal Position(116), 4 bytes, every X430
_PRESENT_POSITION = 132
_BUS_WATCHDOG = 98
_TORQUE_ENABLE = 64
# What a vanished device raises from inside the SDK (termios.error is not an OSError).
_PORT_ERRORS = (serial.SerialException, OSError, termios.error)
_MODE3_TICKS = (0, 4095)
_MULTI_TURN_TICKS = (-1_048_575, 1_048_575)


# ------------------------------------------------------------------------------------------------
# Specs and results


@dataclass(frozen=True)
class JointSpec:
    """One servo as the bus sees it (built from robosac.config.ServoConfig by `from_config`).

    Angles in the joint frame [rad], velocities [rad/s], current [A]."""

    name: str
    id: int
    model: ModelSpec
    operating_mode: int = 3
    calibration: Calibration = Calibration()
    min_rad: float = -np.pi
    max_rad: float = np.pi
    max_velocity_rad_s: float | None = None
    current_a: float | None = None
    pid: tuple[int, int, int] | None = None  # raw position (P, I, D)
    profile_velocity_rad_s: float | None = None
    profile_acceleration_rad_s2: float | None = None

    @classmethod
    def from_servo_config(cls, sc: Any) -> "JointSpec":
        pid = (sc.pid.p, sc.pid.i, sc.pid.d) if getattr(sc, "pid", None) is not None else None
        prof = getattr(sc, "profile", None)
        return cls(
            name=sc.name,
            id=sc.id,
            model=model_by_name(sc.model),
            operating_mode=sc.operating_mode,
            calibration=Calibration(sign=sc.calibration.sign, offset_rad=sc.calibration.offset_rad),
            min_rad=sc.limits.min_rad,
            max_rad=sc.limits.max_rad,
            max_velocity_rad_s=sc.limits.max_velocity_rad_s,
            current_a=sc.limits.current_a,
            pid=pid,
            profile_velocity_rad_s=prof.velocity_rad_s if prof is not None else None,
            profile_acceleration_rad_s2=prof.acceleration_rad_s2 if prof is not None else None,
        )

    def tick_range(self) -> tuple[int, int]:
        """Allowed goal range in servo ticks: the joint limits mapped through the calibration."""
        a, b = self.calibration.rad_to_ticks(self.min_rad), self.calibration.rad_to_ticks(self.max_rad)
        lo, hi = min(a, b), max(a, b)
        hw = _MODE3_TICKS if self.operating_mode == 3 else _MULTI_TURN_TICKS
        return max(lo, hw[0]), min(hi, hw[1])


@dataclass(frozen=True)
class BusSettings:
    """Bus-wide behaviour. Times in seconds unless the name says otherwise."""

    return_delay_us: int = 0  # Return Delay Time; 0 saves 500 us per servo per read vs the default
    watchdog_ms: int = 0  # Bus Watchdog, 0 = off (multiple of 20 ms)
    shutdown: int = 0x34  # Shutdown bit mask
    read_retries: int = 2  # extra group-read attempts before looking for a silent servo
    latency_ms: float = 1.0  # adapter latency timer assumed by the reply timeout (see port.py)
    margin_ms: float = 2.0  # extra reply-timeout margin
    fast_sync_read: bool | None = None  # None: use it when every servo's firmware supports it
    max_reboots: int = 3  # per servo within reboot_window_s, before HardwareFault
    reboot_window_s: float = 60.0
    reboot_timeout_s: float = 1.0  # how long a rebooting servo may take to answer a ping again
    reopen_attempts: int = 5  # port reopen attempts (backoff doubles from reopen_backoff_s)
    reopen_backoff_s: float = 0.05
    # After a failed read: wait this long, then flush, before retrying, so a late reply is not
    # taken for the retry's answer (Protocol 2.0 has no sequence numbers). A reply later than
    # timeout + drain_s could still be; real servos answer within the return delay.
    drain_s: float = 0.010

    @classmethod
    def from_bus_config(cls, bc: Any, **overrides: Any) -> "BusSettings":
        base = dict(return_delay_us=bc.return_delay_us, watchdog_ms=bc.watchdog_ms, shutdown=bc.shutdown)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class ServoInfo:
    id: int
    model_number: int
    firmware: int | None

    @property
    def model(self) -> str:
        return model_name(self.model_number)


# How far past a position limit a joint may be measured and still be held (at the limit) when torque
# comes on. A limp robot resting its weight on a joint presses it against the end stop: the twin's
# collapsed quadruped puts a foot 0.06 rad past its software limit. Further out than this, enabling
# torque is refused (a calibration error or a joint bent far out; it must be moved by hand).
_HOLD_MARGIN_RAD = 0.15


@dataclass
class BusState:
    """One fresh read of every configured servo; arrays have shape (N,) in config order."""

    position: np.ndarray  # rad, joint frame
    velocity: np.ndarray  # rad/s, joint frame
    current: np.ndarray  # A, joint frame sign; NaN where the model has no current sensor (XL430)
    load: np.ndarray  # fraction of max torque (-1..1) for XL430, NaN for current-sensing models
    voltage: np.ndarray  # V
    temperature: np.ndarray  # degC
    hardware_error: np.ndarray  # uint8 Hardware Error Status (0 after a successful recovery)
    stamp: float  # time.monotonic() when the reply was complete
    read_time_s: float  # duration of the group read transaction(s)
    recovered: tuple[int, ...] = ()  # servo ids rebooted/restored during this read
    errors_seen: dict[int, int] = field(default_factory=dict)  # id -> Hardware Error Status bits seen

    def age(self, now: float | None = None) -> float:
        """Seconds since this state was read."""
        return (time.monotonic() if now is None else now) - self.stamp


# ------------------------------------------------------------------------------------------------


class ServoBus:
    """A chain of X430 servos on one port. Thread-safe (one lock per transaction).

    Typical use::

        bus = ServoBus.from_config(load_config("hardware_configs/claw.yaml"))
        bus.open(); bus.configure(); bus.enable_torque()
        state = bus.cycle(goal_rad)      # one read + one write
        bus.close(torque_off=True)
    """

    def __init__(self, port: str, baud: int, joints: Sequence[JointSpec] = (), settings: BusSettings | None = None):
        ids = [j.id for j in joints]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate servo ids in {ids}")
        self.port_path = port
        self.baud = int(baud)
        self.joints: tuple[JointSpec, ...] = tuple(joints)
        self.settings = settings or BusSettings()
        self._counters = BusCounters()
        self.firmware: dict[int, int] = {}
        self.fast_read: bool = False
        self.latency_ms: float = self.settings.latency_ms  # latency assumed by reply timeouts (see open)
        # The last fresh state read_state returned (None before the first); check .age() before use.
        self.last_state: BusState | None = None
        self._lock = threading.RLock()
        self._port: LowLatencyPortHandler | None = None
        self._ph = PacketHandler(2.0)
        self._reader: GroupSyncRead | None = None
        self._writer: GroupSyncWrite | None = None
        self._torque_ids: set[int] = set()  # servos the host switched torque on (restored after reboot)
        # Monotonic time of the last transaction every servo heard (None: never), and whether a gap
        # longer than the Bus Watchdog period was seen since the watchdog was last (re-)armed.
        self._last_group_tx: float | None = None
        self._watchdog_suspect = False
        # configure() found servos with torque on and a tripped bus watchdog that this session
        # never enabled: a host that died left them holding.
        self._inherited_torque = False
        self._reboots: dict[int, collections.deque] = {j.id: collections.deque() for j in joints}
        self._byid = {j.id: j for j in joints}
        self._index = {j.id: i for i, j in enumerate(joints)}
        # Multi-turn bookkeeping (modes 4/5): a reboot puts Present Position back within one turn,
        # so the bus adds whole turns host-side to keep the joint angle continuous:
        # continuous ticks = raw ticks + _turn. _last_raw is the last good raw position read.
        self._turn = np.zeros(len(joints), dtype=np.int64)
        self._last_raw: dict[int, int] = {}
        self._vectors()

    @classmethod
    def from_config(cls, cfg: Any, port: str | None = None, **settings: Any) -> "ServoBus":
        """Build from a robosac.config.RobotConfig; `port` overrides cfg.bus.port (e.g. the twin's pty)."""
        joints = [JointSpec.from_servo_config(s) for s in cfg.servos]
        return cls(port or cfg.bus.port, cfg.bus.baud, joints, BusSettings.from_bus_config(cfg.bus, **settings))

    # -- properties --------------------------------------------------------------------------

    @property
    def counters(self) -> BusCounters:
        """Counted events (live object; tx/rx byte counts folded in on access)."""
        self._count_bytes()
        return self._counters

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(j.id for j in self.joints)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    @property
    def port_handler(self) -> LowLatencyPortHandler:
        if self._port is None:
            raise PortError("bus is not open (call open() first)")
        return self._port

    @property
    def packet_handler(self):
        return self._ph

    def _vectors(self) -> None:
        js = self.joints
        self._sign = np.array([j.calibration.sign for j in js], dtype=float)
        self._offset = np.array([j.calibration.offset_rad for j in js], dtype=float)
        self._amps = np.array([j.model.amps_per_current_unit or np.nan for j in js], dtype=float)
        self._has_current = np.array([j.model.has_current for j in js], dtype=bool)
        self._qmin = np.array([j.min_rad for j in js], dtype=float)
        self._qmax = np.array([j.max_rad for j in js], dtype=float)
        rng = [j.tick_range() for j in js]
        self._tmin = np.array([r[0] for r in rng], dtype=np.int64)
        self._tmax = np.array([r[1] for r in rng], dtype=np.int64)

    # -- open / close ------------------------------------------------------------------------

    def open(self) -> "ServoBus":
        """Open the port (PortNotFoundError / PortPermissionError / PortError on failure)."""
        with self._lock:
            if self.is_open:
                return self
            latency = self.settings.latency_ms
            timer = read_latency_timer(self.port_path)
            if timer is not None and timer > latency:
                # Replies sit in the FTDI chip up to `timer` ms: a shorter reply timeout would
                # turn every read into a timeout. Use it, and say how to fix the adapter.
                warnings.warn(
                    f"{self.port_path}: FTDI latency timer is {timer} ms (reply timeouts sized for it); "
                    f"set it to 1 ms with `robosac ftdi-latency --port {self.port_path}` for ~{timer} ms faster reads",
                    stacklevel=2,
                )
                latency = float(timer)
            self.latency_ms = latency
            self._port = open_port(self.port_path, self.baud, latency, self.settings.margin_ms)
            self._make_groups()
            return self

    def close(self, torque_off: bool = False) -> None:
        """Close the port; with torque_off, first broadcast Torque Enable = 0 (best effort)."""
        with self._lock:
            if self._port is None:
                return
            if torque_off and self._port.is_open:
                try:
                    self._broadcast_torque_off()
                except Exception:  # noqa: BLE001 - closing must not raise
                    pass
            self._count_bytes()
            close_quietly(self._port)
            self._port = None

    def __enter__(self) -> "ServoBus":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close(torque_off=True)

    def _make_groups(self) -> None:
        port = self.port_handler
        self._reader = GroupSyncRead(port, self._ph, INDIRECT_DATA_1, STATE_BLOCK_SIZE)
        self._writer = GroupSyncWrite(port, self._ph, _GOAL_POSITION, 4)
        for j in self.joints:
            self._reader.addParam(j.id)
            self._writer.addParam(j.id, [0, 0, 0, 0])

    def _count_bytes(self) -> None:
        # The port handler counts; fold its counts into the bus counters (it is replaced on reopen).
        p = self._port
        if p is not None:
            self._counters.tx_bytes += p.tx_bytes
            self._counters.rx_bytes += p.rx_bytes
            p.tx_bytes = p.rx_bytes = 0

    def wire_bytes(self) -> tuple[int, int]:
        """(tx, rx) bytes since the bus was created."""
        with self._lock:
            self._count_bytes()
            return self._counters.tx_bytes, self._counters.rx_bytes

    # -- the port-lost guard -----------------------------------------------------------------

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run one transaction; on a pyserial/OS error reopen the port (with backoff) and rerun once."""
        with self._lock:
            try:
                return fn()
            except _PORT_ERRORS as exc:
                self._reopen(exc)
            try:
                return fn()
            except _PORT_ERRORS as exc:
                close_quietly(self._port)
                raise PortLostError(self.port_path, self.settings.reopen_attempts, str(exc)) from exc

    def _reopen(self, exc: BaseException) -> None:
        self._counters.port_lost += 1
        self._count_bytes()
        close_quietly(self._port)  # also clears the SDK's stuck is_using flag
        self._port = None
        delay = self.settings.reopen_backoff_s
        last: BaseException = exc
        for _ in range(self.settings.reopen_attempts):
            time.sleep(delay)
            delay *= 2.0
            try:
                self._port = open_port(self.port_path, self.baud, self.latency_ms, self.settings.margin_ms)
            except PortError as e:
                last = e
                continue
            self._make_groups()
            self._counters.port_reopens += 1
            # The servos kept power but heard nothing: an armed Bus Watchdog has tripped by now.
            self._watchdog_suspect = True
            return
        raise PortLostError(self.port_path, self.settings.reopen_attempts, str(last)) from exc

    # -- low-level single-servo access (tools, configure, recovery) --------------------------

    def _model_of(self, sid: int) -> ModelSpec:
        j = self._byid.get(sid)
        if j is not None:
            return j.model
        info = self.ping(sid)
        if info is None:
            raise ServoSilentError([sid], "no reply to ping")
        try:
            return model_by_name(info.model)
        except KeyError as e:
            raise ConfigMismatchError(str(e)) from None

    def ping(self, sid: int, tries: int | None = None) -> ServoInfo | None:
        """Ping one servo: its model number and firmware version, or None if it does not answer
        after `tries` attempts (default 1 + read_retries)."""
        n = 1 + self.settings.read_retries if tries is None else max(1, tries)

        def go() -> ServoInfo | None:
            for _ in range(n):
                model, rc, _err = self._ph.ping(self.port_handler, sid)
                if rc == COMM_SUCCESS:
                    # The SDK's ping drops the firmware byte of the reply: read it (item 6).
                    for _ in range(1 + self.settings.read_retries):
                        fw, rc2, _ = self._ph.read1ByteTxRx(self.port_handler, sid, 6)
                        if rc2 == COMM_SUCCESS:
                            return ServoInfo(sid, model, fw)
                    return ServoInfo(sid, model, None)
            return None

        return self._guard(go)

    def scan(self, ids: Iterable[int] | None = None) -> dict[int, ServoInfo]:
        """Ping each id (default: the configured ids); {id: ServoInfo} of those that answered."""
        out = {}
        for sid in self.ids if ids is None else ids:
            info = self.ping(sid)
            if info is not None:
                out[sid] = info
        return out

    def broadcast_scan(self) -> tuple[dict[int, ServoInfo], int]:
        """Broadcast ping (the SDK waits ~0.8 s at 1M): ({id: ServoInfo}, SDK result code).

        A result of COMM_RX_CORRUPT alongside replies hints at colliding (duplicate) IDs."""

        def go():
            found, rc = self._ph.broadcastPing(self.port_handler)
            return {sid: ServoInfo(sid, v[0], v[1]) for sid, v in sorted(found.items())}, rc

        return self._guard(go)

    def read_raw(self, sid: int, address: int, length: int) -> bytes:
        """Read `length` bytes at `address` of one servo (ServoSilentError / ServoCommandError)."""

        def go() -> tuple[int, int, bytes]:
            data, rc, err = self._ph.readTxRx(self.port_handler, sid, address, length)
            if rc == COMM_SUCCESS and len(data) != length:
                # A late status reply to an earlier instruction, from the same id, arrived inside
                # this read's window (Protocol 2.0 has no sequence numbers): not this read's answer.
                rc = COMM_RX_CORRUPT
            return rc, err, bytes(data)

        rc, err, data = self._single(go)
        if rc != COMM_SUCCESS:
            raise ServoSilentError([sid], self._ph.getTxRxResult(rc))
        if err & 0x7F:
            raise ServoCommandError(sid, f"read {address}+{length}", err, self._ph.getRxPacketError(err))
        return data

    def _single(self, go: Callable[[], tuple]) -> tuple:
        """A single-servo transaction with the same bounded retry budget as the group read
        (writes of control-table items are idempotent, so a lost status reply may be retried)."""
        with self._lock:
            res = self._guard(go)
            for _ in range(self.settings.read_retries):
                if res[0] == COMM_SUCCESS:
                    break
                self._counters.single_retries += 1
                self._guard(self._drain)
                res = self._guard(go)
            return res

    def write_raw(self, sid: int, address: int, data: Sequence[int]) -> None:
        """Write bytes at `address` of one servo and check its status reply."""

        def go() -> tuple[int, int]:
            return self._ph.writeTxRx(self.port_handler, sid, address, len(data), list(data))

        rc, err = self._single(go)
        if rc != COMM_SUCCESS:
            raise ServoSilentError([sid], self._ph.getTxRxResult(rc))
        if err & 0x7F:
            raise ServoCommandError(sid, f"write {address}+{len(data)}", err, self._ph.getRxPacketError(err))

    def read_item(self, sid: int, name: str) -> int:
        """Raw (signed where the item is) value of a control-table item by name."""
        item = self._model_of(sid).item(name)
        raw = int.from_bytes(self.read_raw(sid, item.address, item.size), "little")
        return to_signed(raw, item.size) if item.signed else raw

    def write_item(self, sid: int, name: str, value: int) -> None:
        """Write a control-table item by name (raw units). EEPROM items need torque off."""
        item = self._model_of(sid).item(name)
        if not item.writable:
            raise ValueError(f"{name} is read-only")
        self.write_raw(sid, item.address, le_bytes(int(value), item.size))

    def reboot(self, sid: int, wait: bool = True) -> None:
        """Reboot one servo (clears a hardware error; RAM returns to defaults, torque off)."""

        def go() -> None:
            rc, _err = self._ph.reboot(self.port_handler, sid)
            if rc != COMM_SUCCESS:
                raise ServoSilentError([sid], f"reboot: {self._ph.getTxRxResult(rc)}")

        self._counters.reboots += 1
        self._guard(go)
        if wait:
            deadline = time.monotonic() + self.settings.reboot_timeout_s
            while time.monotonic() < deadline:
                if self.ping(sid, tries=1) is not None:
                    return
                time.sleep(0.01)
            raise ServoSilentError([sid], f"not back {self.settings.reboot_timeout_s} s after reboot")

    # -- configure ---------------------------------------------------------------------------

    def verify(self) -> dict[int, ServoInfo]:
        """Ping every configured servo, check its model, record firmware, pick the read flavour."""
        with self._lock:
            found = {}
            silent = []
            for j in self.joints:
                if j.operating_mode not in j.model.modes:
                    raise ConfigMismatchError(
                        f"servo {j.id} ({j.name}): {j.model.name} has no operating mode {j.operating_mode}"
                    )
                info = self.ping(j.id, tries=2)
                if info is None:
                    silent.append(j.id)
                    continue
                if info.model_number != j.model.number:
                    raise ConfigMismatchError(
                        f"servo {j.id} ({j.name}) is a {info.model}, config says {j.model.name}"
                    )
                found[j.id] = info
            if silent:
                raise ServoSilentError(silent, "configured but not answering ping")
            self.firmware = {sid: (i.firmware or 0) for sid, i in found.items()}
            fast_ok = all(self.firmware[j.id] >= j.model.fast_sync_read_min_fw for j in self.joints)
            want = self.settings.fast_sync_read
            self.fast_read = fast_ok if want is None else (want and fast_ok)
            return found

    def _desired_eeprom(self, j: JointSpec) -> list[tuple[Item, int]]:
        m, s = j.model, self.settings
        want: list[tuple[str, int]] = [
            ("return_delay_time", s.return_delay_us // 2),
            # Direction and zero are host-side (calibration): keep the servo's own at identity.
            ("drive_mode", 0),
            ("operating_mode", j.operating_mode),
            ("homing_offset", 0),
            ("shutdown", s.shutdown),
        ]
        if j.max_velocity_rad_s is not None:
            want.append(("velocity_limit", min(1023, rad_s_to_vel_units(j.max_velocity_rad_s))))
        if m.has_current and j.current_a is not None:
            want.append(("current_limit", min(m.current_limit_max or 0, amps_to_current_units(j.current_a, m.amps_per_current_unit))))
        if j.operating_mode == 3:
            lo, hi = j.tick_range()
            want += [("min_position_limit", lo), ("max_position_limit", hi)]
        return [(m.item(n), v) for n, v in want]

    def _desired_ram(self, j: JointSpec) -> list[tuple[Item, int]]:
        m, s = j.model, self.settings
        want: list[tuple[str, int]] = [("status_return_level", 2)]
        if j.pid is not None:
            want += [("position_p_gain", j.pid[0]), ("position_i_gain", j.pid[1]), ("position_d_gain", j.pid[2])]
        if j.profile_velocity_rad_s is not None:
            want.append(("profile_velocity", rad_s_to_vel_units(j.profile_velocity_rad_s)))
        if j.profile_acceleration_rad_s2 is not None:
            want.append(("profile_acceleration", rad_s2_to_acc_units(j.profile_acceleration_rad_s2)))
        if j.operating_mode == 5 and m.has_current:
            # Current-based position: Goal Current caps the effort; a reboot resets it, so it is a
            # RAM setting to restore like the gains. Use the configured limit (else the model's).
            cap = m.current_limit_max or 0
            if j.current_a is not None:
                cap = min(cap, amps_to_current_units(j.current_a, m.amps_per_current_unit))
            want.append(("goal_current", cap))
        want.append(("bus_watchdog", int(s.watchdog_ms // WATCHDOG_MS_PER_UNIT)))
        return [(m.item(n), v) for n, v in want]

    @staticmethod
    def _decode(block: bytes, base: int, item: Item) -> int:
        raw = int.from_bytes(block[item.address - base : item.address - base + item.size], "little")
        return to_signed(raw, item.size) if item.signed else raw

    def _apply(self, sid: int, items: list[tuple[Item, int]], block: bytes, base: int) -> list[str]:
        written = []
        for item, value in items:
            if self._decode(block, base, item) != value:
                if item.name == "bus_watchdog":
                    # A tripped watchdog reads -1 and must be cleared with 0 before re-arming.
                    self.write_raw(sid, item.address, [0])
                self.write_raw(sid, item.address, le_bytes(value, item.size))
                written.append(item.name)
        return written

    def _apply_ram(self, j: JointSpec) -> list[str]:
        """Write every RAM setting that differs (gains, profile, watchdog, indirect map)."""
        ram = self.read_raw(j.id, 64, 52)  # 64..115: torque .. profile velocity
        if ram[0] and to_signed(ram[_BUS_WATCHDOG - 64], 1) == -1 and not self._torque_ids:
            self._inherited_torque = True  # torque on, watchdog tripped: the last host died on it
        written = self._apply(j.id, self._desired_ram(j), ram, 64)
        want_map = b"".join(a.to_bytes(2, "little") for a in INDIRECT_MAP)
        have_map = self.read_raw(j.id, INDIRECT_ADDRESS_1, len(want_map))
        if have_map != want_map:
            self.write_raw(j.id, INDIRECT_ADDRESS_1, list(want_map))
            written.append("indirect_map")
        self._counters.ram_writes += len(written)
        return written

    def configure(self) -> dict[int, list[str]]:
        """Bring every servo to the configured settings, writing only what differs.

        EEPROM items are written with torque off (torque is switched off first only if something
        in EEPROM must change). Returns {id: [names of items written]}."""
        with self._lock:
            self.verify()
            written: dict[int, list[str]] = {}
            for j in self.joints:
                eeprom = self.read_raw(j.id, 0, 64)
                todo = [(it, v) for it, v in self._desired_eeprom(j) if self._decode(eeprom, 0, it) != v]
                names: list[str] = []
                if todo:
                    if self.read_item(j.id, "torque_enable"):
                        self.write_raw(j.id, _TORQUE_ENABLE, [0])
                        names.append("torque_enable")
                    names += self._apply(j.id, todo, eeprom, 0)
                    self._counters.eeprom_writes += len(todo)
                names += self._apply_ram(j)
                written[j.id] = names
            self._make_groups()
            return written

    # -- torque ------------------------------------------------------------------------------

    def _hold_here(self, sid: int) -> None:
        """Goal = present position, so enabling torque does not jump; a joint measured past a limit
        is held at the limit, so no goal outside the limits reaches a servo."""
        present = self.read_raw(sid, _PRESENT_POSITION, 4)
        j = self._byid.get(sid)
        if j is not None:
            raw = to_signed(int.from_bytes(present, "little"), 4)
            turn = int(self._turn[self._index[sid]])  # continuous ticks, as read_state uses (0 outside modes 4/5)
            lo, hi = j.tick_range()
            q = j.calibration.ticks_to_rad(raw + turn)
            near = j.min_rad - _HOLD_MARGIN_RAD <= q <= j.max_rad + _HOLD_MARGIN_RAD
            if j.operating_mode == 3 and not near:
                # The servo would refuse this goal (Data Limit); say which joint and what to do.
                raise ConfigMismatchError(
                    f"joint {j.name} (id {sid}) is at {q:.3f} rad, outside its limits "
                    f"[{j.min_rad}, {j.max_rad}] rad: move it inside by hand before enabling torque"
                )
            # Pressed past a limit (a load against the end stop, a limp finger sagging after a stop):
            # hold at the limit itself; the joint moves back to it, which is where the safety
            # monitor's first goal would send it anyway. Modes 4/5 do not check limits themselves.
            present = le_bytes(min(max(raw + turn, lo), hi) - turn, 4)
        self.write_raw(sid, _GOAL_POSITION, list(present))

    def enable_torque(self, ids: Iterable[int] | None = None) -> None:
        """Torque on (goal = present first) for `ids` (default: all configured)."""
        with self._lock:
            # After a pause longer than the Bus Watchdog, servos with torque on refuse goal writes
            # (Range Error) until it is cleared: re-arm first, as write_goal_positions does.
            self._maybe_rearm_watchdog()
            # Servos a crashed host left torqued (configure() saw their watchdog tripped): it re-armed
            # their watchdogs one at a time and the first ones trip again while it walks the rest
            # of the chain, so clear and re-arm each right before its goal = present write.
            rearm = self._inherited_torque and not self._torque_ids and int(self.settings.watchdog_ms // WATCHDOG_MS_PER_UNIT)
            self._inherited_torque = False
            for sid in self.ids if ids is None else ids:
                if rearm:
                    self.write_raw(sid, _BUS_WATCHDOG, [0])
                    self.write_raw(sid, _BUS_WATCHDOG, [rearm])
                self._hold_here(sid)
                self.write_raw(sid, _TORQUE_ENABLE, [1])
                self._torque_ids.add(sid)
            self._last_group_tx = time.monotonic()
            self._watchdog_suspect = False

    def disable_torque(self, ids: Iterable[int] | None = None) -> None:
        """Torque off (checked per servo) for `ids` (default: all configured)."""
        with self._lock:
            for sid in self.ids if ids is None else ids:
                self.write_raw(sid, _TORQUE_ENABLE, [0])
                self._torque_ids.discard(sid)

    def _broadcast_torque_off(self) -> None:
        self._ph.write1ByteTxOnly(self.port_handler, BROADCAST_ID, _TORQUE_ENABLE, 0)

    def _fail_safe(self) -> None:
        """Torque off everywhere, best effort (see module docstring for why off, not hold)."""
        self._counters.torque_offs_on_fault += 1
        self._torque_ids.clear()
        try:
            self._guard(self._broadcast_torque_off)
        except Exception:  # noqa: BLE001 - we are already failing; the watchdog is the backstop
            pass

    # -- the cycle ---------------------------------------------------------------------------

    def _group_read_once(self) -> int:
        assert self._reader is not None
        port = self.port_handler
        if self.fast_read:
            rc = self._reader.fastSyncRead()
        else:
            rc = self._reader.txRxPacket()
        port.is_using = False  # the SDK leaves it set on some early-return paths
        self._note_group_tx()
        return rc

    def _note_group_tx_gap_only(self) -> None:
        wd = self.settings.watchdog_ms
        if wd and self._last_group_tx is not None and time.monotonic() - self._last_group_tx > 0.8 * wd / 1000.0:
            self._watchdog_suspect = True

    def _note_group_tx(self) -> None:
        self._note_group_tx_gap_only()
        self._last_group_tx = time.monotonic()

    def _drain(self) -> None:
        # A late reply could otherwise be parsed as the answer to the retry.
        time.sleep(self.settings.drain_s)
        self.port_handler.clearPort()

    def _read_block(self) -> tuple[dict[int, bytes], float]:
        """One group read with bounded retries; raises ServoSilentError/CommError after fail-safe."""
        t0 = time.perf_counter()
        attempts = 1 + self.settings.read_retries
        rc = COMM_SUCCESS
        for k in range(attempts):
            if k:
                self._counters.read_retries += 1
                self._guard(self._drain)
            rc = self._guard(self._group_read_once)
            if rc == COMM_SUCCESS:
                break
            if rc == COMM_RX_TIMEOUT:
                self._counters.read_timeouts += 1
            else:
                self._counters.read_corrupt += 1
        if rc != COMM_SUCCESS:
            self._guard(self._drain)
            silent = [j.id for j in self.joints if self.ping(j.id, tries=2) is None]
            if silent:
                self._counters.silent_faults += 1
                self._fail_safe()
                raise ServoSilentError(silent, f"group read failed {attempts}x ({self._ph.getTxRxResult(rc)})")
            rc = self._guard(self._group_read_once)
            if rc != COMM_SUCCESS:
                self._fail_safe()
                raise CommError(f"group read failed {attempts + 1}x although every servo answers ping "
                                f"({self._ph.getTxRxResult(rc)})")
        assert self._reader is not None
        blocks = {}
        for j in self.joints:
            if not self._reader.isAvailable(j.id, INDIRECT_DATA_1, STATE_BLOCK_SIZE):
                self._fail_safe()
                raise CommError(f"group read succeeded but servo {j.id}'s data is unavailable")
            blocks[j.id] = bytes(self._reader.data_dict[j.id])
        return blocks, time.perf_counter() - t0

    def _state_from_blocks(
        self, blocks: dict[int, bytes], read_time: float, recovered: tuple[int, ...], seen: dict[int, int]
    ) -> BusState:
        n = len(self.joints)
        pos = np.empty(n, dtype=np.int64)
        vel = np.empty(n, dtype=np.int64)
        cur = np.empty(n, dtype=np.int64)
        err = np.empty(n, dtype=np.uint8)
        volt = np.empty(n, dtype=np.int64)
        temp = np.empty(n, dtype=np.int64)
        o = STATE_OFFSETS
        last = self._last_raw
        for i, j in enumerate(self.joints):
            b = blocks[j.id]
            cur[i] = int.from_bytes(b[o["present_current"] : o["present_current"] + 2], "little", signed=True)
            vel[i] = int.from_bytes(b[o["present_velocity"] : o["present_velocity"] + 4], "little", signed=True)
            pos[i] = last[j.id] = int.from_bytes(b[o["present_position"] : o["present_position"] + 4], "little", signed=True)
            err[i] = b[o["hardware_error_status"]]
            volt[i] = int.from_bytes(b[o["present_input_voltage"] : o["present_input_voltage"] + 2], "little")
            temp[i] = b[o["present_temperature"]]
        position = self._sign * ((pos + self._turn - CENTER_TICK) * RAD_PER_TICK - self._offset)
        velocity = self._sign * vel * RAD_S_PER_VEL_UNIT
        current = np.where(self._has_current, self._sign * cur * np.nan_to_num(self._amps), np.nan)
        load = np.where(self._has_current, np.nan, self._sign * cur * LOAD_FRACTION_PER_UNIT)
        return BusState(
            position=position,
            velocity=velocity,
            current=current,
            load=load,
            voltage=volt * 0.1,
            temperature=temp.astype(float),
            hardware_error=err,
            stamp=time.monotonic(),
            read_time_s=read_time,
            recovered=recovered,
            errors_seen=seen,
        )

    def read_state(self) -> BusState:
        """One group read of every servo -> fresh BusState in SI units (see BusState).

        Hardware errors are recovered here (reboot + restore, counted) and the read is repeated,
        so the returned state is post-recovery. Raises ServoSilentError, CommError, HardwareFault,
        PortLostError; never returns old data."""
        with self._lock:
            if self._reader is None:
                raise PortError("bus is not open (call open() first)")
            if not self.joints:
                raise ValueError("this bus has no configured joints to read")
            recovered: list[int] = []
            seen: dict[int, int] = {}
            t_total = 0.0
            for _ in range(self.settings.max_reboots + 2):
                blocks, dt = self._read_block()
                t_total += dt
                o = STATE_OFFSETS
                bad = {sid: b[o["hardware_error_status"]] for sid, b in blocks.items() if b[o["hardware_error_status"]]}
                # Input voltage reads 0 only if the indirect map is gone: the servo lost RAM (a
                # power blip reset it) without reporting an error. Restore it like a reboot.
                lost = [sid for sid, b in blocks.items()
                        if sid not in bad and b[o["present_input_voltage"]] == 0 == b[o["present_input_voltage"] + 1]]
                if not bad and not lost:
                    self._counters.cycles += 1
                    self.last_state = self._state_from_blocks(blocks, t_total, tuple(recovered), seen)
                    return self.last_state
                for sid in lost:
                    self._counters.servo_resets += 1
                    try:
                        self._restore(self._byid[sid])
                    except (ServoSilentError, ServoCommandError, ConfigMismatchError):
                        self._fail_safe()
                        raise
                    recovered.append(sid)
                for sid, bits in bad.items():
                    # This block's position is still good (map intact): the multi-turn re-home
                    # after the reboot measures from it.
                    pos_at = o["present_position"]
                    self._last_raw[sid] = int.from_bytes(blocks[sid][pos_at : pos_at + 4], "little", signed=True)
                    seen[sid] = seen.get(sid, 0) | bits
                    self._counters.hardware_errors += 1
                    self._recover(sid, bits)
                    recovered.append(sid)
            self._fail_safe()
            raise CommError("servo state keeps coming back invalid after restores (hardware errors or lost RAM)")

    def _recover(self, sid: int, bits: int) -> None:
        """Reboot a servo with a hardware error and restore it, within the reboot budget."""
        now = time.monotonic()
        log = self._reboots.setdefault(sid, collections.deque())
        while log and now - log[0] > self.settings.reboot_window_s:
            log.popleft()
        if len(log) >= self.settings.max_reboots:
            self._counters.hardware_faults += 1
            self._fail_safe()
            raise HardwareFault(sid, bits, len(log))
        log.append(now)
        try:
            self.reboot(sid, wait=True)
            self._restore(self._byid[sid])
        except (ServoSilentError, ServoCommandError, ConfigMismatchError) as e:
            # Not back, or refusing its settings: give up on it like on a persistent error.
            self._counters.hardware_faults += 1
            self._fail_safe()
            raise HardwareFault(sid, bits, len(log)) from e
        self._counters.recoveries += 1

    def _restore(self, j: JointSpec) -> None:
        """Re-apply every RAM setting after a reboot/reset: map, gains, profile, watchdog, goal, torque."""
        self._apply_ram(j)
        if j.operating_mode in (4, 5) and j.id in self._last_raw:
            # The turn count is lost on reboot/power-up: re-home by whole turns so the joint
            # angle stays continuous (assumes the joint moved less than half a turn meanwhile).
            now = self.read_item(j.id, "present_position")
            k = int(round((self._last_raw[j.id] - now) / 4096))
            if k:
                self._turn[self._index[j.id]] += 4096 * k
                self._counters.turn_rehomes += 1
            self._last_raw[j.id] = now
        if j.id in self._torque_ids:
            self._hold_here(j.id)
            self.write_raw(j.id, _TORQUE_ENABLE, [1])

    def write_goal_positions(self, q: Sequence[float] | np.ndarray) -> np.ndarray:
        """One Sync Write of goal positions. q: shape (N,) joint angles [rad], config order.

        Goals are clipped to the joint limits (a last guard; the SafetyMonitor is the real one).
        Returns the goal actually sent, in rad."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape[0] != len(self.joints):
            raise ValueError(f"expected {len(self.joints)} goals, got {q.shape[0]}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"non-finite goal position: {q}")
        with self._lock:
            if self._writer is None:
                raise PortError("bus is not open (call open() first)")
            qc = np.clip(q, self._qmin, self._qmax)
            ticks = np.rint((self._sign * qc + self._offset) / RAD_PER_TICK).astype(np.int64) + CENTER_TICK
            clipped = np.clip(ticks, self._tmin, self._tmax)
            self._counters.goal_clips += int(np.count_nonzero((qc != q) | (clipped != ticks)))
            raw = list(zip(self.ids, (clipped - self._turn).tolist()))

            def go() -> int:
                # Fill the writer that exists now: a port reopen replaces it (fresh PortHandler).
                w = self._writer
                assert w is not None
                for sid, t in raw:
                    w.changeParam(sid, le_bytes(t, 4))
                rc = w.txPacket()
                self.port_handler.is_using = False
                return rc

            self._maybe_rearm_watchdog()
            rc = self._guard(go)
            if rc != COMM_SUCCESS:
                raise CommError(f"goal sync write failed: {self._ph.getTxRxResult(rc)}")
            self._note_group_tx()
            self._counters.writes += 1
            return self._sign * ((clipped - CENTER_TICK) * RAD_PER_TICK - self._offset)

    def _maybe_rearm_watchdog(self) -> None:
        wd = self.settings.watchdog_ms
        if not wd or not self._torque_ids:
            return
        self._note_group_tx_gap_only()
        if self._watchdog_suspect:
            # A host stall longer than the watchdog leaves goals read-only (Bus Watchdog = -1):
            # clear with 0 and re-arm, broadcast (one packet each, no reply).
            def go() -> None:
                self._ph.write1ByteTxOnly(self.port_handler, BROADCAST_ID, _BUS_WATCHDOG, 0)
                self._ph.write1ByteTxOnly(self.port_handler, BROADCAST_ID, _BUS_WATCHDOG, int(wd // WATCHDOG_MS_PER_UNIT))

            self._guard(go)
            self._watchdog_suspect = False
            self._counters.watchdog_rearms += 1

    def cycle(self, q: Sequence[float] | np.ndarray) -> BusState:
        """One control cycle: read every servo, then write every goal. Returns the fresh state."""
        with self._lock:
            state = self.read_state()
            self.write_goal_positions(q)
            return state
