"""The real-time twin's parts in-process: the servo ↔ joint binding (calibration in reverse), the
real-time clock with its overrun counting, and the MJPEG camera server opened by cv2.VideoCapture."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mujoco")

from sim.camera_server import CameraStreamer, MjpegServer  # noqa: E402
from sim.dxl.physics import JointTarget  # noqa: E402
from sim.mujoco_sim import MujocoSim  # noqa: E402
from sim.realtime import RealtimeTwin  # noqa: E402


def test_servo_joint_applies_calibration_in_reverse() -> None:
    sim = MujocoSim("hardware_configs/quadruped.yaml", torque=True)  # standing, all servos holding
    twin = RealtimeTwin(sim)
    j = twin.joint_models()
    fl_hip = j["fl_hip"]  # calibration sign −1
    assert sim.config.servo("fl_hip").calibration.sign == -1
    # Joint 0.2 rad ↔ horn π − 0.2 (servo −0.2 rad from tick 2048).
    assert fl_hip.horn_from_joint(0.2) == pytest.approx(math.pi - 0.2)
    assert fl_hip.joint_from_horn(math.pi - 0.2) == pytest.approx(0.2)
    # Present position reported at the horn from the joint's state.
    i = sim.joint_names.index("fr_knee")
    q = sim.read_joint(i)[0]
    assert j["fr_knee"].read().position_rad == pytest.approx(math.pi + q)
    # A goal through the binding moves the joint (stepped by hand here, no thread).
    fl_hip.set_torque(True)
    fl_hip.set_target(JointTarget(position_rad=math.pi - 0.2, max_velocity_rad_s=5.0, max_current_a=2.0))
    sim.step_for(0.5)
    k = sim.joint_names.index("fl_hip")
    assert sim.read_joint(k)[0] == pytest.approx(0.2, abs=0.04)  # loaded: the foot drags on the floor
    st = fl_hip.read()
    assert st.position_rad == pytest.approx(math.pi - sim.read_joint(k)[0], abs=1e-9)
    fl_hip.set_torque(False)
    assert fl_hip.read().current_a == 0.0


def test_realtime_clock_camera_stream_and_state() -> None:
    sim = MujocoSim("hardware_configs/claw.yaml", torque=True)
    twin = RealtimeTwin(sim)
    server = MjpegServer(state=twin.ground_truth)
    cam = CameraStreamer(sim, twin.lock, "valve_cam", 96, 64, 30, server.add_stream("valve_cam"))
    twin.scene_observers.append(cam.publish_scene)
    cam.start()
    server.start()
    twin.start()
    try:
        cap = cv2.VideoCapture(server.url("valve_cam"))
        assert cap.isOpened()
        frames = []
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            ok, f = cap.read()
            if ok:
                frames.append(f)
        cap.release()
        assert len(frames) >= 20 and frames[-1].shape == (64, 96, 3)
        state = json.loads(urllib.request.urlopen(server.state_url(), timeout=5).read())
        assert set(state["joints"]) == set(sim.joint_names) and "valve_angle_rad" in state
        snap = urllib.request.urlopen(f"http://{server.host}:{server.port}/valve_cam.jpg", timeout=5).read()
        assert snap[:2] == b"\xff\xd8"  # a JPEG
    finally:
        twin.stop()
        cam.stop()
        server.stop()
    st = twin.stats()
    assert st.wall_time_s > 1.5 and st.steps > 0
    # Real time on an idle core is ~1.0; the bound is loose for a loaded test machine.
    assert 0.8 < st.rtf <= 1.01, st
    assert st.overruns >= 0 and st.dropped_s >= 0.0
    assert cam.stats().frames >= 30


def test_overruns_are_counted_not_hidden() -> None:
    """Hold the physics lock for 0.3 s: the clock falls behind, counts it and drops the backlog."""
    sim = MujocoSim("hardware_configs/claw.yaml")
    twin = RealtimeTwin(sim, max_lag_s=0.1)
    twin.start()
    try:
        time.sleep(0.2)
        with twin.lock:
            time.sleep(0.3)
        time.sleep(0.2)
    finally:
        twin.stop()
    st = twin.stats()
    assert st.overruns >= 1
    assert st.dropped_s > 0.1
    assert st.max_lag_s > 0.25
    assert st.rtf < 0.85  # the dropped time shows in the real-time factor
    assert np.isfinite(st.rtf)


def test_camera_process_renders_the_published_scene() -> None:
    """The render process sees the simulation only through `publish_scene` (the physics thread's
    snapshot): a turned valve shows in the stream once published, not before."""
    sim = MujocoSim("hardware_configs/claw.yaml", torque=False)
    W, H = 96, 96
    server = MjpegServer()
    twin_lock = threading.Lock()
    cam = CameraStreamer(sim, twin_lock, "valve_cam", W, H, 30, server.add_stream("valve_cam"))
    cam.start()
    try:
        def streamed() -> np.ndarray:
            seq, _ = cam.slot.wait_newer(0, timeout=5.0)
            seq, jpeg = cam.slot.wait_newer(seq + 1, timeout=5.0)  # two on: the next may have been in flight
            return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(float)

        def diff(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.abs(a - b).mean())  # mean |RGB difference|; JPEG loss at quality 90: ~2.7

        at_0 = sim.render("valve_cam", W, H).astype(float)
        assert diff(streamed(), at_0) < 5.0
        with twin_lock:
            sim.set_valve(math.pi / 2)
        at_90 = sim.render("valve_cam", W, H).astype(float)
        assert diff(at_90, at_0) > 8.0  # the quarter turn is plain to see (~10.6)
        before = streamed()
        assert diff(before, at_0) < 5.0 < diff(before, at_90)  # not published yet: the old scene
        cam.publish_scene(sim.data)
        after = streamed()
        assert diff(after, at_90) < 5.0 < diff(after, at_0)
        assert cam.stats().frames >= 3 and cam.stats().render_ms > 0.0
    finally:
        cam.stop()
        sim.close()
    assert not cam._proc.is_alive()
