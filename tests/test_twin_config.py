"""The config sections the twin adds: `camera` (capture source, size, rate) and `sim`."""

from __future__ import annotations

import copy

import pytest
import yaml

from robosac.config import CameraConfig, ConfigError, SimConfig, load_config, parse_config

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests


def _base() -> dict:
    return yaml.safe_load(open("hardware_configs/claw.yaml"))


def test_shipped_configs_have_camera_and_sim() -> None:
    claw = load_config("hardware_configs/claw.yaml")
    assert claw.camera == CameraConfig(source=0, width=128, height=128, fps=30.0)
    assert claw.sim == SimConfig(camera="valve_cam")
    quad = load_config("hardware_configs/quadruped.yaml")
    assert (quad.camera.width, quad.camera.height) == (640, 480) and quad.sim.camera == "overhead"


def test_sections_are_optional() -> None:
    d = _base()
    del d["camera"], d["sim"]
    c = parse_config(d)
    assert c.camera is None and c.sim is None


def test_camera_roi_is_four_fractions_of_the_frame() -> None:
    d = _base()
    d["camera"] = {"roi": [0.14, 0.06, 0.7, 0.7]}
    assert parse_config(d).camera.roi == (0.14, 0.06, 0.7, 0.7)
    d["camera"] = {"roi": [0, 0, 1, 1]}
    assert parse_config(d).camera.roi == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"camera\.roi: invalid value \[0\.5, 0\.0, 0\.6, 0\.5\]; allowed: \[x, y, width, height\]"):
        parse_config({**d, "camera": {"roi": [0.5, 0.0, 0.6, 0.5]}})


def test_camera_source_may_be_a_url() -> None:
    d = _base()
    d["camera"] = {"source": "http://127.0.0.1:8080/valve_cam.mjpg", "fps": 15}
    c = parse_config(d)
    assert c.camera.source.startswith("http://") and c.camera.fps == 15.0 and c.camera.width == 128


@pytest.mark.parametrize(
    "section,value,where",
    [
        ("camera", {"width": 8}, "camera.width"),
        ("camera", {"fps": 0}, "camera.fps"),
        ("camera", {"source": -1}, "camera.source"),
        ("camera", {"resolution": 5}, "camera.resolution"),
        ("camera", {"roi": [0.5, 0.0, 0.6, 0.5]}, "camera.roi"),  # x + width > 1
        ("camera", {"roi": [0.1, 0.1, 0.0, 0.5]}, "camera.roi"),
        ("camera", {"roi": [0.1, 0.1, 0.5]}, "camera.roi"),
        ("camera", {"roi": "centre"}, "camera.roi"),
        ("sim", {"timestep_s": 0.5}, "sim.timestep_s"),
        ("sim", {"camera": ""}, "sim.camera"),
        ("sim", {"gravity": 9.81}, "sim.gravity"),
    ],
)
def test_bad_values_name_the_key(section: str, value: dict, where: str) -> None:
    d = copy.deepcopy(_base())
    d[section] = value
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_config(d)
