"""Every fault injection, through the real SDK; the control socket; `robosac twin` / `robosac fault`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
from dynamixel_sdk import COMM_RX_CORRUPT, COMM_RX_TIMEOUT, COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

from sim.dxl import ServoChain, ServoSpec, send_control

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def chain():
    specs = [ServoSpec(id=i, eeprom={"return_delay_time": 0}) for i in (1, 2, 3)]
    with ServoChain(specs) as c:
        yield c


@pytest.fixture
def sdk(chain):
    port = PortHandler(chain.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    yield port, PacketHandler(2.0)
    port.closePort()


def _sync(port, ph, ids=(1, 2, 3), fast=False):
    sr = GroupSyncRead(port, ph, 132, 4)
    for i in ids:
        sr.addParam(i)
    return (sr.fastSyncRead() if fast else sr.txRxPacket()), sr


def test_drop_replies(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.drop_replies(2, 2)
    assert ph.write1ByteTxRx(port, 2, 65, 1)[0] == COMM_RX_TIMEOUT  # executed, reply lost
    assert _sync(port, ph, fast=True)[0] != COMM_SUCCESS  # fast read truncated at servo 2
    assert ph.read1ByteTxRx(port, 2, 65) == (1, COMM_SUCCESS, 0)  # count used up
    assert chain.faults.injected["drop"] == 2


def test_corrupt_crc(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.corrupt_crc(1, 1)
    assert ph.ping(port, 1)[1] == COMM_RX_CORRUPT
    chain.faults.corrupt_crc(2, 1)
    assert _sync(port, ph, fast=True)[0] == COMM_RX_CORRUPT  # middle part corrupted: packet CRC fails
    assert ph.ping(port, 1)[1] == COMM_SUCCESS


def test_delay_replies(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.delay_replies(3, 0.01, 1)
    t = time.perf_counter()
    assert ph.ping(port, 3)[1] == COMM_SUCCESS
    assert time.perf_counter() - t >= 0.01
    chain.faults.delay_replies(3, 0.2, 1)  # longer than the SDK's ~34 ms timeout
    assert ph.ping(port, 3)[1] == COMM_RX_TIMEOUT
    time.sleep(0.25)
    assert ph.ping(port, 3)[1] == COMM_SUCCESS


def test_raise_hardware_error(chain, sdk) -> None:
    port, ph = sdk
    assert ph.write1ByteTxRx(port, 1, 64, 1) == (COMM_SUCCESS, 0)
    chain.faults.raise_hardware_error(1, "overload,electrical_shock")
    val, comm, err = ph.read1ByteTxRx(port, 1, 70)
    assert (val, comm, err) == (0x30, COMM_SUCCESS, 0x80)
    assert ph.read1ByteTxRx(port, 1, 64)[0] == 0  # Shutdown turned torque off
    with pytest.raises(ValueError):
        chain.faults.raise_hardware_error(1, "melted")


def test_silence_and_unsilence(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.silence(2)
    assert ph.ping(port, 2)[1] == COMM_RX_TIMEOUT
    assert ph.write1ByteTxRx(port, 2, 65, 1)[0] == COMM_RX_TIMEOUT  # not heard either
    assert _sync(port, ph)[0] == COMM_RX_TIMEOUT  # the SDK fails the whole sync read
    assert _sync(port, ph, ids=(1, 3))[0] == COMM_SUCCESS
    chain.faults.unsilence(2)
    assert ph.read1ByteTxRx(port, 2, 65) == (0, COMM_SUCCESS, 0)


def test_unplug_and_replug_same_path(chain) -> None:
    path = chain.port
    ser = serial.Serial(path, 1_000_000, timeout=0)
    first_pty = chain.pty_path
    chain.faults.unplug()
    assert not os.path.exists(path)  # the port vanished
    with pytest.raises(serial.SerialException):
        for _ in range(5):
            ser.write(b"\xff" * 16)
            ser.read(1)
    ser.close()
    assert chain.faults.replug() == path
    assert os.path.exists(path)
    port = PortHandler(path)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        assert PacketHandler(2.0).ping(port, 1)[1] == COMM_SUCCESS
    finally:
        port.closePort()
    assert chain.pty_path != first_pty or chain.pty_path is not None


def test_clear_and_errors(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.silence(1)
    chain.faults.drop_replies(2, 5)
    chain.faults.clear()
    assert ph.ping(port, 1)[1] == COMM_SUCCESS and ph.ping(port, 2)[1] == COMM_SUCCESS
    with pytest.raises(KeyError):
        chain.faults.silence(42)


def test_control_socket(chain, sdk) -> None:
    port, ph = sdk
    assert send_control(chain.control_path, {"cmd": "silence", "id": 3}) == {"ok": True}
    assert ph.ping(port, 3)[1] == COMM_RX_TIMEOUT
    assert send_control(chain.control_path, {"cmd": "unsilence", "id": 3})["ok"]
    assert send_control(chain.control_path, {"cmd": "raise_hardware_error", "id": 3, "bits": "encoder"})["ok"]
    assert ph.read1ByteTxRx(port, 3, 70)[0] == 0x08
    bad = send_control(chain.control_path, {"cmd": "explode"})
    assert not bad["ok"] and "drop_replies" in bad["error"]
    st = send_control(chain.control_path, {"cmd": "status"})
    assert st["ok"] and st["rx_bytes"] > 0


def _robosac(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "robosac.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def test_twin_cli_serves_config_and_stops_on_sigterm() -> None:
    from robosac.config import load_config

    cfg = load_config(ROOT / "hardware_configs" / "claw.yaml")
    proc = _robosac("twin", "hardware_configs/claw.yaml", "--physics", "none")
    try:
        line = proc.stdout.readline()
        assert line.startswith("serial: "), line + proc.stderr.read()
        path = line.split(": ", 1)[1].strip()
        port = PortHandler(path)
        assert port.openPort() and port.setBaudRate(cfg.bus.baud)
        ph = PacketHandler(2.0)
        try:
            for s in cfg.servos:
                model, comm, _ = ph.ping(port, s.id)
                assert comm == COMM_SUCCESS, s.id
            # `robosac fault` against the running twin.
            out = subprocess.run(
                [sys.executable, "-m", "robosac.cli", "fault", "--port", path, "silence", "10"],
                cwd=ROOT, capture_output=True, text=True, timeout=20,
            )
            assert out.returncode == 0, out.stderr
            assert ph.ping(port, 10)[1] == COMM_RX_TIMEOUT
            out = subprocess.run(
                [sys.executable, "-m", "robosac.cli", "fault", "--port", path, "hw-error", "3", "bogus"],
                cwd=ROOT, capture_output=True, text=True, timeout=20,
            )
            assert out.returncode == 1 and "bogus" in out.stderr
        finally:
            port.closePort()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_twin_cli_rejects_unknown_physics() -> None:
    proc = _robosac("twin", "hardware_configs/claw.yaml", "--physics", "bullet")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "mujoco" in err and "none" in err


def test_persistent_hardware_error_survives_reboot(chain, sdk) -> None:
    port, ph = sdk
    chain.faults.raise_hardware_error(2, "overload", persistent=True)
    assert ph.reboot(port, 2)[0] == COMM_SUCCESS
    time.sleep(0.1)
    assert ph.read1ByteTxRx(port, 2, 70) == (0x20, COMM_SUCCESS, 0x80)
    chain.faults.clear()
    ph.reboot(port, 2)
    time.sleep(0.1)
    assert ph.read1ByteTxRx(port, 2, 70) == (0, COMM_SUCCESS, 0)


def test_staged_conditions_via_set_item(chain, sdk) -> None:
    port, ph = sdk
    chain.set_item(1, "present_temperature", 78)
    chain.set_item(1, "present_input_voltage", 95)
    assert ph.read1ByteTxRx(port, 1, 146)[0] == 78
    assert ph.read2ByteTxRx(port, 1, 144)[0] == 95
    assert chain.get_item(1, "present_position") == 2048


def test_brownout_and_overheating_from_staged_values(chain, sdk) -> None:
    port, ph = sdk
    assert ph.write1ByteTxRx(port, 3, 64, 1) == (COMM_SUCCESS, 0)
    chain.set_item(3, "present_input_voltage", 80)  # below Min Voltage Limit (95 = 9.5 V)
    time.sleep(0.05)
    assert ph.read1ByteTxRx(port, 3, 70)[0] == 0x01
    assert ph.read1ByteTxRx(port, 3, 64)[0] == 1  # input voltage is not in the default Shutdown
    chain.set_item(3, "present_temperature", 85)  # above Temperature Limit (80)
    time.sleep(0.05)
    assert ph.read1ByteTxRx(port, 3, 70)[0] == 0x05
    assert ph.read1ByteTxRx(port, 3, 64)[0] == 0  # overheating is: torque off
    assert chain.stats()["internal_errors"] == 0


def test_brownout_persists_across_reboot_until_supply_recovers(chain, sdk) -> None:
    port, ph = sdk
    chain.set_item(1, "present_input_voltage", 80)
    time.sleep(0.05)
    ph.reboot(port, 1)
    time.sleep(0.1)
    assert ph.read1ByteTxRx(port, 1, 70)[0] == 0x01  # still low: raised again
    chain.set_item(1, "present_input_voltage", 120)
    ph.reboot(port, 1)
    time.sleep(0.1)
    assert ph.read1ByteTxRx(port, 1, 70)[0] == 0
