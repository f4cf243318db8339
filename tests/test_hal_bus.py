"""ServoBus through the real dynamixel_sdk against the emulated chain (sim.dxl) over a pty.

No mocks: the SDK writes real bytes into a pseudo-terminal and the emulator answers byte for byte.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _emu_util import eventually
from robosac.config import load_config
from robosac.hal import (
    BusSettings,
    HardwareFault,
    JointSpec,
    PortLostError,
    ServoBus,
    ServoSilentError,
)
from robosac.hal.bench import min_cycle_bytes
from robosac.hal.control_table import INDIRECT_MAP, STATE_BLOCK_SIZE, model_by_name
from robosac.hal.units import Calibration
from sim.dxl import JointState, ServoChain, ServoSpec

ROOT = Path(__file__).resolve().parents[1]
CLAW = ROOT / "hardware_configs" / "claw.yaml"
# Reply-timeout margin for tests: the emulator shares 2 busy cores with pytest, so the 2 ms default
# (right for real servos) would add spurious retries and make exact counter checks flaky.
MARGIN = dict(margin_ms=20.0)


def _servo(chain: ServoChain, sid: int, name: str) -> int:
    with chain.lock:
        return chain.servo(sid).get(name)


def _settle(bus: ServoBus, q: np.ndarray, seconds: float = 0.4):
    t_end = time.monotonic() + seconds
    bus.cycle(q)
    while time.monotonic() < t_end:
        bus.cycle(q)
        time.sleep(0.002)
    return bus.read_state()


# ---- configure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["claw.yaml", "quadruped.yaml"])  # modes 5 + 4, and mode 3
def test_configure_writes_eeprom_only_when_different(config: str) -> None:
    cfg = load_config(ROOT / "hardware_configs" / config)
    with ServoChain.from_config(cfg) as chain:
        bus = ServoBus.from_config(cfg, port=chain.port, **MARGIN).open()
        try:
            # Factory state: Return Delay 250 (500 us); servo 1 also has torque on (EEPROM locked).
            with chain.lock:
                assert chain.servo(1).get("return_delay_time") == 250
                chain.servo(1).set("torque_enable", 1)
            written = bus.configure()
            assert "return_delay_time" in written[1] and "torque_enable" in written[1]
            assert "indirect_map" in written[1]
            for s in cfg.servos:
                assert _servo(chain, s.id, "return_delay_time") == 0
                assert _servo(chain, s.id, "operating_mode") == s.operating_mode
                assert _servo(chain, s.id, "bus_watchdog") == cfg.bus.watchdog_ms // 20
                assert _servo(chain, s.id, "shutdown") == cfg.bus.shutdown
                with chain.lock:
                    mem = chain.servo(s.id).mem
                    assert [mem[168 + 2 * k] | mem[169 + 2 * k] << 8 for k in range(STATE_BLOCK_SIZE)] == list(INDIRECT_MAP)
            for s, j in zip(cfg.servos, bus.joints):
                amps = _servo(chain, s.id, "current_limit") * 2.69e-3
                assert amps == pytest.approx(s.limits.current_a, abs=2.69e-3)
                if s.operating_mode == 3:  # the firmware's own position limits (mode 3 only)
                    assert (_servo(chain, s.id, "min_position_limit"), _servo(chain, s.id, "max_position_limit")) == j.tick_range()
                if s.operating_mode == 5:  # Goal Current caps the effort at the configured limit
                    assert _servo(chain, s.id, "goal_current") == _servo(chain, s.id, "current_limit")

            # Second pass: everything already matches -> reads only, no Write (0x03) instruction.
            writes_before = chain.stats()["instructions"].get("0x03", 0)
            eeprom_before = bus.counters.eeprom_writes
            again = bus.configure()
            assert all(v == [] for v in again.values()), again
            assert chain.stats()["instructions"].get("0x03", 0) == writes_before
            assert bus.counters.eeprom_writes == eeprom_before
        finally:
            bus.close()


def test_configure_rejects_wrong_model_and_missing_servo() -> None:
    m = model_by_name("XM430-W350")
    with ServoChain([ServoSpec(id=1, model="XH430-W350"), ServoSpec(id=2)]) as chain:
        bus = ServoBus(chain.port, 1_000_000, [JointSpec("a", 1, m)], BusSettings(**MARGIN)).open()
        with pytest.raises(Exception, match="XH430-W350"):
            bus.configure()
        bus.close()
        bus = ServoBus(chain.port, 1_000_000, [JointSpec("b", 2, m), JointSpec("c", 7, m)], BusSettings(**MARGIN)).open()
        with pytest.raises(ServoSilentError) as ei:
            bus.configure()
        assert ei.value.ids == [7]
        bus.close()


# ---- cycle --------------------------------------------------------------------------------------------


def test_cycle_tracks_goals_with_fast_sync_read_and_minimum_bytes(claw) -> None:
    cfg, chain, bus = claw
    assert bus.fast_read  # FW 46 everywhere
    n = len(cfg.servos)
    q = np.array([0.3, -0.5, 1.0, -0.3, 0.5, -1.0, 0.2, 0.0, 0.4, 0.8])
    st = _settle(bus, q)
    assert st.position.shape == (n,) and st.hardware_error.shape == (n,)
    np.testing.assert_allclose(st.position, q, atol=2 * 2 * math.pi / 4096)
    assert np.all(st.voltage == pytest.approx(12.0)) and np.all(st.temperature > 0)
    assert st.age() < 0.1 and st.recovered == ()
    # Goal registers hold exactly the calibrated ticks (the emulator's own table decides).
    for j, qi in zip(bus.joints, q):
        assert _servo(chain, j.id, "goal_position") == j.calibration.rad_to_ticks(qi)

    # One cycle = 1 fast sync read + 1 sync write, exactly the minimum bytes.
    chain.reset_counters()
    tx0, rx0 = bus.wire_bytes()
    for _ in range(20):
        bus.cycle(q)
    tx1, rx1 = bus.wire_bytes()
    eventually(lambda: chain.stats()["rx_bytes"] >= tx1 - tx0)  # the last Sync Write has no reply
    stats = chain.stats()
    assert stats["instructions"] == {"0x8A": 20, "0x83": 20}
    m = min_cycle_bytes(n, STATE_BLOCK_SIZE, fast=True)
    assert (tx1 - tx0) / 20 == m["read_request"] + m["write"] == stats["rx_bytes"] / 20
    assert (rx1 - rx0) / 20 == m["read_reply"] == stats["tx_bytes"] / 20


def test_a_reply_the_host_has_read_is_counted_before_it_resets_the_counters(claw, monkeypatch) -> None:
    """The emulator's byte counters against a host that resets them as soon as a reply arrives: the
    emulator thread, stalled just after its write (as on a busy core), must not count that reply
    into the new window (it did, and the cycle test above failed with 188 bytes too many)."""
    import os

    import sim.dxl.chain as chain_module

    class SlowWrite:  # the emulator's os, with a write that stalls once the bytes are out
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def write(fd, data):
            n = os.write(fd, data)
            time.sleep(0.05)
            return n

    _, chain, bus = claw
    monkeypatch.setattr(chain_module, "os", SlowWrite())
    bus.read_state()
    chain.reset_counters()
    time.sleep(0.1)  # past the stalled write
    assert chain.stats()["tx_bytes"] == 0


def test_goals_are_clipped_to_joint_limits(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    q[0] = 5.0  # f0_top limit is 0.48 rad
    sent = bus.write_goal_positions(q)
    assert sent[0] == pytest.approx(0.48, abs=2e-3)
    assert bus.counters.goal_clips == 1
    with pytest.raises(ValueError):
        bus.write_goal_positions(np.full(len(cfg.servos), np.nan))


def test_plain_sync_read_when_a_firmware_is_old() -> None:
    m = model_by_name("XM430-W350")
    specs = [ServoSpec(id=1, firmware=46), ServoSpec(id=2, firmware=44)]
    with ServoChain(specs) as chain:
        bus = ServoBus(chain.port, 1_000_000, [JointSpec("a", 1, m), JointSpec("b", 2, m)], BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            assert not bus.fast_read
            chain.reset_counters()
            tx0, rx0 = bus.wire_bytes()
            bus.read_state()
            tx1, rx1 = bus.wire_bytes()
            assert chain.stats()["instructions"] == {"0x82": 1}
            mb = min_cycle_bytes(2, STATE_BLOCK_SIZE, fast=False)
            assert (tx1 - tx0, rx1 - rx0) == (mb["read_request"], mb["read_reply"])
        finally:
            bus.close()


# ---- units per model ---------------------------------------------------------------------------------


def test_unit_round_trip_every_model() -> None:
    names = ["XM430-W350", "XM430-W210", "XH430-W350", "XH430-W210", "XL430-W250"]
    cals = [Calibration(1, 0.0), Calibration(-1, 0.4), Calibration(1, -0.7), Calibration(-1, 0.0), Calibration(-1, 0.25)]
    joints = [JointSpec(n, i + 1, model_by_name(n), calibration=c, min_rad=-1.2, max_rad=1.2)
              for i, (n, c) in enumerate(zip(names, cals))]
    with ServoChain([ServoSpec(id=i + 1, model=n) for i, n in enumerate(names)]) as chain:
        bus = ServoBus(chain.port, 1_000_000, joints, BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            bus.enable_torque()
            q = np.array([0.5, -0.8, 1.0, -0.2, 0.7])
            bus.write_goal_positions(q)
            time.sleep(0.6)
            bus.write_goal_positions(q)
            st = bus.read_state()
            np.testing.assert_allclose(st.position, q, atol=2 * 2 * math.pi / 4096)
            # Compare every SI figure with the emulator's raw registers, converted by hand here.
            with chain.lock:
                raw = {j.id: {k: chain.servo(j.id).get(k) for k in
                              ("present_position", "present_input_voltage", "present_temperature")} for j in joints}
            for i, j in enumerate(joints):
                ticks = raw[j.id]["present_position"]
                expect = j.calibration.sign * ((ticks - 2048) * 2 * math.pi / 4096 - j.calibration.offset_rad)
                assert st.position[i] == pytest.approx(expect, abs=1e-9)
                assert st.voltage[i] == pytest.approx(raw[j.id]["present_input_voltage"] * 0.1)
                assert st.temperature[i] == raw[j.id]["present_temperature"]
            assert np.all(np.isfinite(st.current[:4])) and math.isnan(st.current[4])
            assert np.all(np.isnan(st.load[:4])) and math.isfinite(st.load[4])

            # Negative values decode as negative (two's complement): hold servo 1 off its goal so
            # it pushes; current and velocity signs follow the joint frame.
            q2 = q.copy()
            q2[0] = -0.5
            bus.write_goal_positions(q2)
            time.sleep(0.01)
            st = bus.read_state()
            assert st.velocity[0] < 0 and st.current[0] < 0
            with chain.lock:
                cur_raw = chain.servo(1).get("present_current")
            assert cur_raw < 0
        finally:
            bus.close(torque_off=True)


class _HeldJoint:
    """A joint held by the world at a fixed state (the emulator's JointModel interface)."""

    def __init__(self, position_rad: float, velocity_rad_s: float, current_a: float) -> None:
        self.state = JointState(position_rad, velocity_rad_s, current_a)

    def set_torque(self, on: bool) -> None:
        pass

    def set_target(self, target) -> None:
        pass

    def read(self) -> JointState:
        return self.state


@pytest.mark.parametrize("sign", [1, -1])
def test_velocity_current_and_load_scales_every_model(sign: int) -> None:
    """Exact SI values from known horn states, per model; negative values exercise two's complement."""
    names = ["XM430-W350", "XM430-W210", "XH430-W350", "XH430-W210", "XL430-W250"]
    horn = [(math.pi + 0.5, -1.2, -0.8), (math.pi - 1.0, 2.0, 0.6), (math.pi + 0.1, -0.3, -1.1),
            (math.pi - 0.2, 0.7, 0.4), (math.pi + 0.9, -2.5, -0.7)]  # (rad, rad/s, A)
    specs = [ServoSpec(id=i + 1, model=n, joint=_HeldJoint(*h)) for i, (n, h) in enumerate(zip(names, horn))]
    cal = Calibration(sign, 0.05)
    joints = [JointSpec(n, i + 1, model_by_name(n), calibration=cal) for i, n in enumerate(names)]
    with ServoChain(specs) as chain:
        bus = ServoBus(chain.port, 1_000_000, joints, BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            st = bus.read_state()
        finally:
            bus.close()
    vel_unit = 0.229 * 2 * math.pi / 60
    for i, (pos, vel, cur) in enumerate(horn):
        ticks = round(pos * 4096 / (2 * math.pi))
        assert st.position[i] == pytest.approx(sign * ((ticks - 2048) * 2 * math.pi / 4096 - 0.05), abs=1e-12)
        assert st.velocity[i] == pytest.approx(sign * round(vel / vel_unit) * vel_unit, abs=1e-12)
        if names[i] == "XL430-W250":  # Present Load, 0.1 % of max torque
            assert math.isnan(st.current[i]) and -1.0 <= st.load[i] <= 1.0
            assert np.sign(st.load[i]) == np.sign(sign * cur)
        else:  # 2.69 mA per unit on every XM430/XH430-W model
            assert st.current[i] == pytest.approx(sign * round(cur / 2.69e-3) * 2.69e-3, abs=1e-12)
            assert math.isnan(st.load[i])


# ---- faults -------------------------------------------------------------------------------------------


def test_dropped_and_corrupt_replies_are_retried_and_counted(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    bus.cycle(q)
    chain.faults.drop_replies(4, n=1)
    st = bus.cycle(q)
    assert bus.counters.read_retries == 1 and bus.counters.read_timeouts + bus.counters.read_corrupt == 1
    assert st.age() < 0.05
    chain.faults.corrupt_crc(7, n=2)
    bus.cycle(q)
    assert bus.counters.read_retries == 3 and bus.counters.read_corrupt >= 2
    chain.faults.delay_replies(2, 0.03, n=1)  # later than the ~25 ms reply timeout (MARGIN)
    before = bus.counters.read_timeouts + bus.counters.read_corrupt
    st = bus.cycle(q)
    assert bus.counters.read_timeouts + bus.counters.read_corrupt == before + 1
    np.testing.assert_allclose(st.position, bus.read_state().position, atol=1e-2)
    assert all(_servo(chain, s.id, "torque_enable") == 1 for s in cfg.servos)


def test_silent_servo_is_named_and_torque_goes_off(claw) -> None:
    cfg, chain, bus = claw
    bus.cycle(np.zeros(len(cfg.servos)))
    chain.faults.silence(5)
    t0 = time.monotonic()
    with pytest.raises(ServoSilentError) as ei:
        bus.read_state()
    assert ei.value.ids == [5]
    assert time.monotonic() - t0 < 0.5  # bounded: 3 reads + pings, ~ms each
    assert bus.counters.silent_faults == 1 and bus.counters.torque_offs_on_fault == 1
    # the torque-off broadcast has no reply
    assert eventually(lambda: all(_servo(chain, s.id, "torque_enable") == 0 for s in cfg.servos if s.id != 5))


def test_hardware_error_reboots_restores_and_reenables(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    q[2] = 0.5
    _settle(bus, q, 0.3)
    chain.faults.raise_hardware_error(3, "overload")
    assert _servo(chain, 3, "torque_enable") == 0  # Shutdown latched torque off
    st = bus.cycle(q)
    assert st.recovered == (3,) and st.hardware_error[2] == 0 and st.errors_seen == {3: 0x20}
    c = bus.counters
    assert (c.hardware_errors, c.reboots, c.recoveries) == (1, 1, 1)
    # Every RAM setting is back: indirect map, watchdog, torque, goal = present.
    with chain.lock:
        s3 = chain.servo(3)
        assert [s3.mem[168 + 2 * k] | s3.mem[169 + 2 * k] << 8 for k in range(STATE_BLOCK_SIZE)] == list(INDIRECT_MAP)
        assert s3.get("bus_watchdog") == cfg.bus.watchdog_ms // 20
        assert s3.get("torque_enable") == 1 and s3.get("hardware_error_status") == 0
    st = _settle(bus, q, 0.2)
    assert st.position[2] == pytest.approx(0.5, abs=5e-3)


def test_persistent_hardware_error_becomes_typed_fault_with_torque_off() -> None:
    cfg = load_config(CLAW)
    with ServoChain.from_config(cfg) as chain:
        bus = ServoBus.from_config(cfg, port=chain.port, max_reboots=2, **MARGIN).open()
        try:
            bus.configure()
            bus.enable_torque()
            q = np.zeros(len(cfg.servos))
            for _ in range(2):
                chain.faults.raise_hardware_error(6, "overheating")
                assert bus.cycle(q).recovered == (6,)
            chain.faults.raise_hardware_error(6, 0x04)
            with pytest.raises(HardwareFault) as ei:
                bus.cycle(q)
            assert ei.value.id == 6 and ei.value.bits == 0x04
            assert bus.counters.hardware_faults == 1 and bus.counters.reboots == 2
            assert eventually(lambda: all(_servo(chain, s.id, "torque_enable") == 0 for s in cfg.servos))  # a broadcast: no reply
        finally:
            bus.close()


def test_unplugged_port_is_reopened_with_backoff(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    bus.cycle(q)
    chain.faults.unplug()
    threading.Timer(0.05, chain.faults.replug).start()
    st = bus.cycle(q)  # first attempt hits the dead port; reopen succeeds after the replug
    assert st.age() < 0.05
    c = bus.counters
    assert c.port_lost == 1 and c.port_reopens == 1
    bus.cycle(q)


def test_port_that_stays_gone_raises_port_lost(claw) -> None:
    cfg, chain, bus = claw
    bus.cycle(np.zeros(len(cfg.servos)))
    chain.faults.unplug()
    with pytest.raises(PortLostError):
        bus.cycle(np.zeros(len(cfg.servos)))
    assert bus.counters.port_lost == 1 and bus.counters.port_reopens == 0


def test_watchdog_rearmed_after_host_stall(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    _settle(bus, q, 0.1)
    time.sleep(cfg.bus.watchdog_ms / 1000 + 0.05)  # > the Bus Watchdog: the servos stop and lock their goals
    q[1] = 0.6
    st = _settle(bus, q, 0.3)
    assert bus.counters.watchdog_rearms >= 1
    assert _servo(chain, 2, "bus_watchdog") == cfg.bus.watchdog_ms // 20
    assert st.position[1] == pytest.approx(0.6, abs=5e-3)


def test_read_failure_never_returns_stale_state(claw) -> None:
    cfg, chain, bus = claw
    st = bus.read_state()
    chain.faults.silence(1)
    with pytest.raises(ServoSilentError):
        bus.read_state()
    chain.faults.unsilence(1)
    st2 = bus.read_state()
    assert st2.stamp > st.stamp


def test_cpu_is_not_pinned_while_waiting() -> None:
    """The SDK busy-spins inside a transaction; our port blocks in select() instead."""
    m = model_by_name("XM430-W350")
    with ServoChain([ServoSpec(id=1)], pace=False) as chain:
        bus = ServoBus(chain.port, 1_000_000, [JointSpec("a", 1, m)], BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            chain.faults.delay_replies(1, 0.004, n=20)  # each reply 4 ms late (within the timeout)
            c0, t0 = time.process_time(), time.monotonic()
            for _ in range(20):
                bus.read_state()
            cpu, wall = time.process_time() - c0, time.monotonic() - t0
            assert wall > 0.07
            assert cpu < 0.5 * wall, (cpu, wall)
        finally:
            bus.close()



def test_quadruped_twelve_servos_track_goals_in_joint_frame() -> None:
    cfg = load_config(ROOT / "hardware_configs" / "quadruped.yaml")
    with ServoChain.from_config(cfg) as chain:
        bus = ServoBus.from_config(cfg, port=chain.port, **MARGIN).open()
        try:
            bus.configure()
            bus.enable_torque()
            lo = np.array([s.limits.min_rad for s in cfg.servos])
            hi = np.array([s.limits.max_rad for s in cfg.servos])
            q = lo + 0.3 * (hi - lo)
            st = _settle(bus, q, 0.5)
            np.testing.assert_allclose(st.position, q, atol=3e-3)
            for s, qi in zip(cfg.servos, q):  # sign -1 joints land on mirrored ticks
                expect = round((s.calibration.sign * qi + s.calibration.offset_rad) * 4096 / (2 * math.pi)) + 2048
                assert _servo(chain, s.id, "goal_position") == expect
        finally:
            bus.close(torque_off=True)


def test_current_based_position_mode_gets_its_goal_current() -> None:
    m = model_by_name("XM430-W350")
    j = JointSpec("grip", 1, m, operating_mode=5, current_a=0.5, min_rad=-1.0, max_rad=1.0)
    with ServoChain([ServoSpec(id=1)]) as chain:
        bus = ServoBus(chain.port, 1_000_000, [j], BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            assert _servo(chain, 1, "operating_mode") == 5
            assert _servo(chain, 1, "goal_current") == round(0.5 / 2.69e-3)
            bus.enable_torque()
            st = _settle(bus, np.array([0.4]), 0.4)
            assert st.position[0] == pytest.approx(0.4, abs=5e-3)
            assert abs(st.current[0]) <= 0.5 + 1e-3
        finally:
            bus.close(torque_off=True)


def test_multi_turn_joint_stays_continuous_across_a_reboot() -> None:
    m = model_by_name("XM430-W350")
    j = JointSpec("valve", 1, m, operating_mode=4, min_rad=-100.0, max_rad=100.0)
    with ServoChain([ServoSpec(id=1, eeprom={"operating_mode": 4})]) as chain:
        bus = ServoBus(chain.port, 1_000_000, [j], BusSettings(**MARGIN)).open()
        try:
            bus.configure()
            with chain.lock:  # turn the limp valve by hand: 2.6 turns
                chain.servo(1).joint.move_to(math.pi + 2.6 * 2 * math.pi)
            before = bus.read_state().position[0]
            assert before == pytest.approx(2.6 * 2 * math.pi, abs=1e-2)
            bus.enable_torque()
            chain.faults.raise_hardware_error(1, "overload")
            st = bus.read_state()
            assert st.recovered == (1,)
            with chain.lock:  # the servo itself now reports within one turn
                assert abs(chain.servo(1).get("present_position") - 2048) < 4096
            assert st.position[0] == pytest.approx(before, abs=1e-2)
            assert bus.counters.turn_rehomes == 1
            st = _settle(bus, np.array([before + 0.5]), 0.4)
            assert st.position[0] == pytest.approx(before + 0.5, abs=5e-3)
        finally:
            bus.close(torque_off=True)


def test_unplug_during_goal_write_resends_the_right_goals(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    q[3] = -0.25
    bus.cycle(q)
    chain.faults.unplug()
    threading.Timer(0.05, chain.faults.replug).start()
    bus.write_goal_positions(q)  # hits the dead port, reopens, writes again on the new handler
    assert bus.counters.port_reopens == 1
    # a Sync Write: no reply
    assert eventually(lambda: all(_servo(chain, j.id, "goal_position") == j.calibration.rad_to_ticks(qi) for j, qi in zip(bus.joints, q)))


def test_servo_that_lost_its_ram_is_restored(claw) -> None:
    """A brownout resets one servo (torque off, indirect map gone) without any error bit."""
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    bus.cycle(q)
    with chain.lock:
        chain.servo(8).reboot()  # the emulator's power-on path, as a supply dip would cause
    st = bus.cycle(q)
    assert st.recovered == (8,) and bus.counters.servo_resets == 1
    assert np.all(st.voltage > 10)  # the returned state is post-restore, not the zeroed map
    assert _servo(chain, 8, "torque_enable") == 1


def test_one_lock_serialises_threads(claw) -> None:
    """The SDK is not thread-safe (is_using is a flag, not a lock): the bus lock makes it so."""
    cfg, chain, bus = claw
    errors: list[BaseException] = []
    q = np.zeros(len(cfg.servos))

    def worker(fn) -> None:
        try:
            for _ in range(60):
                fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    c0 = bus.counters.cycles
    ts = [threading.Thread(target=worker, args=(bus.read_state,)),
          threading.Thread(target=worker, args=(lambda: bus.write_goal_positions(q),)),
          threading.Thread(target=worker, args=(lambda: bus.read_item(1, "present_temperature"),))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    # PORT_BUSY (two threads inside the SDK at once) would show up as a corrupt read.
    assert bus.counters.cycles - c0 == 60 and bus.counters.read_corrupt == 0


def test_ftdi_latency_timer_is_read_from_sysfs(tmp_path) -> None:
    from robosac.hal.port import read_latency_timer

    dev = tmp_path / "dev" / "ttyUSB3"
    dev.parent.mkdir()
    dev.write_text("")
    f = tmp_path / "sys" / "bus" / "usb-serial" / "devices" / "ttyUSB3" / "latency_timer"
    f.parent.mkdir(parents=True)
    f.write_text("16\n")
    assert read_latency_timer(str(dev), str(tmp_path / "sys")) == 16
    assert read_latency_timer("/dev/null", str(tmp_path / "sys")) is None


def test_recovery_restores_torque_only_where_the_host_had_it_on(claw) -> None:
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    bus.disable_torque([10])  # the valve goes limp after its reset move
    chain.faults.raise_hardware_error(10, "electrical_shock")
    st = bus.cycle(q)
    assert st.recovered == (10,)
    assert _servo(chain, 10, "torque_enable") == 0 and _servo(chain, 1, "torque_enable") == 1


def test_servo_not_back_after_reboot_is_a_hardware_fault() -> None:
    m = model_by_name("XM430-W350")
    joints = [JointSpec("a", 1, m), JointSpec("b", 2, m)]
    with ServoChain([ServoSpec(id=1), ServoSpec(id=2)], reboot_s=0.5) as chain:
        bus = ServoBus(chain.port, 1_000_000, joints, BusSettings(reboot_timeout_s=0.15, **MARGIN)).open()
        try:
            bus.configure()
            bus.enable_torque()
            chain.faults.raise_hardware_error(2, "encoder")
            with pytest.raises(HardwareFault) as ei:
                bus.read_state()
            assert ei.value.id == 2 and ei.value.bits == 0x08
            time.sleep(0.02)
            assert _servo(chain, 1, "torque_enable") == 0
        finally:
            bus.close()


def test_enable_torque_holds_at_the_limit_a_hair_past_it_and_refuses_far_past(claw_mode3) -> None:
    """Position mode (3): a joint pressed 0.1 rad past its limit (a load against the end stop) is
    held at the limit; 0.3 rad past, enabling torque is refused with the joint named (the firmware
    would refuse that goal; it must be moved by hand)."""
    import math

    from robosac.hal.faults import ConfigMismatchError

    cfg, chain, bus = claw_mode3
    bus.disable_torque([1])
    hi = cfg.servo("f0_top").limits.max_rad
    joint = chain.servo(1).joint
    joint.move_to(math.pi + hi + 0.1)  # horn angle: tick 2048 = pi rad
    bus.enable_torque([1])
    goal = _servo(chain, 1, "goal_position")
    assert abs((goal - 2048) * 2 * math.pi / 4096 - hi) < 2e-3
    bus.disable_torque([1])
    joint.move_to(math.pi + hi + 0.3)
    with pytest.raises(ConfigMismatchError, match="f0_top.*outside its limits"):
        bus.enable_torque([1])


def test_enable_torque_holds_a_sagged_mode5_finger_at_its_limit(claw) -> None:
    """Current-based position mode (5) does not check position limits, so the bus must: a limp
    finger that sagged 0.4 rad past its limit after a stop gets torque back with its goal at the
    limit, and the twin's own audit counts no goal outside the config's limits (it counted 7 in a
    60-minute twin run before this)."""
    import math

    cfg, chain, bus = claw
    bus.disable_torque([2])
    lo = cfg.servo("f0_middle").limits.min_rad
    chain.servo(2).joint.move_to(math.pi + lo - 0.4)  # horn angle: tick 2048 = pi rad
    bus.enable_torque([2])
    goal = _servo(chain, 2, "goal_position")
    assert abs((goal - 2048) * 2 * math.pi / 4096 - lo) < 2e-3
    assert chain.stats()["limit_violations"] == {}


def test_enable_torque_after_a_host_pause_longer_than_the_watchdog(claw) -> None:
    """Servos whose Bus Watchdog expired refuse goal writes (Range Error); enabling torque (goal =
    present first) must clear and re-arm it, as the goal sync write does."""
    cfg, chain, bus = claw
    q = np.zeros(len(cfg.servos))
    _settle(bus, q, 0.1)
    time.sleep(cfg.bus.watchdog_ms / 1000 + 0.05)
    assert _servo(chain, 2, "bus_watchdog") in (-1, 255, 0xFF)  # expired (reads -1)
    bus.read_state()
    bus.enable_torque([2])
    assert _servo(chain, 2, "bus_watchdog") == cfg.bus.watchdog_ms // 20 and _servo(chain, 2, "torque_enable") == 1


def test_a_late_reply_is_never_taken_for_a_reads_answer(claw) -> None:
    """A write's status reply delayed past the timeout can land inside the next read's window; the
    SDK takes it (same id) and hands back its 2 bytes: read_raw must retry, not return short data
    (a loaded machine did this to the jog tool's configure: an IndexError)."""
    cfg, chain, bus = claw
    sid = cfg.servos[0].id
    short = 0
    for delay in (0.03, 0.04, 0.05, 0.06, 0.08) * 2:
        chain.faults.delay_replies(sid, delay, n=1)
        bus.write_raw(sid, 65, [1])  # LED
        for _ in range(3):
            short += len(bus.read_raw(sid, 64, 52)) != 52
            time.sleep(0.01)
        time.sleep(0.1)
    assert short == 0
    assert bus.counters.single_retries > 0  # the late replies were there, and retried
