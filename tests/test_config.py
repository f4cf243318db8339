"""Hardware config loading and validation: shipped configs load; bad files name the key."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from robosac.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_claw_loads() -> None:
    cfg = load_config(ROOT / "hardware_configs" / "claw.yaml")
    assert cfg.name == "claw"
    assert len(cfg.servos) == 10
    assert cfg.bus.baud == 1_000_000 and cfg.bus.return_delay_us == 0
    top = cfg.servo("f0_top")
    assert top.limits.min_rad == pytest.approx(-0.48) and top.limits.max_rad == pytest.approx(0.48)
    assert cfg.servo("f1_middle").limits.max_rad == pytest.approx(math.pi / 3, abs=1e-3)
    assert cfg.servo("f2_bottom").limits.max_rad == pytest.approx(math.pi / 2, abs=1e-3)
    valve = cfg.servo("valve")
    assert valve.id == 10 and valve.operating_mode == 4
    assert cfg.bus.shutdown == 0x34


def test_shipped_quadruped_loads() -> None:
    cfg = load_config(ROOT / "hardware_configs" / "quadruped.yaml")
    assert cfg.name == "quadruped"
    assert len(cfg.servos) == 12 and len(set(cfg.ids)) == 12
    assert cfg.servo("fr_hip").limits.min_rad == pytest.approx(-0.5)
    assert cfg.servo("bl_foot").limits.min_rad == pytest.approx(-2.0)
    assert cfg.with_port("/dev/pts/9").bus.port == "/dev/pts/9"


def _base() -> dict:
    return yaml.safe_load((ROOT / "hardware_configs" / "claw.yaml").read_text())


def _set(d: dict, path: list, value) -> dict:
    d = copy.deepcopy(d)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


class _Delete:
    """Marks a key to remove. Its repr is the same in every run, and so are the test ids built from
    it (`pytest --lf` finds a failed one again; an `object()` would put its address in the id)."""

    def __repr__(self) -> str:
        return "DELETE"


_DELETE = _Delete()

BAD = [
    # (path to change, new value, substring expected in the message)
    (["servos", 3, "model"], "XM999", "servos[3].model"),
    (["servos", 0, "id"], 253, "servos[0].id"),
    (["servos", 0, "id"], "one", "servos[0].id"),
    (["servos", 1, "id"], 1, "servos[1].id: duplicate id"),
    (["servos", 2, "name"], "f0_top", "servos[2].name: duplicate name"),
    (["servos", 0, "operating_mode"], 1, "servos[0].operating_mode"),
    (["servos", 0, "calibration", "sign"], 2, "servos[0].calibration.sign"),
    (["servos", 0, "calibration", "offset"], 0.1, "servos[0].calibration.offset"),
    (["servos", 4, "limits", "min_rad"], 2.0, "servos[4].limits"),
    (["servos", 4, "limits", "max_rad"], 2000.0, "servos[4].limits.max_rad"),  # beyond mode 5's +-256 turns
    (["servos", 4, "limits", "max_velocity_rad_s"], 0.0, "servos[4].limits.max_velocity_rad_s"),
    (["servos", 4, "limits", "max_velocity_rad_s"], 100.0, "servos[4].limits.max_velocity_rad_s"),
    (["servos", 4, "limits", "current_a"], 10.0, "servos[4].limits.current_a"),
    (["servos", 4, "limits", "min_rad"], _DELETE, "servos[4].limits.min_rad: missing"),
    (["servos", 5, "pid", "p"], -1, "servos[5].pid.p"),
    (["servos", 5, "pid", "q"], 1, "servos[5].pid.q: unknown key"),
    (["servos", 5, "profile"], {"velocity_rad_s": -1}, "servos[5].profile.velocity_rad_s"),
    (["servos"], [], "servos"),
    (["bus", "baud"], 4_500_000, "bus.baud"),
    (["bus", "baud"], True, "bus.baud"),
    (["bus", "return_delay_us"], 3, "bus.return_delay_us"),
    (["bus", "watchdog_ms"], 30, "bus.watchdog_ms"),
    (["bus", "shutdown"], ["overlaod"], "bus.shutdown[0]"),
    (["bus", "shutdown"], 0x02, "bus.shutdown"),
    (["bus", "port"], "", "bus.port"),
    (["bus", "prot"], "/dev/x", "bus.prot: unknown key"),
    (["bus"], _DELETE, "bus: missing"),
    (["camra"], {}, "camra: unknown key"),
    (["name"], 5, "name"),
    # environment sections
    (["control", "rate_hz"], 0, "control.rate_hz"),
    (["control", "episode_s"], -1, "control.episode_s"),
    (["control", "action_joints"], ["f0_top", "thumb"], "control.action_joints[1]"),
    (["control", "action_joints"], ["f0_top", "f0_top"], "control.action_joints"),
    (["control", "rate"], 10, "control.rate: unknown key"),
    (["control", "action_center_rad"], {"f0_middle": 1.5}, "control.action_center_rad.f0_middle"),
    (["control", "action_center_rad"], {"thumb": 0.0}, "control.action_center_rad.thumb"),
    (["control", "action_center_rad"], {}, "control.action_center_rad"),
    (["control", "action_range_rad"], {"f0_middle": [0.0, 2.0]}, "control.action_range_rad.f0_middle"),  # past max_rad
    (["control", "action_range_rad"], {"f0_middle": [0.9, 1.0]}, "control.action_range_rad.f0_middle"),  # action 0 outside
    (["control", "action_range_rad"], {"f0_middle": [0.5, 0.2]}, "control.action_range_rad.f0_middle"),
    (["control", "action_range_rad"], {"f0_middle": 0.5}, "control.action_range_rad.f0_middle"),
    (["control", "action_range_rad"], {"thumb": [0.0, 0.1]}, "control.action_range_rad.thumb"),
    (["safety", "temperature_stop_c"], 120, "safety.temperature_stop_c"),
    (["safety", "temperature_warn_c"], 80, "safety.temperature_warn_c"),
    (["safety", "current_warn_fraction"], 1.5, "safety.current_warn_fraction"),
    (["safety", "max_frame_age_s"], 0, "safety.max_frame_age_s"),
    (["safety", "tilt_limit_rad"], 4.0, "safety.tilt_limit_rad"),
    (["reset", "pose_rad", "f0_middle"], 2.0, "reset.pose_rad.f0_middle"),
    (["reset", "pose_rad", "pinky"], 0.0, "reset.pose_rad.pinky"),
    (["reset", "max_attempts"], 0, "reset.max_attempts"),
    (["reset", "tolerance_rad"], "small", "reset.tolerance_rad"),
    (["tracker"], {"camera_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "tracker.camera_position_m: missing"),
    (["tracker"], {"dictionary": "APRILTAG"}, "tracker.dictionary"),
    (["tracker"], {"camera_matrix": [[1, 0], [0, 1]], "camera_position_m": [0, 0, 1], "camera_rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "tracker.camera_matrix"),
    (["tracker"], {"camera_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "camera_position_m": [0, 0, 1], "camera_rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}, "tracker.camera_rotation"),
]


@pytest.mark.parametrize("path,value,expect", BAD, ids=[f"{'.'.join(map(str, p))}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_value_names_key(path, value, expect) -> None:
    data = _set(_base(), path, value)
    with pytest.raises(ConfigError) as ei:
        parse_config(data)
    assert expect in str(ei.value), str(ei.value)


def test_unknown_top_level_lists_allowed() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_set(_base(), ["camra"], {}))
    msg = str(ei.value)
    for k in ("name", "bus", "servos", "model_xml"):
        assert k in msg


def test_bad_model_lists_allowed_and_value() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(_set(_base(), ["servos", 3, "model"], "XM999"))
    assert "XM999" in str(ei.value) and "XM430-W350" in str(ei.value)


def test_xl430_rejects_current_limit() -> None:
    data = _set(_base(), ["servos", 0, "model"], "XL430-W250")
    with pytest.raises(ConfigError, match=r"servos\[0\]\.limits\.current_a"):
        parse_config(data)
    del data["servos"][0]["limits"]["current_a"]
    assert parse_config(data).servos[0].model == "XL430-W250"


def test_load_file_errors_name_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nbus: {port: /dev/x, baud: 7}\nservos: []\n")
    with pytest.raises(ConfigError, match="bad.yaml: bus.baud"):
        load_config(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_environment_sections_of_the_shipped_configs() -> None:
    claw = load_config(ROOT / "hardware_configs" / "claw.yaml")
    assert claw.control.rate_hz == 10 and claw.control.max_steps == 80
    assert claw.control.action_joints == tuple(s.name for s in claw.servos if s.name != "valve")
    assert set(claw.reset.pose_rad) == set(claw.control.action_joints)
    assert claw.safety.current_stop_s == 1.0 and claw.tracker is None
    # The bus watchdog outlasts a control period several times over (reads and writes both feed it).
    assert claw.bus.watchdog_ms >= 3 * 1000 / claw.control.rate_hz
    quad = load_config(ROOT / "hardware_configs" / "quadruped.yaml")
    assert quad.control.rate_hz == 20 and quad.safety.tilt_limit_rad == pytest.approx(math.radians(45), abs=1e-3)
    assert quad.bus.watchdog_ms >= 3 * 1000 / quad.control.rate_hz


def test_quadruped_tracker_calibration_matches_the_twin_camera() -> None:
    """The YAML's tracker calibration is the twin's overhead camera (so the hardware backend on the
    twin tracks correctly); a stale copy after a model change fails here."""
    import numpy as np

    from robosac.robots.robot import tracker_calibration
    from sim.mujoco_sim import MujocoSim

    cfg = load_config(ROOT / "hardware_configs" / "quadruped.yaml")
    sim = MujocoSim(cfg)
    from_yaml = tracker_calibration(cfg)
    from_model = tracker_calibration(replace_tracker(cfg), sim)
    np.testing.assert_allclose(from_yaml.K, from_model.K, atol=0.01)
    np.testing.assert_allclose(from_yaml.cam_pos, from_model.cam_pos, atol=1e-6)
    np.testing.assert_allclose(from_yaml.cam_rot, from_model.cam_rot, atol=1e-6)
    assert from_yaml.marker_size_m == pytest.approx(0.1125)
    # plane_z_m is the settled standing marker height
    assert abs(cfg.tracker.plane_z_m - sim.marker_position()[2]) < 0.005
    sim.close()


def replace_tracker(cfg):
    from dataclasses import replace

    return replace(cfg, tracker=replace(cfg.tracker, camera_matrix=None, camera_position_m=None, camera_rotation=None))
