"""Chain-level behaviour: pacing at the baud rate, the JointModel interface, counters."""

from __future__ import annotations

import math
import statistics
import time

from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

from sim.dxl import JointModel, JointState, JointTarget, ServoChain, ServoSpec


def _open(path: str) -> PortHandler:
    p = PortHandler(path)
    assert p.openPort() and p.setBaudRate(1_000_000)
    return p


def test_pacing_makes_wire_time_realistic() -> None:
    ids = range(1, 13)
    specs = [ServoSpec(id=i, eeprom={"return_delay_time": 0}) for i in ids]
    with ServoChain(specs, pace=True) as c:
        port = _open(c.port)
        try:
            sr = GroupSyncRead(port, PacketHandler(2.0), 126, 10)
            for i in ids:
                sr.addParam(i)
            times = []
            for _ in range(15):
                t = time.perf_counter()
                assert sr.fastSyncRead() == COMM_SUCCESS
                times.append(time.perf_counter() - t)
            # 26 B instruction + 176 B reply at 10 bits/byte, 1 Mbps = 2.02 ms on the wire.
            assert statistics.median(times) >= 0.00202
        finally:
            port.closePort()


class RecordingJoint:
    """A minimal JointModel: jumps to the target, reports a fixed current."""

    def __init__(self) -> None:
        self.pos = math.pi
        self.torque = False
        self.targets: list[JointTarget] = []

    def set_torque(self, on: bool) -> None:
        self.torque = on

    def set_target(self, target: JointTarget) -> None:
        self.targets.append(target)
        if self.torque:
            self.pos = target.position_rad

    def read(self) -> JointState:
        return JointState(self.pos, 0.0, 0.269)


def test_custom_joint_model_and_units() -> None:
    joint = RecordingJoint()
    assert isinstance(joint, JointModel)
    with ServoChain([ServoSpec(id=5, model="XM430-W350", joint=joint, eeprom={"return_delay_time": 0})]) as c:
        port = _open(c.port)
        ph = PacketHandler(2.0)
        try:
            assert ph.write4ByteTxRx(port, 5, 112, 100)[0] == COMM_SUCCESS  # profile velocity
            assert ph.write1ByteTxRx(port, 5, 64, 1)[0] == COMM_SUCCESS
            sw = GroupSyncWrite(port, ph, 116, 4)
            sw.addParam(5, list((3072).to_bytes(4, "little")))
            assert sw.txPacket() == COMM_SUCCESS
            time.sleep(0.02)
            t = joint.targets[-1]
            assert abs(t.position_rad - 1.5 * math.pi) < 1e-9  # tick 3072 = 270 deg
            assert abs(t.max_velocity_rad_s - 100 * 0.229 * 2 * math.pi / 60) < 1e-9
            assert abs(t.max_current_a - 1193 * 0.00269) < 1e-9
            assert ph.read4ByteTxRx(port, 5, 132)[0] == 3072
            assert ph.read2ByteTxRx(port, 5, 126)[0] == 100  # 0.269 A / 2.69 mA
            # Drive Mode reverse flips the sign of what the joint sees.
            assert ph.write1ByteTxRx(port, 5, 64, 0)[0] == COMM_SUCCESS
            assert ph.write1ByteTxRx(port, 5, 10, 1)[0] == COMM_SUCCESS
            pos = ph.read4ByteTxRx(port, 5, 132)[0]
            assert pos == (-3072) & 0xFFFFFFFF
        finally:
            port.closePort()


def test_usb_latency_timer_model() -> None:
    specs = [ServoSpec(id=i, eeprom={"return_delay_time": 0}) for i in (1, 2)]
    with ServoChain(specs, usb_latency_ms=8) as c:
        port = _open(c.port)
        ph = PacketHandler(2.0)
        try:
            t = time.perf_counter()
            assert ph.ping(port, 1)[1] == COMM_SUCCESS  # 14-byte reply: waits for the timer
            assert time.perf_counter() - t >= 0.008
            sr = GroupSyncRead(port, ph, 126, 10)
            sr.addParam(1)
            sr.addParam(2)
            assert sr.txRxPacket() == COMM_SUCCESS
            assert c.stats()["tx_packets"] == 3
        finally:
            port.closePort()
