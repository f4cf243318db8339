"""End to end through the real dynamixel_sdk (PortHandler / PacketHandler / group helpers)."""

from __future__ import annotations

import time

import pytest
from dynamixel_sdk import (
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupBulkWrite,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from sim.dxl import ServoChain, ServoSpec

IDS = (1, 2, 3, 4)


def _open(port: str, baud: int = 1_000_000) -> PortHandler:
    p = PortHandler(port)
    assert p.openPort()
    assert p.setBaudRate(baud)
    return p


@pytest.fixture
def chain():
    specs = [ServoSpec(id=i, model=m, eeprom={"return_delay_time": 0}) for i, m in zip(IDS, ("XM430-W350", "XM430-W210", "XH430-W350", "XL430-W250"))]
    with ServoChain(specs, reboot_s=0.02) as c:
        yield c


@pytest.fixture
def sdk(chain):
    port = _open(chain.port)
    yield port, PacketHandler(2.0)
    port.closePort()


def test_ping_scan(sdk) -> None:
    port, ph = sdk
    assert [ph.ping(port, i)[0] for i in IDS] == [1020, 1030, 1000, 1060]
    assert ph.ping(port, 9)[1] == COMM_RX_TIMEOUT


def test_broadcast_ping(sdk) -> None:
    port, ph = sdk
    found, res = ph.broadcastPing(port)
    assert res == COMM_SUCCESS
    assert found == {1: [1020, 46], 2: [1030, 46], 3: [1000, 46], 4: [1060, 46]}


def test_read_write_items(sdk) -> None:
    port, ph = sdk
    assert ph.write1ByteTxRx(port, 1, 65, 1) == (COMM_SUCCESS, 0)
    assert ph.read1ByteTxRx(port, 1, 65) == (1, COMM_SUCCESS, 0)
    assert ph.write2ByteTxRx(port, 1, 84, 640) == (COMM_SUCCESS, 0)
    assert ph.read2ByteTxRx(port, 1, 84) == (640, COMM_SUCCESS, 0)
    assert ph.write4ByteTxRx(port, 1, 20, (-100) & 0xFFFFFFFF) == (COMM_SUCCESS, 0)
    assert ph.read4ByteTxRx(port, 1, 20) == ((-100) & 0xFFFFFFFF, COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, 1, 64, 1) == (COMM_SUCCESS, 0)
    comm, err = ph.write1ByteTxRx(port, 1, 11, 4)
    assert comm == COMM_SUCCESS and err == 7  # access error: EEPROM while torque on
    assert "access" in ph.getRxPacketError(err).lower() or err == 7


def test_sync_read_fast_sync_read_sync_write(chain, sdk) -> None:
    port, ph = sdk
    sw = GroupSyncWrite(port, ph, 64, 1)
    for i in IDS:
        sw.addParam(i, [1])
    assert sw.txPacket() == COMM_SUCCESS
    goals = {1: 2100, 2: 2000, 3: 2148, 4: 1948}
    sw = GroupSyncWrite(port, ph, 116, 4)
    for i, g in goals.items():
        sw.addParam(i, list(g.to_bytes(4, "little")))
    assert sw.txPacket() == COMM_SUCCESS
    time.sleep(0.3)
    sr = GroupSyncRead(port, ph, 126, 10)
    for i in IDS:
        sr.addParam(i)
    for read in (sr.txRxPacket, sr.fastSyncRead):
        assert read() == COMM_SUCCESS
        for i in IDS:
            assert sr.isAvailable(i, 132, 4)
            assert abs(sr.getData(i, 132, 4) - goals[i]) < 5
    assert chain.stats()["instructions"]["0x8A"] == 1


def test_bulk_read_fast_bulk_read_bulk_write(chain, sdk) -> None:
    port, ph = sdk
    bw = GroupBulkWrite(port, ph)
    bw.addParam(1, 65, 1, [1])
    bw.addParam(2, 84, 2, [0x20, 0x03])
    assert bw.txPacket() == COMM_SUCCESS
    br = GroupBulkRead(port, ph)
    br.addParam(1, 65, 1)
    br.addParam(2, 84, 2)
    br.addParam(3, 132, 4)
    br.addParam(4, 144, 2)
    for read in (br.txRxPacket, br.fastBulkRead):
        assert read() == COMM_SUCCESS
        assert br.getData(1, 65, 1) == 1
        assert br.getData(2, 84, 2) == 800
        assert br.getData(3, 132, 4) == 2048
        assert br.getData(4, 144, 2) == 111  # XL430: 11.1 V


def test_reboot_clear_factory_reset_reg_write(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.raise_hardware_error(2, "overload")
    assert ph.read1ByteTxRx(port, 2, 70) == (0x20, COMM_SUCCESS, 0x80)
    assert ph.reboot(port, 2) == (COMM_SUCCESS, 0x80)
    time.sleep(0.04)
    assert ph.read1ByteTxRx(port, 2, 70) == (0, COMM_SUCCESS, 0)
    assert ph.clearMultiTurn(port, 2) == (COMM_SUCCESS, 0)
    assert ph.regWriteTxRx(port, 3, 65, 1, [1]) == (COMM_SUCCESS, 0)
    assert ph.action(port, 0xFE) == COMM_SUCCESS
    time.sleep(0.01)
    assert ph.read1ByteTxRx(port, 3, 65)[0] == 1
    assert ph.write1ByteTxRx(port, 4, 31, 60) == (COMM_SUCCESS, 0)
    assert ph.factoryReset(port, 4, 0x02) == (COMM_SUCCESS, 0)
    time.sleep(0.04)
    assert ph.read1ByteTxRx(port, 4, 31) == (80, COMM_SUCCESS, 0)


def test_old_firmware_fast_sync_read_fails_like_real_servo() -> None:
    specs = [ServoSpec(id=1, firmware=46, eeprom={"return_delay_time": 0}), ServoSpec(id=2, firmware=44, eeprom={"return_delay_time": 0})]
    with ServoChain(specs) as c:
        port = _open(c.port)
        ph = PacketHandler(2.0)
        try:
            sr = GroupSyncRead(port, ph, 132, 4)
            sr.addParam(1)
            sr.addParam(2)
            assert sr.fastSyncRead() != COMM_SUCCESS
            assert not sr.isAvailable(2, 132, 4)
            assert sr.txRxPacket() == COMM_SUCCESS  # plain sync read still works
            assert ph.ping(port, 2)[0] == 1020
        finally:
            port.closePort()


def test_servo_at_other_baud_is_not_heard() -> None:
    specs = [ServoSpec(id=1, baud=1_000_000), ServoSpec(id=2, baud=57600)]
    with ServoChain(specs) as c:
        port = _open(c.port, 1_000_000)
        ph = PacketHandler(2.0)
        try:
            assert ph.ping(port, 1)[1] == COMM_SUCCESS
            assert ph.ping(port, 2)[1] == COMM_RX_TIMEOUT
            assert port.setBaudRate(57600)
            assert ph.ping(port, 2)[1] == COMM_SUCCESS
            assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
        finally:
            port.closePort()


def test_from_config_and_counters() -> None:
    from pathlib import Path

    from robosac.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "hardware_configs" / "quadruped.yaml")
    with ServoChain.from_config(cfg) as c:
        port = _open(c.port, cfg.bus.baud)
        ph = PacketHandler(2.0)
        try:
            assert c.ids() == list(cfg.ids)
            sr = GroupSyncRead(port, ph, 126, 10)
            for i in cfg.ids:
                sr.addParam(i)
            c.reset_counters()
            assert sr.fastSyncRead() == COMM_SUCCESS
            # The emulator counts a reply's bytes after writing them: the host can have the whole
            # reply before the count lands, so wait for it (this raced about once in ten runs).
            want_tx = 8 + len(cfg.ids) * (10 + 4)
            deadline = time.monotonic() + 2.0
            while c.stats()["tx_bytes"] < want_tx and time.monotonic() < deadline:
                time.sleep(0.001)
            st = c.stats()
            assert st["rx_bytes"] == 14 + len(cfg.ids)  # 10 header/len/inst/crc + 4 params + ids
            assert st["tx_bytes"] == 8 + len(cfg.ids) * (10 + 4) + 0  # header..inst, parts
            # Each joint starts mid-range: knee (0..pi/2) at pi/4 -> 2048 + 512.
            knee = cfg.servo("fr_knee")
            assert abs(sr.getData(knee.id, 132, 4) - 2560) <= 1
        finally:
            port.closePort()


def test_chain_audits_goals_against_the_config_limits() -> None:
    """The twin's own audit of what reaches the servos: goals outside the config's joint range or
    current cap are counted per servo, goals inside are not (the emulated firmware accepts both in
    current-based position mode, as a real XM430 does)."""
    import math
    from pathlib import Path

    from robosac.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "hardware_configs" / "claw.yaml")
    mid = cfg.servo("f0_middle")  # mode 5, +-1.0472 rad, 1.2 A
    tick = lambda rad: int(round(2048 + rad * 4096 / (2 * math.pi)))  # noqa: E731
    with ServoChain.from_config(cfg) as c:
        port = _open(c.port, cfg.bus.baud)
        ph = PacketHandler(2.0)
        try:
            for ticks in (tick(mid.limits.max_rad), tick(mid.limits.min_rad), tick(0.5)):
                assert ph.write4ByteTxRx(port, mid.id, 116, ticks)[1] == COMM_SUCCESS
            assert ph.write2ByteTxRx(port, mid.id, 102, 446)[1] == COMM_SUCCESS  # 1.2 A
            assert c.stats()["limit_violations"] == {}
            assert ph.write4ByteTxRx(port, mid.id, 116, tick(mid.limits.max_rad + 0.05))[1] == COMM_SUCCESS
            assert ph.write4ByteTxRx(port, mid.id, 116, tick(mid.limits.min_rad - 0.05))[1] == COMM_SUCCESS
            assert ph.write2ByteTxRx(port, mid.id, 102, 600)[1] == COMM_SUCCESS  # 1.6 A
            assert c.stats()["limit_violations"] == {mid.id: {"goal_position": 2, "goal_current": 1}}
        finally:
            port.closePort()
