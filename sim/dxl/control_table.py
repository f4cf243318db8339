"""Per-model X-series control tables (e-manual X430 pages), independent of robosac.hal.

Each item: address, size (bytes), access (R / RW), whether it lives in EEPROM (addr < 64: writable
only with torque off), factory default, and the fixed value range (outside it: Data Range Error).
Limits that depend on other items (goal position vs. position limits, goal velocity vs. velocity
limit, ...) are checked in servo.py and answer Data Limit Error.

Units (raw): position 0.088 deg/tick (4096/rev), velocity 0.229 rev/min, current ~2.69 mA,
voltage 0.1 V, temperature 1 degC, PWM 0.113 %, profile acceleration 214.577 rev/min^2,
bus watchdog 20 ms, return delay 2 us.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EEPROM_END = 64  # addresses below this are EEPROM
TABLE_SIZE = 662  # indirect data 56 ends at 661

# Indirect address/data blocks: (first indirect address item, first data byte, count).
INDIRECT_BLOCKS: tuple[tuple[int, int, int], ...] = ((168, 224, 28), (578, 634, 28))


@dataclass(frozen=True)
class Item:
    name: str
    addr: int
    size: int
    access: str  # "R" or "RW"
    default: int
    lo: int
    hi: int
    signed: bool = False

    @property
    def eeprom(self) -> bool:
        return self.addr < EEPROM_END

    @property
    def writable(self) -> bool:
        return "W" in self.access


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_number: int
    items: tuple[Item, ...]
    has_current: bool
    current_unit_a: float  # A per raw unit (0 when the model has no current sensing)
    max_velocity_raw: int  # no-load speed at nominal voltage, raw velocity units
    operating_modes: tuple[int, ...]
    by_addr: dict[int, Item] = field(init=False, repr=False, compare=False)
    by_name: dict[str, Item] = field(init=False, repr=False, compare=False)
    owner: tuple[Item | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_addr", {i.addr: i for i in self.items})
        object.__setattr__(self, "by_name", {i.name: i for i in self.items})
        owner: list[Item | None] = [None] * TABLE_SIZE
        for it in self.items:
            for a in range(it.addr, it.addr + it.size):
                owner[a] = it
        object.__setattr__(self, "owner", tuple(owner))

    def item(self, name: str) -> Item:
        return self.by_name[name]


def _x430_items(*, current_limit_max: int | None, velocity_limit_default: int, volts: tuple[int, int, int]) -> list[Item]:
    """The X430 control table; ``current_limit_max=None`` gives the XL430 variant (no current).
    volts: (max voltage limit default, min voltage limit default, nominal supply), 0.1 V units."""
    vmax, vmin, vnom = volts
    I = Item
    items = [
        I("model_number", 0, 2, "R", 0, 0, 65535),
        I("model_information", 2, 4, "R", 0, 0, 2**32 - 1),
        I("firmware_version", 6, 1, "R", 0, 0, 255),
        I("id", 7, 1, "RW", 1, 0, 252),
        I("baud_rate", 8, 1, "RW", 1, 0, 7),
        I("return_delay_time", 9, 1, "RW", 250, 0, 254),
        I("drive_mode", 10, 1, "RW", 0, 0, 13),
        I("operating_mode", 11, 1, "RW", 3, 0, 16),
        I("secondary_id", 12, 1, "RW", 255, 0, 255),
        I("protocol_type", 13, 1, "RW", 2, 1, 2),
        I("homing_offset", 20, 4, "RW", 0, -1_044_479, 1_044_479, True),
        I("moving_threshold", 24, 4, "RW", 10, 0, 1023),
        I("temperature_limit", 31, 1, "RW", 80, 0, 100),
        I("max_voltage_limit", 32, 2, "RW", vmax, 60, vmax),
        I("min_voltage_limit", 34, 2, "RW", vmin, 60, vmax),
        I("pwm_limit", 36, 2, "RW", 885, 0, 885),
        I("velocity_limit", 44, 4, "RW", velocity_limit_default, 0, 1023),
        I("max_position_limit", 48, 4, "RW", 4095, 0, 4095),
        I("min_position_limit", 52, 4, "RW", 0, 0, 4095),
        I("shutdown", 63, 1, "RW", 52, 0, 255),
        I("torque_enable", 64, 1, "RW", 0, 0, 1),
        I("led", 65, 1, "RW", 0, 0, 1),
        I("status_return_level", 68, 1, "RW", 2, 0, 2),
        I("registered_instruction", 69, 1, "R", 0, 0, 1),
        I("hardware_error_status", 70, 1, "R", 0, 0, 255),
        I("velocity_i_gain", 76, 2, "RW", 1920, 0, 16383),
        I("velocity_p_gain", 78, 2, "RW", 100, 0, 16383),
        I("position_d_gain", 80, 2, "RW", 0, 0, 16383),
        I("position_i_gain", 82, 2, "RW", 0, 0, 16383),
        I("position_p_gain", 84, 2, "RW", 800, 0, 16383),
        I("feedforward_2nd_gain", 88, 2, "RW", 0, 0, 16383),
        I("feedforward_1st_gain", 90, 2, "RW", 0, 0, 16383),
        I("bus_watchdog", 98, 1, "RW", 0, -1, 127, True),
        I("goal_pwm", 100, 2, "RW", 0, -885, 885, True),
        I("goal_velocity", 104, 4, "RW", 0, -1023, 1023, True),
        I("profile_acceleration", 108, 4, "RW", 0, 0, 32767),
        I("profile_velocity", 112, 4, "RW", 0, 0, 32767),
        I("goal_position", 116, 4, "RW", 0, -1_048_575, 1_048_575, True),
        I("realtime_tick", 120, 2, "R", 0, 0, 32767),
        I("moving", 122, 1, "R", 0, 0, 1),
        I("moving_status", 123, 1, "R", 0, 0, 255),
        I("present_pwm", 124, 2, "R", 0, -885, 885, True),
        I("present_velocity", 128, 4, "R", 0, -(2**31), 2**31 - 1, True),
        I("present_position", 132, 4, "R", 0, -(2**31), 2**31 - 1, True),
        I("velocity_trajectory", 136, 4, "R", 0, -(2**31), 2**31 - 1, True),
        I("position_trajectory", 140, 4, "R", 0, -(2**31), 2**31 - 1, True),
        I("present_input_voltage", 144, 2, "R", vnom, 0, 65535),
        I("present_temperature", 146, 1, "R", 35, 0, 255),
    ]
    if current_limit_max is not None:
        items += [
            I("current_limit", 38, 2, "RW", current_limit_max, 0, current_limit_max),
            I("acceleration_limit", 40, 4, "RW", 32767, 0, 32767),
            I("goal_current", 102, 2, "RW", 0, -current_limit_max, current_limit_max, True),
            I("present_current", 126, 2, "R", 0, -32768, 32767, True),
        ]
    else:
        # XL430: no current sensing; address 126 is Present Load (0.1 % units).
        items += [I("present_load", 126, 2, "R", 0, -1000, 1000, True)]
    for first_addr, first_data, count in INDIRECT_BLOCKS:
        for k in range(count):
            items.append(I(f"indirect_address_{_n(first_addr) + k}", first_addr + 2 * k, 2, "RW", first_data + k, 64, TABLE_SIZE - 1))
            items.append(I(f"indirect_data_{_n(first_addr) + k}", first_data + k, 1, "RW", 0, 0, 255))
    return sorted(items, key=lambda i: i.addr)


def _n(first_addr: int) -> int:
    return 1 if first_addr == 168 else 29


def _spec(name: str, number: int, current_limit_max: int | None, vel_default: int, no_load_rpm: float) -> ModelSpec:
    has_current = current_limit_max is not None
    # XL430 runs from 6.5-12 V (11.1 V nominal); XM/XH430 from 10-14.8 V (12 V nominal).
    volts = (160, 95, 120) if has_current else (140, 60, 111)
    return ModelSpec(
        name=name,
        model_number=number,
        items=tuple(_x430_items(current_limit_max=current_limit_max, velocity_limit_default=vel_default, volts=volts)),
        has_current=has_current,
        current_unit_a=0.00269 if has_current else 0.0,
        max_velocity_raw=int(no_load_rpm / 0.229),
        # XL430 has no current-based modes (0, 5).
        operating_modes=(0, 1, 3, 4, 5, 16) if has_current else (1, 3, 4, 16),
    )


MODELS: dict[str, ModelSpec] = {
    "XM430-W210": _spec("XM430-W210", 1030, 1193, 330, 77.0),
    "XM430-W350": _spec("XM430-W350", 1020, 1193, 350, 46.0),
    "XH430-W210": _spec("XH430-W210", 1010, 648, 330, 77.0),
    "XH430-W350": _spec("XH430-W350", 1000, 648, 210, 46.0),
    "XL430-W250": _spec("XL430-W250", 1060, None, 265, 57.0),
}

MODEL_BY_NUMBER: dict[int, ModelSpec] = {m.model_number: m for m in MODELS.values()}

# Baud Rate item value -> bps.
BAUD_TABLE: dict[int, int] = {
    0: 9600,
    1: 57600,
    2: 115200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}
BAUD_CODE: dict[int, int] = {v: k for k, v in BAUD_TABLE.items()}

# Hardware error bits (Hardware Error Status 70 / Shutdown 63).
HW_INPUT_VOLTAGE = 0x01
HW_OVERHEATING = 0x04
HW_ENCODER = 0x08
HW_ELECTRICAL_SHOCK = 0x10
HW_OVERLOAD = 0x20
HW_ERROR_NAMES: dict[str, int] = {
    "input_voltage": HW_INPUT_VOLTAGE,
    "overheating": HW_OVERHEATING,
    "encoder": HW_ENCODER,
    "electrical_shock": HW_ELECTRICAL_SHOCK,
    "overload": HW_OVERLOAD,
}

TICKS_PER_REV = 4096
VELOCITY_UNIT_RAD_S = 0.229 * 2 * 3.141592653589793 / 60.0
