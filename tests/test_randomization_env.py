"""Domain randomisation as wired into the sim backend (re-drawn every reset) and `robosac twin`
(drawn once from --seed). The knobs themselves are tested in tests/test_twin_models.py."""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import pytest

import robosac  # noqa: F401 - registers the env ids
from robosac.config import load_config
from sim.mujoco_sim import MujocoSim
from sim.randomization import DomainRandomization

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests

CLAW = "robosac/ClawValveTurn-v0"
CLAW_YAML = "hardware_configs/claw.yaml"
# Model arrays no torque switch or current limit touches: what a draw leaves is all that is there.
STATIC = ("body_mass", "body_inertia", "dof_frictionloss", "geom_friction", "cam_pos", "cam_quat", "light_diffuse", "light_pos")


def _static(model) -> dict[str, np.ndarray]:
    return {k: getattr(model, k).copy() for k in STATIC}


@pytest.fixture(scope="module")
def nominal() -> MujocoSim:
    s = MujocoSim(CLAW_YAML)
    yield s
    s.close()


def test_default_sim_env_draws_per_seed_and_repeats_a_seed() -> None:
    env = gym.make(CLAW, backend="sim").unwrapped
    obs_a, info_a = env.reset(seed=1)
    m = env.robot.sim.model
    a = _static(m)
    kp_a = m.actuator_gainprm[0, 0]  # f0_top, torque on after the reset
    assert set(info_a["randomization"]) >= {"actuator_gain_scale", "joint_damping_scale", "mass_scale", "observation_latency_s"}
    assert all(isinstance(v, float) for v in info_a["randomization"].values())
    obs_b, info_b = env.reset(seed=2)
    assert info_b["randomization"] != info_a["randomization"]
    assert not np.array_equal(m.body_mass, a["body_mass"]) and m.actuator_gainprm[0, 0] != kp_a
    obs_c, info_c = env.reset(seed=1)
    assert info_c["randomization"] == info_a["randomization"]
    assert all(np.array_equal(v, getattr(m, k)) for k, v in a.items()) and m.actuator_gainprm[0, 0] == kp_a
    np.testing.assert_array_equal(obs_c["state"], obs_a["state"])
    # The drawn latency is the one the simulation applies to reads.
    assert env.robot.sim.latency_s == info_c["randomization"]["observation_latency_s"]
    env.close()


def test_unseeded_resets_draw_anew() -> None:
    env = gym.make(CLAW, backend="sim").unwrapped
    env.reset(seed=0)
    drawn = [env.reset()[1]["randomization"]["actuator_gain_scale"] for _ in range(3)]
    assert len(set(drawn)) == 3
    env.close()


@pytest.mark.parametrize("off", [None, DomainRandomization()])
def test_randomization_off_keeps_the_nominal_model(off, nominal: MujocoSim) -> None:
    env = gym.make(CLAW, backend="sim", randomization=off).unwrapped
    assert env.randomization is None
    for seed in (0, 1, None, None):
        _, info = env.reset(seed=seed)
        assert info["randomization"] == {}
        m = env.robot.sim.model
        for k, v in _static(nominal.model).items():
            np.testing.assert_array_equal(getattr(m, k), v, err_msg=k)
        np.testing.assert_array_equal(env.robot.sim._kp, nominal._kp)
        np.testing.assert_array_equal(env.robot.sim._damp_on, nominal._damp_on)
        assert env.robot.sim.latency_s == 0.0
    env.close()


def test_many_resets_do_not_drift(nominal: MujocoSim) -> None:
    env = gym.make(CLAW, backend="sim").unwrapped
    sim = env.robot.sim
    typ = DomainRandomization.typical()
    env.reset(seed=0)
    finger = int(sim._dadr[0])
    for _ in range(50):
        _, info = env.reset()
        d = info["randomization"]
        for k, v in d.items():
            lo, hi = getattr(typ, k)
            assert lo <= v <= hi, (k, v)
        # Each draw scales the NOMINAL model: a compounding draw would leave products of scales.
        np.testing.assert_allclose(sim.model.body_mass, nominal.model.body_mass * d["mass_scale"], rtol=1e-12)
        assert sim.model.dof_frictionloss[finger] == pytest.approx(nominal.model.dof_frictionloss[finger] * d["joint_friction_scale"])
        np.testing.assert_allclose(sim._kp, nominal._kp * d["actuator_gain_scale"], rtol=1e-12)
    # The kept nominal values are still the MJCF's, and a neutral draw puts them back exactly.
    for k, v in _static(nominal.model).items():
        np.testing.assert_array_equal(getattr(sim._nominal, k), v, err_msg=k)
    env.robot.randomize(DomainRandomization(), 0)
    for k, v in _static(nominal.model).items():
        np.testing.assert_array_equal(getattr(sim.model, k), v, err_msg=k)
    np.testing.assert_array_equal(sim._kp, nominal._kp)
    env.close()


def test_hardware_backend_refuses_a_randomization() -> None:
    # Refused before any port is opened: the hardware backend cannot randomise a real robot.
    with pytest.raises(ValueError, match="randomization: the hardware backend"):
        gym.make(CLAW, backend="hardware", port="/dev/null", randomization=DomainRandomization.typical())
    with pytest.raises(ValueError, match="randomization: invalid value 'strong'"):
        gym.make(CLAW, backend="sim", randomization="strong")


# ------------------------------------------------------------------ robosac twin


def _twin_args(*argv: str) -> argparse.Namespace:
    from sim import twin_cli

    parser = argparse.ArgumentParser()
    twin_cli.register(parser.add_subparsers())
    return parser.parse_args(["twin", CLAW_YAML, *argv])


def test_twin_randomises_once_from_seed_unless_told_not_to(nominal: MujocoSim) -> None:
    from sim.twin_cli import make_sim

    cfg = load_config(CLAW_YAML)
    args = _twin_args()
    assert args.randomize and args.seed == 0
    a = make_sim(cfg, seed=args.seed, randomize=args.randomize)
    b = make_sim(cfg, seed=0, randomize=True)
    c = make_sim(cfg, seed=1, randomize=True)
    assert a.sample.values == b.sample.values != c.sample.values
    assert a.sample.values["actuator_gain_scale"] != 1.0
    np.testing.assert_array_equal(a.model.body_mass, b.model.body_mass)
    # The twin's latency is its serial path's: reads (and the /state ground truth) are not delayed.
    assert a.latency_s == 0.0 and a.sample.values["observation_latency_s"] == 0.0
    assert not a.torque.any()  # servos power up limp
    args = _twin_args("--no-randomize", "--seed", "5")
    assert not args.randomize and args.seed == 5
    n = make_sim(cfg, seed=args.seed, randomize=args.randomize)
    for k, v in _static(nominal.model).items():
        np.testing.assert_array_equal(getattr(n.model, k), v, err_msg=k)
    np.testing.assert_array_equal(n._kp, nominal._kp)
    for s in (a, b, c, n):
        s.close()
