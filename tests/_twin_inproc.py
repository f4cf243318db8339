"""The MuJoCo twin run inside the test process: the same parts `robosac twin` wires together
(MujocoSim in real time, the Protocol 2.0 chain on a pty, rendered frames over MJPEG/HTTP), so a
test can both drive the robot through the real SDK / cv2.VideoCapture and reach the chain to stage
conditions (temperature) and inject faults."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")

from robosac.config import RobotConfig, load_config  # noqa: E402
from sim.camera_server import CameraStreamer, MjpegServer  # noqa: E402
from sim.dxl import ServoChain  # noqa: E402
from sim.realtime import RealtimeTwin  # noqa: E402
from sim.twin_cli import make_sim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# On a 2-core machine shared with pytest, replies need more than the 2 ms real servos need.
BUS = dict(margin_ms=20.0, reopen_backoff_s=0.02)


class InprocTwin:
    def __init__(self, config: str, fps: float | None = None, randomize_seed: int | None = None) -> None:
        self.cfg: RobotConfig = load_config(ROOT / config)
        # randomize_seed: the model as `robosac twin` runs it by default, randomised once from it.
        self.sim = make_sim(self.cfg, seed=randomize_seed, randomize=randomize_seed is not None)
        self.twin = RealtimeTwin(self.sim)
        self.chain = ServoChain.from_config(self.cfg, joints=self.twin.joint_models())
        self.server = MjpegServer(port=0)
        cam, c = self.cfg.sim.camera, self.cfg.camera
        self.streamer = CameraStreamer(self.sim, self.twin.lock, cam, c.width, c.height, fps or c.fps, self.server.add_stream(cam))
        self.twin.scene_observers.append(self.streamer.publish_scene)
        self.camera_url = self.server.url(cam)
        self.port = ""

    def restart_camera(self) -> None:
        """A new render process for the same stream (after `streamer.stop()` simulated a dead camera)."""
        cam, c = self.cfg.sim.camera, self.cfg.camera
        self.streamer = CameraStreamer(self.sim, self.twin.lock, cam, c.width, c.height, c.fps, self.server.add_stream(cam))
        self.streamer.start()
        self.twin.scene_observers[:] = [self.streamer.publish_scene]

    def start(self) -> "InprocTwin":
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # as `robosac twin` does: the emulator must answer promptly
        self.streamer.start()
        self.server.start()
        self.port = self.chain.start()
        self.twin.start()
        return self

    def stop(self) -> None:
        self.chain.stop()
        self.streamer.stop()
        self.server.stop()
        self.twin.stop()
        self.sim.close()
        sys.setswitchinterval(self._switch)


@contextmanager
def running_twin(config: str, fps: float | None = None, randomize_seed: int | None = None) -> Iterator[InprocTwin]:
    t = InprocTwin(config, fps, randomize_seed).start()
    try:
        yield t
    finally:
        t.stop()
