"""The safety monitor (robosac.robots.safety): every rule with a failing and a passing case, and
SafeBus end to end against the emulated servo chain (sim.dxl) through the real dynamixel_sdk."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from _emu_util import eventually
from robosac.config import load_config
from robosac.hal import BusState, HardwareFault, PortLostError, ServoBus
from robosac.robots import (
    TEMPERATURE_STOP_C,
    TEMPERATURE_WARN_C,
    SafeBus,
    SafetyConfigError,
    SafetyLimits,
    SafetyMonitor,
    SafetyStop,
    UnsafeCommandError,
)
from sim.dxl import ServoChain

ROOT = Path(__file__).resolve().parents[1]
CLAW = ROOT / "hardware_configs" / "claw.yaml"
DT = 0.05


def _limits(**kw) -> SafetyLimits:
    base = dict(
        names=("a", "b", "c"),
        min_rad=(-1.0, -1.0, -2.0),
        max_rad=(1.0, 1.0, 2.0),
        max_speed_rad_s=(2.0, 2.0, 4.0),  # 0.1, 0.1, 0.2 rad per 50 ms step
        current_warn_a=(1.0, 1.0, math.nan),
        current_stop_a=(1.5, 1.5, math.nan),  # joint c: no current sensor
    )
    base.update(kw)
    return SafetyLimits(**base)


def _state(n=3, current=None, temperature=None, hw=None, position=None, seen=None) -> BusState:
    z = np.zeros(n)
    return BusState(
        position=z.copy() if position is None else np.asarray(position, float),
        velocity=z.copy(),
        current=z.copy() if current is None else np.asarray(current, float),
        load=np.full(n, np.nan),
        voltage=np.full(n, 12.0),
        temperature=np.full(n, 35.0) if temperature is None else np.asarray(temperature, float),
        hardware_error=np.zeros(n, np.uint8) if hw is None else np.asarray(hw, np.uint8),
        stamp=time.monotonic(),
        read_time_s=0.0,
        errors_seen={} if seen is None else seen,
    )


# ---- limits -------------------------------------------------------------------------------------


def test_limits_from_config_defaults() -> None:
    cfg = load_config(CLAW)
    lim = SafetyLimits.from_config(cfg, tilt_limit_rad=0.5)
    assert lim.names == tuple(s.name for s in cfg.servos)
    assert lim.min_rad[0] == -0.48 and lim.max_rad[0] == 0.48 and lim.max_rad[-1] == 628.0
    assert lim.max_speed_rad_s[0] == 6.0 and lim.max_speed_rad_s[-1] == 4.0
    # The claw config: stop within 5 % of the 1.2 A Goal Current cap (a saturated reading jitters), warn at 80 %.
    assert lim.current_stop_a[0] == pytest.approx(1.14) and lim.current_warn_a[0] == pytest.approx(0.96)
    assert (lim.temperature_warn_c, lim.temperature_stop_c) == (TEMPERATURE_WARN_C, TEMPERATURE_STOP_C) == (65.0, 72.0)
    assert lim.tilt_limit_rad == 0.5
    slow = SafetyLimits.from_config(cfg, max_speed_rad_s=1.0)
    assert set(slow.max_speed_rad_s) == {1.0}


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(min_rad=(-1.0, 1.0, -2.0)), "min_rad[1] (b)"),
        (dict(max_rad=(1.0, float("nan"), 2.0)), "max_rad[1] (b)"),
        (dict(max_speed_rad_s=(2.0, 0.0, 4.0)), "max_speed_rad_s[1] (b)"),
        (dict(max_speed_rad_s=(2.0, 2.0)), "max_speed_rad_s"),
        (dict(current_warn_a=(2.0, 1.0, math.nan)), "current_warn_a[0] (a)"),
        (dict(current_warn_a=(1.0, 1.0, 1.0)), "current_warn_a[2] (c)"),
        (dict(temperature_warn_c=75.0), "temperature_warn_c"),
        (dict(temperature_stop_c=120.0), "temperature_stop_c"),
        (dict(tilt_limit_rad=-0.1), "tilt_limit_rad"),
        (dict(names=()), "names"),
    ],
)
def test_limits_validation_names_field(kw, field) -> None:
    with pytest.raises(SafetyConfigError) as ei:
        _limits(**kw)
    assert f"SafetyLimits.{field}" in str(ei.value)


def test_monitor_dt_validated() -> None:
    with pytest.raises(SafetyConfigError, match="dt_s"):
        SafetyMonitor(_limits(), 0.0)


# ---- commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_rejected_and_counted(bad) -> None:
    m = SafetyMonitor(_limits(), DT)
    q_ok = m.filter_command([0.05, 0.0, 0.0], [0.0, 0.0, 0.0])  # passing case
    np.testing.assert_allclose(q_ok, [0.05, 0.0, 0.0])
    with pytest.raises(UnsafeCommandError, match="'b'"):
        m.filter_command([0.0, bad, 0.0], [0.0, 0.0, 0.0])
    assert m.events["nonfinite_commands"] == 1 and m.events["commands"] == 1
    np.testing.assert_allclose(m.last_goal, q_ok)  # the rejected command changed nothing
    assert not m.tripped  # not a latch: the caller holds position and may send a good command
    m.filter_command([0.0, 0.0, 0.0])


def test_clip_to_joint_limits() -> None:
    m = SafetyMonitor(_limits(), DT)
    q_now = np.array([0.95, -0.95, 0.0])
    q = m.filter_command([0.98, -0.97, 0.1], q_now)  # inside: untouched
    np.testing.assert_allclose(q, [0.98, -0.97, 0.1])
    assert m.events["joint_limit_clips"] == 0
    q = m.filter_command([5.0, -5.0, 0.1], q_now)
    np.testing.assert_allclose(q, [1.0, -1.0, 0.1])
    assert m.events["joint_limit_clips"] == 2


def test_rate_limit_converges_without_overshoot() -> None:
    m = SafetyMonitor(_limits(), DT)
    target = np.array([0.73, -0.5, 1.9])
    q_prev = np.zeros(3)
    steps = 0
    for steps in range(1, 100):
        q = m.filter_command(target, q_now=np.zeros(3))  # q_now only used on the first call
        d = np.abs(q - q_prev)
        assert np.all(d <= np.array([0.1, 0.1, 0.2]) + 1e-12), d  # never a jump
        assert np.all(np.abs(q) <= np.abs(target) + 1e-12)  # never beyond the target
        q_prev = q
        if np.array_equal(q, target):
            break
    assert steps == 10  # ceil(1.9 / 0.2) = 10, ceil(0.73 / 0.1) = 8
    assert m.events["rate_limits"] > 0
    n = m.events["rate_limits"]
    m.filter_command(target)  # at the target: no more limiting
    assert m.events["rate_limits"] == n


def test_rate_limit_reference_is_last_goal_not_position() -> None:
    m = SafetyMonitor(_limits(), DT)
    m.filter_command([0.1, 0.0, 0.0], [0.0, 0.0, 0.0])
    # The joint lags (measured 0), the goal keeps moving from the last goal: 0.2, not a jump to 0.5.
    q = m.filter_command([0.5, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert q[0] == pytest.approx(0.2)
    m.reset()  # after reset the reference is the measured position again
    q = m.filter_command([0.5, 0.0, 0.0], [0.4, 0.0, 0.0])
    assert q[0] == pytest.approx(0.5)


# ---- state checks -------------------------------------------------------------------------------


def test_current_warn_then_stop() -> None:
    m = SafetyMonitor(_limits(), DT)
    assert m.check_state(_state(current=[0.5, -0.9, 99.0])) == []  # joint c has no current check
    ev = m.check_state(_state(current=[1.2, 0.0, 0.0]))
    assert [(e.kind, e.level, e.joint) for e in ev] == [("current", "warn", "a")]
    assert not m.tripped and m.events["current_warn"] == 1
    m.filter_command([0, 0, 0], [0, 0, 0])
    ev = m.check_state(_state(current=[0.0, -1.6, 0.0]))  # |I| counts: negative current too
    assert [(e.kind, e.level, e.joint) for e in ev] == [("current", "stop", "b")]
    assert m.tripped and "current" in m.reason and m.events["current_stop"] == 1
    with pytest.raises(SafetyStop):
        m.filter_command([0, 0, 0])


def test_temperature_warn_then_stop() -> None:
    m = SafetyMonitor(_limits(), DT)
    assert m.check_state(_state(temperature=[64, 50, 35])) == []
    ev = m.check_state(_state(temperature=[65, 71, 35]))
    assert [(e.kind, e.level) for e in ev] == [("temperature", "warn")] * 2
    assert not m.tripped and m.events["temperature_warn"] == 2
    ev = m.check_state(_state(temperature=[60, 72, 35]))
    assert [(e.kind, e.level, e.joint) for e in ev] == [("temperature", "stop", "b")]
    assert m.tripped and "temperature" in m.reason


def test_hardware_error_bits_stop() -> None:
    m = SafetyMonitor(_limits(), DT)
    assert m.check_state(_state(hw=[0, 0, 0])) == []
    # Recovered by the bus (reboot + restore within budget): counted as a warning by default.
    ev = m.check_state(_state(seen={3: 0x04}))
    assert ev[0].level == "warn" and not m.tripped and m.events["hardware_error_recovered"] == 1
    ev = m.check_state(_state(hw=[0, 0x20, 0]))
    assert ev[0].kind == "hardware_error" and ev[0].level == "stop"
    assert m.tripped and "0x20" in m.reason and m.events["hardware_error_stop"] == 1
    strict = SafetyMonitor(_limits(stop_on_recovered_hardware_error=True), DT)
    strict.check_state(_state(seen={3: 0x04}))
    assert strict.tripped


def test_tilt_limit() -> None:
    m = SafetyMonitor(_limits(tilt_limit_rad=math.radians(30)), DT)
    assert m.check_state(_state(), tilt=(0.3, -0.4)) == []
    ev = m.check_state(_state(), tilt=(math.nan, 0.0))
    assert ev[0].kind == "tilt_invalid" and not m.tripped
    ev = m.check_state(_state(), tilt=(0.1, -0.6))
    assert [(e.kind, e.joint) for e in ev] == [("tilt", "pitch")]
    assert m.tripped and m.events["tilt_stop"] == 1
    # No tilt limit configured: tilt is not checked.
    m2 = SafetyMonitor(_limits(), DT)
    assert m2.check_state(_state(), tilt=(1.5, 1.5)) == [] and not m2.tripped


def test_stop_latches_until_reset_and_keeps_first_reason() -> None:
    m = SafetyMonitor(_limits(), DT)
    m.check_state(_state(temperature=[80, 35, 35]))
    first = m.reason
    m.check_state(_state(current=[9.0, 0, 0]))
    assert m.reason == first and m.events["trips"] == 1
    m.check_state(_state())  # condition gone: still latched
    for _ in range(3):
        with pytest.raises(SafetyStop) as ei:
            m.filter_command([0, 0, 0], [0, 0, 0])
        assert ei.value.reason == first
    assert m.events["refused_commands"] == 3
    m.reset()
    assert not m.tripped and m.reason is None
    m.filter_command([0, 0, 0], [0, 0, 0])
    info = m.info()
    assert info["tripped"] is False and info["resets"] == 1
    assert all(isinstance(v, int) for k, v in m.events.items())


# ---- e-stop -------------------------------------------------------------------------------------


def test_estop_python_call() -> None:
    m = SafetyMonitor(_limits(), DT)
    m.filter_command([0, 0, 0], [0, 0, 0])
    m.estop("operator")
    assert m.tripped and m.reason == "e-stop: operator" and m.events["estops"] == 1
    with pytest.raises(SafetyStop, match="operator"):
        m.filter_command([0, 0, 0])
    m.reset()
    m.filter_command([0, 0, 0], [0, 0, 0])


def test_estop_real_sigterm_and_handlers_restored() -> None:
    m = SafetyMonitor(_limits(), DT)
    before_term = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    m.install_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGTERM) == m._on_signal
        os.kill(os.getpid(), signal.SIGTERM)
        t_end = time.monotonic() + 2.0
        while not m.tripped and time.monotonic() < t_end:
            time.sleep(0.001)  # the handler runs in the main thread between bytecodes
        assert m.tripped and "SIGTERM" in m.reason and m.events["estops"] == 1
        with pytest.raises(SafetyStop):
            m.filter_command([0, 0, 0], [0, 0, 0])
        # A second SIGTERM ends the program (SystemExit) instead of being swallowed.
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        # Ctrl-C (SIGINT) after reset also latches the e-stop.
        m.reset()
        os.kill(os.getpid(), signal.SIGINT)
        t_end = time.monotonic() + 2.0
        while not m.tripped and time.monotonic() < t_end:
            time.sleep(0.001)
        assert m.tripped and "SIGINT" in m.reason
        # Latched for another reason: the first Ctrl-C still only latches, the second interrupts.
        m.reset()
        m.check_state(_state(temperature=[99, 35, 35]))
        os.kill(os.getpid(), signal.SIGINT)
        t_end = time.monotonic() + 2.0
        while m.events["estops"] < 3 and time.monotonic() < t_end:
            time.sleep(0.001)
        assert m.events["estops"] == 3 and "temperature" in m.reason
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    finally:
        m.uninstall_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) == before_term
    assert signal.getsignal(signal.SIGINT) == before_int
    assert not m.signal_handlers_installed


# ---- SafeBus on the emulated chain --------------------------------------------------------------


@pytest.fixture
def safe_claw(claw):
    cfg, chain, bus = claw
    yield cfg, chain, bus, SafeBus(bus, SafetyMonitor(SafetyLimits.from_config(cfg), dt_s=DT))


def test_safebus_nan_never_reaches_servo(safe_claw) -> None:
    cfg, chain, bus, sb = safe_claw
    ids = cfg.ids
    r = sb.step(np.zeros(len(ids)))
    goal0 = [chain.get_item(i, "goal_position") for i in ids]
    q = np.asarray(r.q_sent).copy()
    q[1] = np.nan
    writes = bus.counters.writes
    with pytest.raises(UnsafeCommandError):
        sb.step(q)
    assert [chain.get_item(i, "goal_position") for i in ids] == goal0
    assert bus.counters.writes == writes
    assert all(chain.get_item(i, "torque_enable") == 1 for i in ids)  # holding, not dropped
    assert sb.monitor.events["nonfinite_commands"] == 1
    # A big jump is rate-limited on the wire: f0_middle moves at most 6 rad/s * 50 ms = 0.3 rad.
    target = np.asarray(r.q_sent).copy()
    target[1] = 1.0
    r2 = sb.step(target)
    assert abs(r2.q_sent[1] - r.q_sent[1]) <= 0.3 + 2e-3
    assert sb.monitor.events["rate_limits"] >= 1


def test_safebus_overtemperature_trips_and_torque_off(safe_claw) -> None:
    cfg, chain, bus, sb = safe_claw
    ids = cfg.ids
    q0 = sb.step(np.zeros(len(ids))).q_sent
    chain.set_item(ids[2], "present_temperature", 68)
    r = sb.step(q0)
    assert [(e.kind, e.level) for e in r.events] == [("temperature", "warn")]
    assert all(chain.get_item(i, "torque_enable") == 1 for i in ids)
    chain.set_item(ids[2], "present_temperature", 75)
    with pytest.raises(SafetyStop, match="temperature"):
        sb.step(q0)
    assert all(chain.get_item(i, "torque_enable") == 0 for i in ids)
    assert sb.monitor.tripped and sb.monitor.events["torque_offs"] == 1
    # Still refused (and torque stays off) until reset, even once it has cooled down.
    chain.set_item(ids[2], "present_temperature", 40)
    with pytest.raises(SafetyStop):
        sb.step(q0)
    assert all(chain.get_item(i, "torque_enable") == 0 for i in ids)
    sb.reset()
    assert all(chain.get_item(i, "torque_enable") == 1 for i in ids)
    sb.step(q0)
    info = sb.info()
    assert info["temperature_stop"] == 1 and info["temperature_warn"] == 1 and "bus/writes" in info


def test_safebus_estop_turns_torque_off(safe_claw) -> None:
    cfg, chain, bus, sb = safe_claw
    q0 = sb.step(np.zeros(len(cfg.ids))).q_sent
    sb.monitor.estop("test")
    with pytest.raises(SafetyStop, match="e-stop: test"):
        sb.step(q0)
    assert all(chain.get_item(i, "torque_enable") == 0 for i in cfg.ids)


def test_safebus_bus_error_latches_and_reraises(safe_claw) -> None:
    cfg, chain, bus, sb = safe_claw
    q0 = sb.step(np.zeros(len(cfg.ids))).q_sent

    def lost():
        raise PortLostError("/dev/null", 0, "test")

    bus.read_state = lost  # instance attribute: only this bus object
    with pytest.raises(PortLostError):
        sb.step(q0)
    assert sb.monitor.tripped and "PortLostError" in sb.monitor.reason
    assert sb.monitor.events["bus_faults"] == 1
    assert all(chain.get_item(i, "torque_enable") == 0 for i in cfg.ids)


def test_safebus_hardware_fault_recovered_then_safe_stop() -> None:
    """Emulator fault injection: the first overheating error is rebooted away by the bus (a counted
    warning), the second exceeds the reboot budget -> HardwareFault -> latched, torque off."""
    cfg = load_config(CLAW)
    with ServoChain.from_config(cfg) as chain:
        bus = ServoBus.from_config(cfg, port=chain.port, max_reboots=1, margin_ms=20.0).open()
        try:
            bus.configure()
            bus.enable_torque()
            sb = SafeBus(bus, SafetyMonitor(SafetyLimits.from_config(cfg), dt_s=DT))
            q0 = sb.step(np.zeros(len(cfg.ids))).q_sent
            chain.faults.raise_hardware_error(6, "overheating")
            r = sb.step(q0)
            assert [(e.kind, e.level) for e in r.events] == [("hardware_error_recovered", "warn")]
            assert not sb.monitor.tripped
            chain.faults.raise_hardware_error(6, "overheating")
            with pytest.raises(HardwareFault):
                sb.step(q0)
            assert sb.monitor.tripped and "HardwareFault" in sb.monitor.reason
            assert eventually(lambda: all(chain.get_item(i, "torque_enable") == 0 for i in cfg.ids))  # a broadcast: no reply
            with pytest.raises(SafetyStop):
                sb.step(q0)
        finally:
            bus.close()
