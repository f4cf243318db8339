"""robosac.hal.camera and robosac.hal.aruco against real sources: the twin's MJPEG server (in
process, opened by the real cv2.VideoCapture over HTTP), a video file written with cv2.VideoWriter,
and frames rendered by MuJoCo from the quadruped's overhead camera. No mocks."""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
mujoco = pytest.importorskip("mujoco")

from _emu_util import eventually  # noqa: E402
from robosac.hal.aruco import ArucoCalibration, ArucoTracker, wrap_angle  # noqa: E402
from robosac.hal.camera import Camera, CameraError, StaleFrameError, crop_resize  # noqa: E402
from sim.camera_server import CameraStreamer, MjpegServer  # noqa: E402
from sim.mujoco_sim import MujocoSim  # noqa: E402

QUAD = "hardware_configs/quadruped.yaml"


class Publisher:
    """Publishes numbered synthetic JPEGs (w x h) to an MjpegServer slot at `fps`; pausable."""

    def __init__(self, slot, w: int = 320, h: int = 240, fps: float = 30.0) -> None:
        self.slot, self.w, self.h, self.fps = slot, w, h, fps
        self.stop_ev, self.running = threading.Event(), threading.Event()
        self.running.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop_ev.is_set():
            if self.running.is_set():
                img = np.full((self.h, self.w, 3), 40, np.uint8)
                img[:, : self.w // 10] = 200  # a bright left strip: cropped away by a square crop
                cv2.putText(img, str(i), (self.w // 3, self.h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
                ok, buf = cv2.imencode(".jpg", img)
                self.slot.publish(buf.tobytes())
                i += 1
            self.stop_ev.wait(1.0 / self.fps)

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join(timeout=2.0)


def _serve(port: int = 0) -> tuple[MjpegServer, Publisher]:
    srv = MjpegServer(port=port)
    pub = Publisher(srv.add_stream("cam"))
    srv.start()
    return srv, pub


def _stamps(cam: Camera, n: int, timeout: float = 3.0) -> list[tuple[np.ndarray, float]]:
    out, last = [], -math.inf
    for _ in range(n):
        f, s = cam.wait_frame(newer_than=last, timeout=timeout)
        out.append((f, s))
        last = s
    return out


def test_crop_resize_centre_crop_keeps_channel_order() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = (0, 0, 255)  # left quarter, cropped away by a square crop
    img[:, 50:150] = (255, 0, 0)  # centre
    out = crop_resize(img, 32, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # Channel order kept (an RGB frame stays RGB), and nothing of the cropped-off quarter remains.
    assert np.all(out[..., 0] == 255) and np.all(out[..., 2] == 0)
    assert crop_resize(np.zeros((60, 80), np.uint8), 40, 40).shape == (40, 40, 3)
    # Shrinking averages: a one-pixel-wide line at 4x keeps a quarter of its weight.
    line = np.zeros((128, 128, 3), np.uint8)
    line[:, 64] = 255
    assert crop_resize(line, 32, 32)[0, 16, 0] == 64


def test_mjpeg_stream_fresh_frames_loss_stale_and_reconnect() -> None:
    srv, pub = _serve()
    port, url = srv.port, srv.url("cam")
    cam = Camera(url, 160, 160, max_age_s=0.3, stall_timeout_s=0.6, backoff_s=0.05, max_backoff_s=0.2, reject_duplicates=True)
    srv2 = pub2 = None
    try:
        with pytest.raises(StaleFrameError):  # not started: no frame yet, never a fake one
            cam.get()
        cam.start()
        frames = _stamps(cam, 10)
        stamps = [s for _, s in frames]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        for f, _ in frames:
            assert f.shape == (160, 160, 3) and f.dtype == np.uint8
        # Centre square crop of a 320x240 source drops the bright left strip (x < 32; kept: 40..280).
        assert frames[-1][0][:, :5].mean() < 120
        frame, stamp = cam.get()
        assert cam.frame_age() < 0.3 and time.monotonic() - stamp < 0.3
        assert cam.counters["reconnects"] == 0

        # The server goes away: the loss is detected, reconnects are attempted (and fail), and no
        # frame is passed off as fresh. (FFmpeg's MJPEG demuxer hands over the last part only when
        # the connection closes, so one frame may still arrive just after the kill.)
        pub.stop()
        srv.stop()
        assert eventually(lambda: cam.counters["reconnect_failures"] >= 2, 3.0), cam.counters
        assert cam.counters["read_failures"] + cam.counters["stalls"] >= 1
        n_frames = cam.counters["frames"]
        assert eventually(lambda: cam.frame_age() > 0.3, 1.0)
        with pytest.raises(StaleFrameError) as ei:
            cam.get()
        assert ei.value.age_s > 0.3 and ei.value.max_age_s == 0.3
        assert cam.get(max_age_s=10.0)[1] == cam.latest()[1]  # a looser bound is the caller's choice
        time.sleep(0.3)
        assert cam.counters["frames"] == n_frames and cam.counters["reconnects"] == 0
        with pytest.raises(StaleFrameError):
            cam.get()

        # The server comes back on the same port: picked up again.
        srv2, pub2 = _serve(port)
        f, s = cam.wait_frame(newer_than=time.monotonic(), timeout=5.0)
        assert f.shape == (160, 160, 3)
        assert cam.counters["reconnects"] >= 1
        cam.get()  # fresh again

        # A live server whose frames stop (the twin's server then re-sends its last JPEG every
        # 0.5 s): the repeats are not taken as new, the stall is detected and the stream reopened.
        pub2.running.clear()
        before = dict(cam.counters)
        assert eventually(lambda: cam.counters["stalls"] > before["stalls"], 3.0), cam.counters
        with pytest.raises(StaleFrameError):
            cam.get()
        assert eventually(lambda: cam.counters["reconnects"] > before["reconnects"], 3.0), cam.counters
        assert cam.counters["duplicates"] > before["duplicates"]
        pub2.running.set()
        cam.wait_frame(newer_than=time.monotonic(), timeout=5.0)
        cam.get()
    finally:
        t = time.monotonic()
        cam.stop()
        assert time.monotonic() - t < 2.0 and not cam.running
        pub.stop()
        if pub2 is not None:
            pub2.stop()
            srv2.stop()


def test_video_file_plays_at_its_rate_then_goes_stale(tmp_path) -> None:
    path = tmp_path / "clip.avi"
    fps, n = 20.0, 10
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (200, 100))
    assert w.isOpened()
    for i in range(n):
        img = np.full((100, 200, 3), 20 * i, np.uint8)
        img[..., 2] = 250  # red, in OpenCV's BGR order
        w.write(img)
    w.release()

    cam = Camera(str(path), 64, 48, max_age_s=0.2)
    with cam:
        frames = _stamps(cam, 5)
        stamps = [s for _, s in frames]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert all(f.shape == (48, 64, 3) for f, _ in frames)
        assert all(f[..., 0].mean() > f[..., 2].mean() + 40 for f, _ in frames)  # delivered as RGB: red first
        # Played at the file's rate (20 fps), not as fast as it decodes.
        assert (stamps[-1] - stamps[0]) / (len(stamps) - 1) == pytest.approx(1.0 / fps, abs=0.02)
        assert eventually(lambda: cam.counters["eof"] == 1, 2.0), cam.counters
        time.sleep(0.25)
        with pytest.raises(StaleFrameError):
            cam.get()
        assert cam.counters["frames"] == n and cam.counters["reconnects"] == 0

    # loop=True: the end of the file reopens it (a counted reconnect) and frames stay fresh.
    with Camera(str(path), 64, 48, max_age_s=0.3, backoff_s=0.01, loop=True) as cam:
        assert eventually(lambda: cam.counters["reconnects"] >= 1, 3.0), cam.counters
        cam.wait_frame(newer_than=time.monotonic(), timeout=1.0)
        cam.get()
        assert cam.counters["frames"] > n


def test_bad_sources_raise_camera_error(tmp_path) -> None:
    with pytest.raises(CameraError, match="no such file"):
        Camera(str(tmp_path / "missing.mp4"), 64, 64).start()
    bad = tmp_path / "not_a_video.avi"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(CameraError, match="could not be opened"):
        Camera(str(bad), 64, 64).start()
    with socket.socket() as sock:  # a free port; nothing listens there once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CameraError, match="could not be opened"):
        Camera(f"http://127.0.0.1:{port}/cam.mjpg", 64, 64, stall_timeout_s=0.5).start()
    with pytest.raises(ValueError):
        Camera(0, 0, 64)


def _set_torso(sim: MujocoSim, x: float, y: float, yaw: float) -> None:
    q = sim.data.qpos
    q[0:3] = [x, y, 0.258]
    q[3:7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
    sim.data.qvel[:] = 0.0
    mujoco.mj_forward(sim.model, sim.data)


def _torso_yaw(sim: MujocoSim) -> float:
    w, x, y, z = sim.torso_pose()[1]
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def test_aruco_position_heading_velocity_on_rendered_overhead_frames() -> None:
    sim = MujocoSim(QUAD)
    try:
        W, H = sim.config.camera.width, sim.config.camera.height
        K = sim.camera_matrix("overhead", W, H)
        pos, rot = sim.camera_pose("overhead")
        _set_torso(sim, 0.3, -0.2, 0.7)
        cal = ArucoCalibration.from_mujoco(K, pos, rot, plane_z_m=float(sim.marker_position()[2]), marker_id=0)
        tr = ArucoTracker(cal)
        p0 = tr.update(sim.render("overhead", W, H), stamp=10.0)
        assert p0 is not None and p0.vx is None
        assert np.linalg.norm(p0.position - sim.marker_position()[:2]) < 0.02, (p0, sim.marker_position())
        assert abs(wrap_angle(p0.heading - _torso_yaw(sim))) < 0.1, (p0.heading, _torso_yaw(sim))

        # Moved 5 cm, -3 cm and turned 0.1 rad in 0.1 s: 0.5, -0.3 m/s and 1 rad/s.
        _set_torso(sim, 0.35, -0.23, 0.8)
        p1 = tr.update(sim.render("overhead", W, H), stamp=10.1)
        assert np.linalg.norm(p1.position - sim.marker_position()[:2]) < 0.02
        assert abs(wrap_angle(p1.heading - _torso_yaw(sim))) < 0.1
        assert p1.vx == pytest.approx(0.5, abs=0.1) and p1.vy == pytest.approx(-0.3, abs=0.1)
        assert p1.yaw_rate == pytest.approx(1.0, abs=0.3)

        # Heading across the ±pi wrap, elsewhere in the view.
        _set_torso(sim, -0.4, 0.25, -3.0)
        p2 = tr.update(sim.render("overhead", W, H), stamp=10.2)
        assert np.linalg.norm(p2.position - sim.marker_position()[:2]) < 0.02
        assert abs(wrap_angle(p2.heading - _torso_yaw(sim))) < 0.1

        # Not seen (marker off-view): None, counted.
        _set_torso(sim, 5.0, 5.0, 0.0)
        assert tr.update(sim.render("overhead", W, H), stamp=10.3) is None and tr.missed == 1
    finally:
        sim.close()


def test_aruco_through_camera_on_twin_stream() -> None:
    """The twin's CameraStreamer rendering the quadruped -> MJPEG over HTTP -> Camera -> tracker."""
    sim = MujocoSim(QUAD)
    lock = threading.Lock()
    _set_torso(sim, 0.2, 0.1, -1.2)
    W, H = 320, 240
    srv = MjpegServer()
    streamer = CameraStreamer(sim, lock, "overhead", W, H, 15, srv.add_stream("overhead"))
    streamer.start()
    srv.start()
    try:
        tr = ArucoTracker(ArucoCalibration.from_sim(sim, "overhead", W, H))
        cfg = replace(sim.config.camera, source=srv.url("overhead"), width=W, height=H)
        with Camera.from_config(cfg, max_age_s=0.5) as cam:
            assert (cam.width, cam.height, cam.max_age_s) == (W, H, 0.5)
            frame, stamp = cam.wait_frame(timeout=5.0)
            frame, stamp = cam.get()
            p = tr.update(frame, stamp)
        assert p is not None
        assert np.linalg.norm(p.position - sim.marker_position()[:2]) < 0.02, (p, sim.marker_position())
        assert abs(wrap_angle(p.heading - _torso_yaw(sim))) < 0.1
    finally:
        streamer.stop()
        srv.stop()
        sim.close()
