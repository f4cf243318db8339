"""The MJCF models and the fast simulation API (sim/mujoco_sim.py): servo-like joints, the free
valve, the standing quadruped, randomisation and rendering. No real time, no serial."""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from sim.mujoco_sim import MujocoSim  # noqa: E402
from sim.randomization import DomainRandomization  # noqa: E402
from sim.servo_model import actuator_params, predicted_settle_time_s  # noqa: E402
from _emu_util import position_mode_claw  # noqa: E402

CLAW = "hardware_configs/claw.yaml"
QUAD = "hardware_configs/quadruped.yaml"


@pytest.fixture(scope="module")
def claw() -> MujocoSim:
    s = MujocoSim(CLAW)
    yield s
    s.close()


@pytest.fixture(scope="module")
def claw_position_mode() -> MujocoSim:
    s = MujocoSim(position_mode_claw())
    yield s
    s.close()


@pytest.fixture(scope="module")
def quad() -> MujocoSim:
    s = MujocoSim(QUAD)
    yield s
    s.close()


@pytest.mark.parametrize("cfg", [CLAW, QUAD])
def test_xml_actuators_match_servo_data(cfg: str) -> None:
    """The numbers written in the MJCF are the ones sim/servo_model.py derives from the spec sheet."""
    s = MujocoSim(cfg)
    m = s.model
    for sc in s.config.servos:
        a = actuator_params(sc.model, sc.pid.p if sc.pid else 800)
        act = m.actuator(sc.name)
        jnt = m.joint(sc.name)
        dof = m.jnt_dofadr[jnt.id]
        assert act.gainprm[0] == pytest.approx(a.kp, rel=2e-3), sc.name
        assert act.biasprm[1] == pytest.approx(-a.kp, rel=2e-3), sc.name
        assert s._nominal.forcerange[act.id, 1] == pytest.approx(a.force_limit, rel=1e-3)
        # A current limit lowers the clamp to kt·I only in current-based position mode (5).
        i_lim = sc.limits.current_a if sc.operating_mode == 5 and sc.limits.current_a else 99.0
        assert m.actuator_forcerange[act.id, 1] == pytest.approx(min(a.force_limit, a.torque_constant * i_lim), rel=1e-3)
        assert s._damp_on[s.joint_names.index(sc.name)] == pytest.approx(a.damping, rel=2e-3)
        assert m.dof_armature[dof] == pytest.approx(a.armature, rel=2e-3)
        # The joint's MJCF range is the config's (the valve is unlimited).
        if m.jnt_limited[jnt.id]:
            assert tuple(m.jnt_range[jnt.id]) == pytest.approx((sc.limits.min_rad, sc.limits.max_rad), abs=1e-4)
        else:
            assert sc.name == "valve"
    s.close()


def _settle_time(sim: MujocoSim, idx: int, target: float, band: float, horizon_s: float) -> tuple[float, float]:
    """Step the sim for horizon_s; return (time after which |error| < band for good, peak |velocity|)."""
    t0 = sim.time
    last_out = 0.0
    vpeak = 0.0
    for _ in range(int(round(horizon_s / sim.dt))):
        sim.step(1)
        st = sim.read_joint(idx)
        vpeak = max(vpeak, abs(st[1]))
        if abs(st[0] - target) >= band:
            last_out = sim.time - t0
    return last_out, vpeak


@pytest.mark.parametrize("joint,step", [("f0_middle", 0.8), ("f1_top", 0.4), ("f2_bottom", -1.2), ("valve", 2.0)])
def test_joint_follows_step_within_predicted_settle_time(claw_position_mode: MujocoSim, joint: str, step: float) -> None:
    claw = claw_position_mode  # the prediction is for full stall torque (no Goal Current cap)
    # Fingers bent outward (the claw's reset pose) so the valve's prongs pass under them.
    claw.reset(positions_rad=np.array([0.0, 0.8, -0.8] * 3 + [0.0]) if joint == "valve" else None)
    claw.set_torque(True)
    claw.set_valve(0.0)
    idx = claw.joint_names.index(joint)
    dof = claw._dadr[idx]
    m_full = np.zeros((claw.model.nv, claw.model.nv))
    mujoco.mj_fullM(claw.model, claw.data, m_full)
    load = m_full[dof, dof] - claw.model.dof_armature[dof]
    model = claw.config.servo(joint).model
    band = 0.02
    predicted = predicted_settle_time_s(model, step, load_inertia_kgm2=load, band_rad=band)
    targets = claw.read().positions_rad.copy()
    targets[idx] = step
    claw.set_targets(targets)
    settle, vpeak = _settle_time(claw, idx, step, band, horizon_s=max(1.0, 3 * predicted))
    # Gravity and friction make the real joint a little slower than the unloaded prediction.
    assert settle <= 1.25 * predicted + 0.01, (joint, settle, predicted)
    assert settle >= 0.6 * predicted, (joint, settle, predicted)
    # The no-load speed emerges from stall torque and back-EMF damping (never exceeded).
    assert vpeak <= 1.02 * actuator_params(model).noload_speed
    # Current while holding is modest; while moving flat out it reached the drive's range.
    assert np.all(np.abs(claw.read().currents_a) < 2.3)


