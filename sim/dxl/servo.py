"""One emulated X-series servo: control table memory, write/read rules, and what they do.

Semantics implemented (e-manual X430 control table and Protocol 2.0 error field):

- EEPROM (addr < 64) writable only with Torque Enable = 0, else Access Error (0x07).
- Read-only items reject writes (Access Error); a write that starts/ends inside an item is a Data
  Length Error (0x05); a value outside the item's fixed range is a Data Range Error (0x04); a goal
  outside its limit item (Goal Position vs. Min/Max Position Limit in mode 3, Goal Velocity vs.
  Velocity Limit, Goal Current vs. Current Limit, Goal PWM vs. PWM Limit) is a Data Limit Error
  (0x06). A write is checked in full before any byte is applied.
- Indirect Address 1..56 (168.., 578..) redirect Indirect Data 1..56 (224.., 634..) byte by byte.
- Operating modes 3 (position, clamped to the position limits), 4 (extended, +-1 048 575),
  5 (current-based position: current capped by Goal Current). Modes 0/1/16 are accepted by the
  table but the joint only holds its position in them (not needed by robosac).
- Present Position = direction * actual ticks + turn offset + Homing Offset; the turn offset is
  reset so direction * actual + turn offset lies in 0..4095 on power-up/reboot, on switching to
  mode 3, on torque enable in mode 3 and on Clear (e-manual Present Position note).
- Hardware errors: a raised error whose bit is set in Shutdown (63) clears Torque Enable; Torque
  Enable then cannot be set again until a reboot (the write is ignored: it answers with no error
  number but with the Alert bit, so the host sees Torque Enable still 0 and Alert set). Every
  status packet carries Alert (0x80) while Hardware Error Status != 0.
- Bus Watchdog (98, x20 ms): while torque is on, if no instruction packet addressed to this servo
  arrives within the window the servo stops (holds where it is), the item reads -1 (0xFF) and
  writes to Goal PWM/Current/Velocity/Position answer Data Range Error until 0 is written to it.
- Reboot: RAM back to defaults, hardware error cleared, torque off, Goal Position = Present
  Position (within one turn).
- On power-up/reboot Goal Position is set to Present Position so torque-on does not jump.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from . import protocol as P
from .control_table import (
    BAUD_CODE,
    EEPROM_END,
    INDIRECT_BLOCKS,
    MODELS,
    TABLE_SIZE,
    TICKS_PER_REV,
    VELOCITY_UNIT_RAD_S,
    Item,
    ModelSpec,
)
from .physics import FirstOrderJoint, JointModel, JointTarget

_RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
_GOAL_ITEMS = ("goal_pwm", "goal_current", "goal_velocity", "goal_position")


@dataclass(frozen=True)
class GoalLimits:
    """A robot config's promise for one servo, in its raw units: Goal Position within
    [min_ticks, max_ticks] (the joint range) and Goal Current at most max_current_units (None: no
    cap). The host's safety monitor must never send more; the twin counts every goal that takes
    effect outside them (`Servo.limit_violations`), as an auditor independent of the host."""

    min_ticks: int
    max_ticks: int
    max_current_units: int | None = None


@dataclass
class ServoSpec:
    """How to build one emulated servo.

    id, model (a key of control_table.MODELS), firmware (Firmware Version item; Fast Sync/Bulk Read
    need >= 45), baud (bps the servo's Baud Rate item is set to), position_ticks (initial actual
    position, encoder ticks; 2048 = centre), eeprom: other initial item values by item name
    (e.g. {"return_delay_time": 0, "operating_mode": 4}), joint: a JointModel (default: a
    FirstOrderJoint at position_ticks), limits: GoalLimits to audit goals against (None: none).
    """

    id: int
    model: str = "XM430-W350"
    firmware: int = 46
    baud: int = 1_000_000
    position_ticks: int = 2048
    eeprom: dict[str, int] = field(default_factory=dict)
    joint: JointModel | None = None
    limits: GoalLimits | None = None


class Servo:
    """Control table + behaviour of one servo. Not thread-safe: the chain holds its lock."""

    def __init__(self, spec: ServoSpec, *, clock=time.monotonic) -> None:
        if spec.model not in MODELS:
            raise ValueError(f"unknown model {spec.model!r}; known: {', '.join(MODELS)}")
        if not 0 <= spec.id <= P.MAX_ID:
            raise ValueError(f"servo id {spec.id} outside 0..{P.MAX_ID}")
        if spec.baud not in BAUD_CODE:
            raise ValueError(f"baud {spec.baud} is not a Dynamixel rate; allowed: {', '.join(map(str, BAUD_CODE))}")
        if not 0 <= spec.firmware <= 255:
            raise ValueError(f"firmware {spec.firmware} outside 0..255")
        self.spec = spec
        self.model: ModelSpec = MODELS[spec.model]
        self.firmware = spec.firmware
        self._clock = clock
        self._t0 = clock()
        self.joint: JointModel = spec.joint or FirstOrderJoint(spec.position_ticks * _RAD_PER_TICK, clock=clock)
        self.mem = bytearray(TABLE_SIZE)
        self.turn_offset = 0  # ticks added to Present Position (multi-turn bookkeeping)
        self.shutdown_latched = False  # torque locked off until reboot
        self.persistent_error = 0  # hardware error bits that come back after every reboot
        self.watchdog_tripped = False
        self.last_rx = clock()  # last instruction addressed to this servo (bus watchdog)
        self.registered: tuple[int, bytes] | None = None
        self.limit_violations: dict[str, int] = {}  # goal item -> writes outside spec.limits that took effect
        self.boot_until = 0.0  # unresponsive (rebooting) until this clock time
        self._factory_defaults()
        self.set("id", spec.id)
        self.set("baud_rate", BAUD_CODE[spec.baud])
        for name, value in spec.eeprom.items():
            self.set(name, value)
        self._power_on()

    # ------------------------------------------------------------------ raw memory access
    def item(self, name: str) -> Item:
        return self.model.by_name[name]

    def get(self, name: str) -> int:
        """Decoded value of an item (signed items as signed); no refresh."""
        it = self.model.by_name[name]
        return int.from_bytes(self.mem[it.addr : it.addr + it.size], "little", signed=it.signed)

    def set(self, name: str, value: int) -> None:
        """Store a value with no checks and no side effects (emulator internals, tests, faults)."""
        it = self.model.by_name[name]
        self.mem[it.addr : it.addr + it.size] = (value & ((1 << (8 * it.size)) - 1)).to_bytes(it.size, "little")

    def has(self, name: str) -> bool:
        return name in self.model.by_name

    @property
    def id(self) -> int:
        return self.mem[7]

    @property
    def baud(self) -> int:
        from .control_table import BAUD_TABLE

        return BAUD_TABLE.get(self.mem[8], 57600)

    @property
    def torque(self) -> bool:
        return self.mem[64] == 1

    @property
    def hardware_error(self) -> int:
        return self.mem[70]

    def alert(self) -> int:
        return P.ERR_ALERT if self.mem[70] else 0

    # ------------------------------------------------------------------ lifecycle
    def _factory_defaults(self, keep: tuple[str, ...] = ()) -> None:
        saved = {k: self.get(k) for k in keep}
        for it in self.model.items:
            self.set(it.name, it.default)
        self.set("model_number", self.model.model_number)
        self.set("firmware_version", self.firmware)
        for k, v in saved.items():
            self.set(k, v)

    def _reset_ram(self) -> None:
        for it in self.model.items:
            # Voltage and temperature are sensor readings of the world, not settings: a reboot
            # does not fix a sagging supply or a hot motor.
            if it.addr >= EEPROM_END and it.name not in ("present_input_voltage", "present_temperature"):
                self.set(it.name, it.default)

    def _power_on(self) -> None:
        """Power-up / reboot: RAM defaults, errors cleared, position within one turn."""
        self._reset_ram()
        self.shutdown_latched = False
        self.watchdog_tripped = False
        self.registered = None
        self.joint.set_torque(False)
        self._wrap_turns()
        self.refresh()
        self.set("goal_position", self.get("present_position"))
        self.last_rx = self._clock()
        if self.persistent_error:
            self.raise_hardware_error(self.persistent_error)

    def reboot(self, boot_time_s: float = 0.0) -> None:
        self._power_on()
        self.boot_until = self._clock() + boot_time_s

    def factory_reset(self, option: int) -> None:
        keep = {0xFF: (), 0x01: ("id",), 0x02: ("id", "baud_rate")}[option]
        self._factory_defaults(keep)
        self.turn_offset = 0
        self._power_on()

    def booting(self) -> bool:
        return self._clock() < self.boot_until

    # ------------------------------------------------------------------ kinematics
    def _direction(self) -> int:
        return -1 if self.mem[10] & 0x01 else 1

    def _actual_ticks(self, position_rad: float) -> float:
        return position_rad / _RAD_PER_TICK

    def _present_from_rad(self, position_rad: float) -> int:
        return int(round(self._direction() * self._actual_ticks(position_rad))) + self.get("homing_offset") + self.turn_offset

    def _rad_from_goal(self, goal_ticks: int) -> float:
        return self._direction() * (goal_ticks - self.get("homing_offset") - self.turn_offset) * _RAD_PER_TICK

    def _wrap_turns(self) -> None:
        """Reset the turn count: the position *before* Homing Offset goes into 0..4095 (the
        e-manual: the reset value is still affected by Homing Offset)."""
        raw = int(round(self._direction() * self._actual_ticks(self.joint.read().position_rad)))
        self.turn_offset = -(raw - raw % TICKS_PER_REV)

    def refresh(self) -> None:
        """Update the present-value items from the joint (called before every read)."""
        st = self.joint.read()
        d = self._direction()
        self.set("present_position", self._present_from_rad(st.position_rad))
        vel_raw = int(round(d * st.velocity_rad_s / VELOCITY_UNIT_RAD_S))
        self.set("present_velocity", vel_raw)
        if self.model.has_current:
            cur_raw = int(round(d * st.current_a / self.model.current_unit_a))
            self.set("present_current", max(-32768, min(32767, cur_raw)))
            limit = max(1, self.get("current_limit"))
            self.set("present_pwm", max(-885, min(885, int(885 * cur_raw / limit))))
        else:
            # Present Load in 0.1 % of the maximum (stall) torque; a plausible figure from current.
            load = int(round(d * st.current_a / 1.4 * 1000))
            self.set("present_load", max(-1000, min(1000, load)))
            self.set("present_pwm", max(-885, min(885, load)))
        moving = abs(vel_raw) > self.get("moving_threshold")
        self.set("moving", 1 if moving else 0)
        in_pos = abs(self.get("goal_position") - self.get("present_position")) <= 20
        self.set("moving_status", (0x01 if in_pos else 0) | (0x02 if moving else 0))
        self.set("velocity_trajectory", vel_raw if self.torque else 0)
        self.set("position_trajectory", self.get("goal_position") if self.torque else self.get("present_position"))
        self.set("realtime_tick", int((self._clock() - self._t0) * 1000) % 32768)

    def _velocity_cap_rad_s(self) -> float:
        cap = self.model.max_velocity_raw
        vl = self.get("velocity_limit")
        if vl > 0:
            cap = min(cap, vl)
        pv = self.get("profile_velocity")
        if pv > 0 and not (self.mem[10] & 0x04):  # velocity-based profile
            cap = min(cap, pv)
        return max(cap, 1) * VELOCITY_UNIT_RAD_S

    def _current_cap_a(self) -> float | None:
        if not self.model.has_current:
            return None
        cap = self.get("current_limit")
        if self.get("operating_mode") == 5:
            cap = min(cap, abs(self.get("goal_current")))
        return cap * self.model.current_unit_a

    def _push_target(self, hold: bool = False) -> None:
        mode = self.get("operating_mode")
        if hold or mode not in (3, 4, 5):
            pos = self.joint.read().position_rad  # modes 0/1/16 and watchdog stop: hold
        else:
            pos = self._rad_from_goal(self.get("goal_position"))
        self.joint.set_target(
            JointTarget(
                position_rad=pos,
                max_velocity_rad_s=self._velocity_cap_rad_s(),
                max_current_a=self._current_cap_a(),
                position_p_gain=self.get("position_p_gain"),
            )
        )

    # ------------------------------------------------------------------ faults / timers
    def raise_hardware_error(self, bits: int, persistent: bool = False) -> None:
        """Set Hardware Error Status bits; Shutdown bits turn torque off until reboot.
        persistent: the error is raised again after every reboot (a broken servo)."""
        if persistent:
            self.persistent_error |= bits
        self.set("hardware_error_status", self.mem[70] | bits)
        if bits & self.mem[63]:
            self.shutdown_latched = True
            self.set("torque_enable", 0)
            self.joint.set_torque(False)

    def check_watchdog(self, now: float) -> None:
        wd = self.get("bus_watchdog")
        if wd > 0 and self.torque and not self.watchdog_tripped and now - self.last_rx > wd * 0.020:
            self.watchdog_tripped = True
            self.set("bus_watchdog", -1)
            self._push_target(hold=True)

    def check_conditions(self) -> None:
        """Raise Input Voltage / Overheating errors from the staged present values (e.g. a test
        sets Present Input Voltage below Min Voltage Limit to emulate a brownout)."""
        v = self.get("present_input_voltage")
        if not self.get("min_voltage_limit") <= v <= self.get("max_voltage_limit") and not self.mem[70] & 0x01:
            self.raise_hardware_error(0x01)
        if self.get("present_temperature") > self.get("temperature_limit") and not self.mem[70] & 0x04:
            self.raise_hardware_error(0x04)

    def touch(self, now: float) -> None:
        """An instruction packet addressed to this servo arrived (feeds the watchdog)."""
        self.check_watchdog(now)
        self.last_rx = now

    # ------------------------------------------------------------------ read / write
    def _map(self, addr: int, length: int) -> list[int]:
        """Addresses actually accessed for [addr, addr+length), following indirect data bytes."""
        out = []
        for a in range(addr, addr + length):
            tgt = a
            for first_addr, first_data, count in INDIRECT_BLOCKS:
                if first_data <= a < first_data + count:
                    k = a - first_data
                    ia = first_addr + 2 * k
                    tgt = self.mem[ia] | (self.mem[ia + 1] << 8)
                    break
            out.append(tgt)
        return out

    def read(self, addr: int, length: int) -> tuple[int, bytes]:
        """-> (error number, data). Access Error past the end of the table."""
        if length == 0:
            return P.ERR_DATA_LENGTH, b""
        if addr + length > TABLE_SIZE:
            return P.ERR_ACCESS, b""
        self.refresh()
        return P.ERR_NONE, bytes(self.mem[t] if t < TABLE_SIZE else 0 for t in self._map(addr, length))

    def write(self, addr: int, data: bytes) -> int:
        """Check and apply a write; returns the error number (0 = done)."""
        n = len(data)
        if n == 0:
            return P.ERR_DATA_LENGTH
        if addr + n > TABLE_SIZE:
            return P.ERR_ACCESS
        targets = self._map(addr, n)
        # Group into runs of consecutive target addresses.
        runs: list[tuple[int, bytearray]] = []
        for t, b in zip(targets, data):
            if runs and runs[-1][0] + len(runs[-1][1]) == t:
                runs[-1][1].append(b)
            else:
                runs.append((t, bytearray((b,))))
        writes: list[tuple[Item, int]] = []
        for start, buf in runs:
            end = start + len(buf)
            if end > TABLE_SIZE:
                return P.ERR_ACCESS
            a = start
            found = False
            while a < end:
                it = self.model.owner[a]
                if it is None:
                    a += 1
                    continue
                if it.addr < start or it.addr + it.size > end:
                    return P.ERR_DATA_LENGTH
                raw = bytes(buf[it.addr - start : it.addr - start + it.size])
                writes.append((it, int.from_bytes(raw, "little", signed=it.signed)))
                found = True
                a = it.addr + it.size
            if not found:
                return P.ERR_ACCESS
        err = self._check(writes)
        if err:
            return err
        for it, value in writes:
            self._apply(it, value)
        return P.ERR_NONE

    def _check(self, writes: list[tuple[Item, int]]) -> int:
        new = {it.name: v for it, v in writes}

        def val(name: str) -> int:
            return new[name] if name in new else self.get(name)

        for it, v in writes:
            if not it.writable:
                return P.ERR_ACCESS
            if it.eeprom and self.torque:
                return P.ERR_ACCESS
        for it, v in writes:
            lo, hi = it.lo, it.hi
            if it.name == "bus_watchdog":
                lo = 0  # -1 is only ever read
            if not lo <= v <= hi:
                return P.ERR_DATA_RANGE
            if it.name == "operating_mode" and v not in self.model.operating_modes:
                return P.ERR_DATA_RANGE
            if it.name == "drive_mode" and v & ~0b1101:
                return P.ERR_DATA_RANGE
            if it.name in _GOAL_ITEMS and self.watchdog_tripped and val("bus_watchdog") != 0:
                return P.ERR_DATA_RANGE
        for it, v in writes:
            if it.name == "goal_position" and val("operating_mode") == 3:
                if not val("min_position_limit") <= v <= val("max_position_limit"):
                    return P.ERR_DATA_LIMIT
            elif it.name == "goal_velocity" and abs(v) > val("velocity_limit"):
                return P.ERR_DATA_LIMIT
            elif it.name == "goal_current" and abs(v) > val("current_limit"):
                return P.ERR_DATA_LIMIT
            elif it.name == "goal_pwm" and abs(v) > val("pwm_limit"):
                return P.ERR_DATA_LIMIT
        return P.ERR_NONE

    def _apply(self, it: Item, v: int) -> None:
        name = it.name
        if name == "torque_enable":
            if v == 1 and self.shutdown_latched:
                return  # locked off until reboot; the status packet carries Alert
            was = self.torque
            self.set(name, v)
            if v and not was:
                if self.get("operating_mode") == 3:
                    self._wrap_turns()
                self.last_rx = self._clock()
                self.joint.set_torque(True)
                self._push_target()
            elif not v and was:
                self.joint.set_torque(False)
            return
        if name == "bus_watchdog":
            self.set(name, v)
            if v == 0:
                self.watchdog_tripped = False
            self.last_rx = self._clock()
            return
        self.set(name, v)
        if self.spec.limits is not None and self._outside_limits(name, v):
            self.limit_violations[name] = self.limit_violations.get(name, 0) + 1
        if name == "operating_mode" and v == 3:
            self._wrap_turns()
        if name in ("goal_position", "goal_current", "profile_velocity", "velocity_limit", "current_limit", "position_p_gain"):
            if self.torque and not self.watchdog_tripped:
                self._push_target()

    def _outside_limits(self, name: str, v: int) -> bool:
        lim = self.spec.limits
        if name == "goal_position":
            return not lim.min_ticks <= v <= lim.max_ticks
        if name == "goal_current":
            return lim.max_current_units is not None and abs(v) > lim.max_current_units
        return False

    # ------------------------------------------------------------------ single-servo instructions
    def clear_multi_turn(self, params: bytes) -> int:
        if params != b"\x01\x44\x58\x4c\x22":
            return P.ERR_DATA_RANGE
        if abs(self.joint.read().velocity_rad_s) > 1e-3:
            return P.ERR_RESULT_FAIL  # only while stopped (e-manual Clear)
        self._wrap_turns()
        if self.torque:
            self._push_target()
        return P.ERR_NONE

    def reg_write(self, addr: int, data: bytes) -> int:
        self.registered = (addr, bytes(data))
        self.set("registered_instruction", 1)
        return P.ERR_NONE

    def action(self) -> int:
        if self.registered is None:
            return P.ERR_INSTRUCTION
        addr, data = self.registered
        self.registered = None
        self.set("registered_instruction", 0)
        return self.write(addr, data)
