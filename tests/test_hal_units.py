"""Unit conversions and the HAL's control table (no bus needed)."""

from __future__ import annotations

import math

import pytest

from robosac.hal.control_table import (
    INDIRECT_MAP,
    MODELS,
    STATE_BLOCK_SIZE,
    describe_hw_error,
    model_by_name,
    model_name,
)
from robosac.hal.units import Calibration, le_bytes, rad_s_to_vel_units, to_signed, to_unsigned

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests


@pytest.mark.parametrize(
    "raw,size,signed",
    [(0xFFFFFFFF, 4, -1), (0x80000000, 4, -(2**31)), (0x7FFFFFFF, 4, 2**31 - 1), (0xFFFF, 2, -1),
     (0x8000, 2, -32768), (0x7FFF, 2, 32767), (0xFF, 1, -1), (5, 1, 5), (0, 4, 0)],
)
def test_twos_complement_round_trip(raw: int, size: int, signed: int) -> None:
    assert to_signed(raw, size) == signed
    assert to_unsigned(signed, size) == raw


def test_minus_one_is_all_ones_not_robel_off_by_one() -> None:
    assert le_bytes(-1, 4) == [0xFF, 0xFF, 0xFF, 0xFF]
    assert le_bytes(-2, 2) == [0xFE, 0xFF]
    with pytest.raises(ValueError):
        to_unsigned(2**31 * 2, 4)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("offset", [0.0, 0.7, -2.5])
def test_calibration_round_trip(sign: int, offset: float) -> None:
    cal = Calibration(sign, offset)
    for q in (-1.3, -0.2, 0.0, 0.9, 3.0):
        ticks = cal.rad_to_ticks(q)
        assert abs(cal.ticks_to_rad(ticks) - q) <= math.pi / 4096 + 1e-12
    assert Calibration(1, 0.0).rad_to_ticks(0.0) == 2048  # servo 0 rad = tick 2048 (config convention)
    assert cal.ticks_to_rad(2048 + round(offset / (2 * math.pi / 4096))) == pytest.approx(0.0, abs=1e-3)


def test_velocity_units() -> None:
    # 1 unit = 0.229 rev/min = 0.02398 rad/s
    assert Calibration().vel_to_rad_s(1) == pytest.approx(0.229 * 2 * math.pi / 60)
    assert Calibration(-1).vel_to_rad_s(100) == pytest.approx(-2.398, rel=1e-3)
    assert rad_s_to_vel_units(6.0) == 250


def test_models_from_emanual() -> None:
    assert {n: m.number for n, m in MODELS.items()} == {
        "XM430-W350": 1020, "XM430-W210": 1030, "XH430-W350": 1000, "XH430-W210": 1010, "XL430-W250": 1060}
    xl = model_by_name("xl430-w250")
    assert not xl.has_current and "present_load" in xl.items and "current_limit" not in xl.items
    assert MODELS["XH430-W350"].current_limit_max == 648 and MODELS["XM430-W350"].current_limit_max == 1193
    assert MODELS["XM430-W210"].item("present_position").address == 132
    assert MODELS["XM430-W210"].item("goal_position").signed
    assert model_name(1234) == "model 1234"
    with pytest.raises(KeyError, match="supported"):
        model_by_name("AX-12")


def test_indirect_map_covers_state_block() -> None:
    assert STATE_BLOCK_SIZE == 14
    assert INDIRECT_MAP == (126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 70, 144, 145, 146)
    assert describe_hw_error(0x24) == ["overheating", "overload"]


def test_reply_timeout_is_sized_for_a_1ms_latency_timer() -> None:
    from dynamixel_sdk import port_handler as sdk_port

    from robosac.hal.port import LowLatencyPortHandler

    ph = LowLatencyPortHandler("/dev/null", latency_ms=1.0, margin_ms=2.0)
    ph.tx_time_per_byte = 0.01  # 1 Mbps, 10 bits per byte, in ms
    ph.setPacketTimeout(300)  # what syncReadTx asks for with 12 servos x 14 bytes
    assert ph.packet_timeout == pytest.approx(3.0 + 2.0 + 2.0)
    assert sdk_port.LATENCY_TIMER == 16  # the SDK's process-wide constant is left alone