def test_valve_spins_freely_when_limp_and_is_driven_when_on(claw: MujocoSim) -> None:
    claw.reset(positions_rad=np.array([0.0, 0.8, -0.8] * 3 + [0.0]))  # fingers clear of the prongs
    v = claw.joint_names.index("valve")
    claw.set_torque(False, index=v)
    claw.set_valve(0.0, velocity_rad_s=10.0)  # a flick by a finger
    claw.step_for(0.3)
    spun = claw.valve_angle()
    assert spun > 1.0, spun  # coasts well over a radian
    st = claw.read()
    assert st.currents_a[v] == 0.0
    # A torque just above the bearing friction keeps it turning (it is not held).
    claw.set_valve(0.0)
    claw.data.qfrc_applied[claw._dadr[v]] = 0.05  # N·m; bearing friction is 0.01
    claw.step_for(1.0)
    assert claw.valve_angle() > 1.0
    claw.data.qfrc_applied[:] = 0.0

    # Torque on: the servo drives the valve to a set angle, and holds it against a flick.
    claw.set_torque(True, index=v)
    tgt = claw.read().positions_rad.copy()
    tgt[v] = -1.5
    claw.set_targets(tgt)
    claw.step_for(1.5)
    assert claw.valve_angle() == pytest.approx(-1.5, abs=0.02)
    claw.set_valve(claw.valve_angle(), velocity_rad_s=10.0)
    claw.step_for(1.0)
    assert claw.valve_angle() == pytest.approx(-1.5, abs=0.02)


def test_quadruped_stands_for_5_s(quad: MujocoSim) -> None:
    quad.reset("stand")
    quad.set_torque(True)
    p0, _ = quad.torso_pose()
    quad.step_for(5.0)
    p, _ = quad.torso_pose()
    assert quad.time == pytest.approx(5.0, abs=quad.dt)
    assert p[2] > 0.22, p  # torso centre at 0.258 m nominal: not sagging onto its knees
    assert quad.upright() > 0.995
    assert np.linalg.norm(p[:2] - p0[:2]) < 0.03
    st = quad.read()
    assert np.allclose(st.positions_rad, [0, 0.6, -1.2] * 4, atol=0.05)


def test_quadruped_collapses_when_limp(quad: MujocoSim) -> None:
    """Torque off = limp: the robot cannot stand (the twin's servos power up this way)."""
    quad.reset("stand")
    quad.set_torque(False)
    quad.step_for(1.5)
    assert quad.torso_pose()[0][2] < 0.2  # from 0.258: folded onto the knees' joint stops
    assert np.allclose(quad.read().positions_rad[1::3], 0.0, atol=0.02)
    quad.set_torque(True)


def test_randomization_is_seeded_and_restores_nominal() -> None:
    dr = DomainRandomization.typical()
    a = MujocoSim(CLAW, randomization=dr, seed=3)
    b = MujocoSim(CLAW, randomization=dr, seed=3)
    c = MujocoSim(CLAW, randomization=dr, seed=4)
    assert a.sample.values == b.sample.values
    assert a.sample.values != c.sample.values
    assert np.array_equal(a.model.actuator_gainprm, b.model.actuator_gainprm)
    kp0 = MujocoSim(CLAW).model.actuator_gainprm[0, 0]
    g = a.sample.values["actuator_gain_scale"]
    assert a.model.actuator_gainprm[0, 0] == pytest.approx(kp0 * g)
    # Randomising again starts from the nominal model (no compounding); neutral = nominal.
    a.randomize(seed=5, randomization=DomainRandomization())
    assert a.model.actuator_gainprm[0, 0] == pytest.approx(kp0)
    assert a.latency_s == 0.0
    valve_dof = a._dadr[a.joint_names.index("valve")]
    assert 0.01 <= c.model.dof_frictionloss[valve_dof] <= 0.3


def test_observation_latency_delays_read() -> None:
    s = MujocoSim(CLAW, randomization=DomainRandomization(observation_latency_s=(0.05, 0.05)))
    assert s.latency_s == 0.05
    tgt = np.zeros(s.n)
    tgt[1] = 0.8
    s.set_targets(tgt)
    s.step_for(0.08)  # mid-stroke: 0.8 rad at ~8 rad/s takes ~0.1 s
    st = s.read()
    assert st.time_s == pytest.approx(s.time - 0.05, abs=2 * s.dt)
    assert st.positions_rad[1] < s.read_joint(1)[0]  # still rising: the delayed value is lower


def test_a_renderer_made_on_an_ended_thread_closes_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector thread renders the periodic evaluation videos, the main thread closes the env
    after it has ended: the renderer's EGL context must not still be current on the dead thread."""
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    sim = MujocoSim(QUAD)
    t = threading.Thread(target=sim.render, args=("overhead", 32, 32))
    t.start()
    t.join()
    sim.render("overhead", 32, 32)
    sim.close()
    del sim
    gc.collect()
    assert unraisable == [], [str(u.exc_value) for u in unraisable]


def test_render_shapes_and_camera_jitter(quad: MujocoSim) -> None:
    quad.reset("stand")
    img = quad.render("overhead", 64, 48)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert img.std() > 5
    j = MujocoSim(QUAD, randomization=DomainRandomization(camera_pos_jitter_m=0.2), seed=1)
    assert not np.array_equal(j.render("overhead", 64, 48), img)
    j.close()
    K = quad.camera_matrix("overhead", 640, 480)
    assert K[0, 2] == pytest.approx(319.5) and K[1, 1] == pytest.approx(240 / np.tan(np.radians(25)))
