"""The HAL's own control table for the X430 servos robosac supports (Protocol 2.0).

Addresses, sizes, signedness and unit scales come from the ROBOTIS e-manual pages of each model
(XM430-W210/W350, XH430-W210/W350, XL430-W250). The emulator in sim/ keeps an independent table on
purpose, so a typo on either side shows up as a failing test instead of agreeing with itself.

Units of raw values (per the e-manual):
  position         1 tick = 2*pi/4096 rad (0.088 deg); robosac puts 0 rad at tick 2048
  velocity         1 unit = 0.229 rev/min
  current          1 unit = 2.69 mA (XM430-W*, XH430-W*); the XL430 has no current sensor and reports
                   Present Load instead, 1 unit = 0.1 % of maximum torque (range -1000..1000)
  input voltage    1 unit = 0.1 V
  temperature      1 unit = 1 degC
  profile accel    1 unit = 214.577 rev/min^2 (velocity-based profile, Drive Mode bit 2 clear)
  return delay     1 unit = 2 us
  bus watchdog     1 unit = 20 ms
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# ---- scales (raw unit -> SI) -------------------------------------------------------------------
TICKS_PER_REV = 4096
CENTER_TICK = 2048  # servo angle 0 rad (robosac.config convention)
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_REV
RAD_S_PER_VEL_UNIT = 0.229 * 2.0 * math.pi / 60.0  # 0.229 rev/min
RAD_S2_PER_ACC_UNIT = 214.577 * 2.0 * math.pi / 3600.0  # 214.577 rev/min^2
VOLT_PER_UNIT = 0.1
DEG_C_PER_UNIT = 1.0
LOAD_FRACTION_PER_UNIT = 0.001  # XL430 Present Load: 0.1 % of max torque
RETURN_DELAY_US_PER_UNIT = 2.0
WATCHDOG_MS_PER_UNIT = 20.0

# Baud Rate(8) register value -> bits/s (X series).
BAUD_CODES: dict[int, int] = {
    0: 9_600,
    1: 57_600,
    2: 115_200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}
BAUD_TO_CODE: dict[int, int] = {v: k for k, v in BAUD_CODES.items()}

# Operating Mode(11) values.
OPERATING_MODES: dict[str, int] = {
    "current": 0,
    "velocity": 1,
    "position": 3,
    "extended_position": 4,
    "current_based_position": 5,
    "pwm": 16,
}

# Hardware Error Status(70) / Shutdown(63) bits.
HW_ERROR_BITS: dict[int, str] = {
    0x01: "input_voltage",
    0x04: "overheating",
    0x08: "encoder",
    0x10: "electrical_shock",
    0x20: "overload",
}


def describe_hw_error(bits: int) -> list[str]:
    """Names of the Hardware Error Status bits set in `bits` (unknown bits as hex)."""
    names = [name for bit, name in HW_ERROR_BITS.items() if bits & bit]
    unknown = bits & ~sum(HW_ERROR_BITS)
    if unknown:
        names.append(f"unknown_0x{unknown:02x}")
    return names


@dataclass(frozen=True)
class Item:
    """One control-table entry. `eeprom` items are writable only with torque off."""

    name: str
    address: int
    size: int  # bytes: 1, 2 or 4
    signed: bool = False
    eeprom: bool = False
    writable: bool = True


def _items(*entries: tuple) -> dict[str, Item]:
    out: dict[str, Item] = {}
    for e in entries:
        name, addr, size, *flags = e
        out[name] = Item(
            name,
            addr,
            size,
            signed="s" in flags,
            eeprom=addr < 64,
            writable="ro" not in flags,
        )
    return out


# Items shared by every X430 model in the table (e-manual, X430 control table).
_COMMON = _items(
    ("model_number", 0, 2, "ro"),
    ("model_information", 2, 4, "ro"),
    ("firmware_version", 6, 1, "ro"),
    ("id", 7, 1),
    ("baud_rate", 8, 1),
    ("return_delay_time", 9, 1),
    ("drive_mode", 10, 1),
    ("operating_mode", 11, 1),
    ("secondary_id", 12, 1),
    ("protocol_type", 13, 1),
    ("homing_offset", 20, 4, "s"),
    ("moving_threshold", 24, 4),
    ("temperature_limit", 31, 1),
    ("max_voltage_limit", 32, 2),
    ("min_voltage_limit", 34, 2),
    ("pwm_limit", 36, 2),
    ("velocity_limit", 44, 4),
    ("max_position_limit", 48, 4),
    ("min_position_limit", 52, 4),
    ("startup_configuration", 60, 1),
    ("shutdown", 63, 1),
    ("torque_enable", 64, 1),
    ("led", 65, 1),
    ("status_return_level", 68, 1),
    ("registered_instruction", 69, 1, "ro"),
    ("hardware_error_status", 70, 1, "ro"),
    ("velocity_i_gain", 76, 2),
    ("velocity_p_gain", 78, 2),
    ("position_d_gain", 80, 2),
    ("position_i_gain", 82, 2),
    ("position_p_gain", 84, 2),
    ("feedforward_2nd_gain", 88, 2),
    ("feedforward_1st_gain", 90, 2),
    ("bus_watchdog", 98, 1, "s"),
    ("goal_pwm", 100, 2, "s"),
    ("goal_velocity", 104, 4, "s"),
    ("profile_acceleration", 108, 4),
    ("profile_velocity", 112, 4),
    ("goal_position", 116, 4, "s"),
    ("realtime_tick", 120, 2, "ro"),
    ("moving", 122, 1, "ro"),
    ("moving_status", 123, 1, "ro"),
    ("present_pwm", 124, 2, "s", "ro"),
    ("present_velocity", 128, 4, "s", "ro"),
    ("present_position", 132, 4, "s", "ro"),
    ("velocity_trajectory", 136, 4, "s", "ro"),
    ("position_trajectory", 140, 4, "s", "ro"),
    ("present_input_voltage", 144, 2, "ro"),
    ("present_temperature", 146, 1, "ro"),
    ("backup_ready", 147, 1, "ro"),
)
# Indirect Address n (n = 1..28) at 168 + 2(n-1), Indirect Data n at 224 + (n-1).
INDIRECT_ADDRESS_1 = 168
INDIRECT_DATA_1 = 224
INDIRECT_SLOTS = 28
_INDIRECT = {
    **{
        f"indirect_address_{n}": Item(f"indirect_address_{n}", INDIRECT_ADDRESS_1 + 2 * (n - 1), 2)
        for n in range(1, INDIRECT_SLOTS + 1)
    },
    **{
        f"indirect_data_{n}": Item(f"indirect_data_{n}", INDIRECT_DATA_1 + (n - 1), 1)
        for n in range(1, INDIRECT_SLOTS + 1)
    },
}
_WITH_CURRENT = _items(
    ("current_limit", 38, 2),
    ("goal_current", 102, 2, "s"),
    ("present_current", 126, 2, "s", "ro"),
)
_XL430_ONLY = _items(("present_load", 126, 2, "s", "ro"))


@dataclass(frozen=True)
class ModelSpec:
    """What differs between models: number, current sensing and its scale, limits."""

    name: str
    number: int
    items: dict[str, Item] = field(repr=False)
    amps_per_current_unit: float | None  # None: no current sensor (reports load instead)
    current_limit_max: int | None  # Current Limit(38) upper bound, raw units
    modes: frozenset[int]
    fast_sync_read_min_fw: int = 45  # X430: Fast Sync/Bulk Read from firmware 45

    @property
    def has_current(self) -> bool:
        return self.amps_per_current_unit is not None

    def item(self, name: str) -> Item:
        try:
            return self.items[name]
        except KeyError:
            raise KeyError(
                f"{self.name} has no control-table item {name!r}; known: {', '.join(sorted(self.items))}"
            ) from None


_ALL_MODES = frozenset({0, 1, 3, 4, 5, 16})


def _model(name: str, number: int, amps: float | None, cur_max: int | None) -> ModelSpec:
    items = {**_COMMON, **_INDIRECT, **(_WITH_CURRENT if amps is not None else _XL430_ONLY)}
    modes = _ALL_MODES if amps is not None else frozenset({1, 3, 4, 16})
    return ModelSpec(name, number, dict(sorted(items.items(), key=lambda kv: kv[1].address)), amps, cur_max, modes)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _model("XM430-W350", 1020, 2.69e-3, 1193),
        _model("XM430-W210", 1030, 2.69e-3, 1193),
        _model("XH430-W350", 1000, 2.69e-3, 648),
        _model("XH430-W210", 1010, 2.69e-3, 648),
        _model("XL430-W250", 1060, None, None),
    )
}
MODELS_BY_NUMBER: dict[int, ModelSpec] = {m.number: m for m in MODELS.values()}


def model_by_name(name: str) -> ModelSpec:
    """Look a model up by name (case-insensitive); KeyError naming the supported ones."""
    key = name.strip().upper()
    if key not in MODELS:
        raise KeyError(f"unsupported servo model {name!r}; supported: {', '.join(MODELS)}")
    return MODELS[key]


def model_name(number: int) -> str:
    """Human name of a model number, e.g. 1020 -> 'XM430-W350', unknown -> 'model 1234'."""
    m = MODELS_BY_NUMBER.get(number)
    return m.name if m else f"model {number}"


# ---- the per-cycle read block (indirect) --------------------------------------------------------
# One contiguous read of Indirect Data 1..14 gives, per servo: current/load, velocity, position,
# hardware error status, input voltage, temperature. Order kept as on the table (current first) so
# the map is easy to audit; total 14 bytes.
STATE_BLOCK: tuple[tuple[str, int], ...] = (
    ("present_current", 2),  # present_load on XL430 (same address 126)
    ("present_velocity", 4),
    ("present_position", 4),
    ("hardware_error_status", 1),
    ("present_input_voltage", 2),
    ("present_temperature", 1),
)
STATE_BLOCK_SIZE = sum(n for _, n in STATE_BLOCK)
# Offset of each field inside the block.
STATE_OFFSETS: dict[str, int] = {}
_off = 0
for _name, _n in STATE_BLOCK:
    STATE_OFFSETS[_name] = _off
    _off += _n
del _off, _name, _n

# Source addresses of the block, one per byte (what goes into Indirect Address 1..14).
_SOURCE_ADDRESS = {
    "present_current": 126,
    "present_velocity": 128,
    "present_position": 132,
    "hardware_error_status": 70,
    "present_input_voltage": 144,
    "present_temperature": 146,
}
INDIRECT_MAP: tuple[int, ...] = tuple(
    _SOURCE_ADDRESS[name] + k for name, n in STATE_BLOCK for k in range(n)
)
assert len(INDIRECT_MAP) == STATE_BLOCK_SIZE <= INDIRECT_SLOTS
