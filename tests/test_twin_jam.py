"""The "jam" fault: a servo whose joint cannot move, on the first-order emulator and on the MuJoCo
twin, through the real dynamixel_sdk; `robosac fault jam/unjam/status` against a running chain."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, PacketHandler, PortHandler

from _emu_util import position_mode_claw
from sim.dxl import ServoChain, ServoSpec, send_control
from sim.dxl.physics import JointState, JointTarget

ROOT = Path(__file__).resolve().parents[1]
ADDR_TORQUE, ADDR_PROFILE_VELOCITY, ADDR_GOAL, ADDR_CURRENT, ADDR_PRESENT = 64, 112, 116, 126, 132
RAD_PER_TICK = 2 * math.pi / 4096


def _txrx(fn, port, *args, tries: int = 3):
    """An SDK call retried on a status timeout (a loaded 2-core machine can deschedule the host
    past the SDK's 34 ms wait; see tests/test_twin_e2e.py). Returns the SDK's tuple."""
    for _ in range(tries):
        out = fn(port, *args)
        res = out[-2] if len(out) == 3 else out[0]
        if res != COMM_RX_TIMEOUT:
            return out
        time.sleep(0.05)
        port.clearPort()
    return out


def _write(port, ph, dxl_id: int, addr: int, value: int, size: int) -> None:
    fn = {1: ph.write1ByteTxRx, 4: ph.write4ByteTxRx}[size]
    res, err = _txrx(fn, port, dxl_id, addr, value & ((1 << (8 * size)) - 1))
    assert res == COMM_SUCCESS and err == 0, (dxl_id, addr, ph.getTxRxResult(res), err)


def _read_signed(port, ph, dxl_id: int, addr: int, size: int) -> int:
    fn = {2: ph.read2ByteTxRx, 4: ph.read4ByteTxRx}[size]
    val, res, err = _txrx(fn, port, dxl_id, addr)
    assert res == COMM_SUCCESS and err & 0x7F == 0, (dxl_id, addr, ph.getTxRxResult(res), err)
    return int.from_bytes(val.to_bytes(size, "little"), "little", signed=True)


def _open(path: str, baud: int = 1_000_000):
    port = PortHandler(path)
    assert port.openPort() and port.setBaudRate(baud)
    return port, PacketHandler(2.0)


# ---------------------------------------------------------------- (a) first-order joints


@pytest.fixture
def chain():
    specs = [ServoSpec(id=i, eeprom={"return_delay_time": 0}) for i in (1, 2, 3)]
    with ServoChain(specs) as c:
        yield c


def test_jam_first_order_holds_then_expires(chain) -> None:
    port, ph = _open(chain.port)
    try:
        start = {i: _read_signed(port, ph, i, ADDR_PRESENT, 4) for i in (2, 3)}
        for i in (2, 3):
            _write(port, ph, i, ADDR_TORQUE, 1, 1)
        chain.faults.jam(2, seconds=0.8)
        assert set(chain.faults.jammed()) == {2}
        t_jam = time.monotonic()
        goal = {i: start[i] + 1000 for i in (2, 3)}  # 1.53 rad: ~0.35 s at the W350's no-load speed
        for i in (2, 3):
            _write(port, ph, i, ADDR_GOAL, goal[i], 4)
        # During the jam: 2 stands still (and pushes: its current rises), 3 goes to its goal.
        seen2 = []
        while time.monotonic() - t_jam < 0.6:
            seen2.append(_read_signed(port, ph, 2, ADDR_PRESENT, 4))
            time.sleep(0.02)
        assert len(seen2) >= 5
        assert max(abs(p - start[2]) for p in seen2) <= 2, seen2
        assert abs(_read_signed(port, ph, 3, ADDR_PRESENT, 4) - goal[3]) <= 5
        assert _read_signed(port, ph, 2, ADDR_CURRENT, 2) > 100  # > 0.27 A holding against the jam
        assert chain.faults.pending()[2]["jammed"] is True
        # The jam ends by itself; then 2 reaches its goal too.
        time.sleep(max(0.0, 0.8 - (time.monotonic() - t_jam)) + 0.6)
        assert chain.faults.jammed() == {}
        assert abs(_read_signed(port, ph, 2, ADDR_PRESENT, 4) - goal[2]) <= 5
        assert chain.stats()["internal_errors"] == 0
    finally:
        port.closePort()


def test_jam_until_unjam_and_clear(chain) -> None:
    port, ph = _open(chain.port)
    try:
        p0 = _read_signed(port, ph, 1, ADDR_PRESENT, 4)
        _write(port, ph, 1, ADDR_TORQUE, 1, 1)
        chain.faults.jam(1)  # no duration: until unjammed
        assert chain.faults.jammed() == {1: None}
        _write(port, ph, 1, ADDR_GOAL, p0 - 600, 4)
        time.sleep(0.4)
        assert abs(_read_signed(port, ph, 1, ADDR_PRESENT, 4) - p0) <= 2
        assert ph.ping(port, 1)[1] == COMM_SUCCESS  # a jammed servo still answers
        chain.faults.unjam(1)
        assert chain.faults.jammed() == {}
        time.sleep(0.4)
        assert abs(_read_signed(port, ph, 1, ADDR_PRESENT, 4) - (p0 - 600)) <= 5
        # clear() frees a jam too.
        chain.faults.jam(1, seconds=0)  # 0 = until cleared
        _write(port, ph, 1, ADDR_GOAL, p0, 4)
        time.sleep(0.3)
        assert abs(_read_signed(port, ph, 1, ADDR_PRESENT, 4) - (p0 - 600)) <= 2
        chain.faults.clear()
        assert chain.faults.jammed() == {}
        time.sleep(0.4)
        assert abs(_read_signed(port, ph, 1, ADDR_PRESENT, 4) - p0) <= 5
    finally:
        port.closePort()


def test_jam_rejects_bad_input() -> None:
    class NoJam:
        def set_torque(self, on: bool) -> None:
            pass

        def set_target(self, target: JointTarget) -> None:
            pass

        def read(self) -> JointState:
            return JointState(math.pi, 0.0, 0.0)

    c = ServoChain([ServoSpec(id=1), ServoSpec(id=2, joint=NoJam())])
    with pytest.raises(ValueError, match="cannot be jammed"):
        c.faults.jam(2)
    with pytest.raises(KeyError):
        c.faults.jam(9)
    with pytest.raises(ValueError):
        c.faults.jam(1, seconds=-1)
    assert c.faults.jammed() == {}
    c.faults.unjam(2)  # no jam hook, nothing jammed: a no-op
    c.faults.clear()  # servos without the hook are skipped
    assert c.faults.command({"cmd": "jam", "id": 2})["ok"] is False
    assert c.faults.command({"cmd": "jam", "id": 1, "seconds": 5})["ok"] is True
    assert 1 in c.faults.jammed() and 4.0 < c.faults.jammed()[1] <= 5.0
    assert c.faults.command({"cmd": "unjam", "id": 1}) == {"ok": True}
    assert c.faults.jammed() == {}


# ---------------------------------------------------------------- (b) the MuJoCo twin


def test_jam_mujoco_finger_holds_then_reaches_goal() -> None:
    pytest.importorskip("mujoco")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from sim.mujoco_sim import MujocoSim
    from sim.realtime import RealtimeTwin

    cfg = position_mode_claw()  # full stall torque: the jammed finger's current climbs past 1.5 A
    sc = cfg.servo("f0_middle")
    assert sc.id == 2 and sc.calibration.sign == 1 and sc.calibration.offset_rad == 0.0
    sim = MujocoSim(cfg, torque=False)
    twin = RealtimeTwin(sim)
    chain = ServoChain.from_config(cfg, joints=twin.joint_models())
    twin.start()
    chain.start()
    port, ph = _open(chain.port, cfg.bus.baud)
    try:
        _write(port, ph, 2, ADDR_TORQUE, 1, 1)
        time.sleep(0.2)  # settle where it is
        p0 = _read_signed(port, ph, 2, ADDR_PRESENT, 4)
        q0 = (p0 - 2048) * RAD_PER_TICK  # joint rad (sign +1, offset 0)
        chain.faults.jam(2, seconds=1.0)
        t_jam = time.monotonic()
        goal = p0 + int(round(0.5 / RAD_PER_TICK))
        _write(port, ph, 2, ADDR_GOAL, goal, 4)
        seen, currents = [], []
        while time.monotonic() - t_jam < 0.8:
            seen.append((_read_signed(port, ph, 2, ADDR_PRESENT, 4) - 2048) * RAD_PER_TICK)
            currents.append(_read_signed(port, ph, 2, ADDR_CURRENT, 2) * 2.69e-3)
            time.sleep(0.03)
        gt = twin.ground_truth()
        truth = gt["joints"]["f0_middle"]
        assert list(gt["jammed"]) == ["f0_middle"] and 0.0 < gt["jammed"]["f0_middle"] < 0.5, gt["jammed"]
        assert len(seen) >= 5
        assert max(abs(q - q0) for q in seen) < 0.02, (q0, seen)
        # The reported value is the simulated joint's real position (not a held copy).
        assert abs(truth - q0) < 0.02 and abs(truth - seen[-1]) < 0.01, (truth, seen[-1])
        # The drive pushes against the stop: current near stall (W210: 2.3 A), not a small figure.
        assert max(currents[len(currents) // 2 :]) > 1.5, currents
        assert sim.jammed() and chain.faults.jammed()
        # After the jam (1 s of simulated time) the finger goes to its goal.
        deadline = t_jam + 3.0
        q = seen[-1]
        while time.monotonic() < deadline:
            q = (_read_signed(port, ph, 2, ADDR_PRESENT, 4) - 2048) * RAD_PER_TICK
            if time.monotonic() - t_jam > 1.2 and abs(q - (q0 + 0.5)) < 0.02:
                break
            time.sleep(0.05)
        assert abs(q - (q0 + 0.5)) < 0.02, (q0, q)
        with twin.lock:
            assert sim.jammed() == {}
            j = sim.model.joint("f0_middle").id
            assert sim.model.jnt_range[j].tolist() == pytest.approx([-1.0472, 1.0472])
        assert chain.faults.jammed() == {}
        assert chain.stats()["internal_errors"] == 0
    finally:
        port.closePort()
        chain.stop()
        twin.stop()
        sim.close()


def test_mujoco_sim_jam_is_physical_and_restored() -> None:
    """MujocoSim alone (no real time): the clamp holds against the actuator and is undone exactly."""
    pytest.importorskip("mujoco")
    from sim.mujoco_sim import MujocoSim

    sim = MujocoSim(position_mode_claw(), torque=True)
    i = sim.joint_names.index("f0_middle")
    j = sim.model.joint("f0_middle").id
    before = (sim.model.jnt_range[j].copy(), int(sim.model.jnt_limited[j]), sim.model.jnt_solref[j].copy(), sim.model.jnt_solimp[j].copy())
    sim.step(50)
    q0 = sim.read_joint(i)[0]
    sim.jam(i, seconds=0.5)
    sim.set_target(i, q0 + 0.5)  # (-0.5 would touch the valve)
    sim.step_for(0.45)
    assert abs(sim.read_joint(i)[0] - q0) < 0.005
    assert abs(sim.read_joint(i)[2]) > 1.5  # stalled drive
    sim.step_for(0.1)  # past 0.5 s: released at the step boundary
    assert sim.jammed() == {}
    after = (sim.model.jnt_range[j], int(sim.model.jnt_limited[j]), sim.model.jnt_solref[j], sim.model.jnt_solimp[j])
    assert after[0].tolist() == before[0].tolist() and after[1] == before[1]
    assert after[2].tolist() == before[2].tolist() and after[3].tolist() == before[3].tolist()
    sim.step_for(0.5)
    assert abs(sim.read_joint(i)[0] - (q0 + 0.5)) < 0.02
    # reset() releases a jam that has no end.
    sim.jam(i)
    assert sim.jammed() == {i: None}
    sim.reset()
    assert sim.jammed() == {} and sim.model.jnt_range[j].tolist() == before[0].tolist()
    sim.close()


# ---------------------------------------------------------------- (c) `robosac fault` round trip


def _fault(control: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robosac.cli", "fault", "--control", control, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )


def test_fault_cli_jam_status_unjam(chain) -> None:
    ctl = chain.control_path
    # 2 s: long enough to outlast the CLI's own exit on a busy 2-core machine.
    out = _fault(ctl, "jam", "2", "--seconds", "2.0")
    t_done = time.monotonic()
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    st = send_control(ctl, {"cmd": "status"})
    assert time.monotonic() - t_done < 1.0, "status came too late to see a 2 s jam"
    assert st["ok"] and set(st["jammed"]) == {"2"} and 0.0 < st["jammed"]["2"] <= 2.0, st["jammed"]
    # `robosac fault status` itself prints it (a jam with no end, so process start-up cannot race it).
    out = _fault(ctl, "jam", "3")
    assert out.returncode == 0, out.stderr
    out = _fault(ctl, "status")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jammed"]["3"] is None
    time.sleep(max(0.0, 2.05 - (time.monotonic() - t_done)))
    assert send_control(ctl, {"cmd": "status"})["jammed"] == {"3": None}  # 2's jam ended by itself
    out = _fault(ctl, "unjam", "3")
    assert out.returncode == 0, out.stderr
    assert send_control(ctl, {"cmd": "status"})["jammed"] == {}
    out = _fault(ctl, "jam", "7")
    assert out.returncode == 1 and "no servo with id 7" in out.stderr
