"""Rendered cameras served as MJPEG over HTTP on 127.0.0.1, so `cv2.VideoCapture(url)` opens them
like a network camera (OpenCV's FFmpeg backend reads `multipart/x-mixed-replace` JPEG streams).

Endpoints (one server, an ephemeral port):
    GET /<camera>.mjpg   the live stream: parts of `Content-Type: image/jpeg` with Content-Length
    GET /<camera>.jpg    the latest frame, once
    GET /state           JSON from the `state` callback (the twin's ground truth and clock)
    GET /                plain-text list of the above

`CameraStreamer` renders one MJCF camera at a fixed rate in a process of its own (so neither its
drawing nor its copy of the scene competes with the twin's serial emulator), from a shared-memory snapshot of the joint positions that the twin's
physics thread keeps current, and publishes the JPEGs here. Late frames are counted, never hidden.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["FrameSlot", "MjpegServer", "CameraStreamer", "SceneSnapshot", "StreamStats"]

BOUNDARY = "robosacframe"


class FrameSlot:
    """The latest JPEG of one stream, with a sequence number readers wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.stamp = 0.0  # time.monotonic() of the frame, s

    def publish(self, jpeg: bytes) -> None:
        with self._cond:
            self.jpeg = jpeg
            self.seq += 1
            self.stamp = time.monotonic()
            self._cond.notify_all()

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, bytes | None]:
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq, timeout=timeout)
            return self.seq, self.jpeg


class MjpegServer:
    """HTTP server for MJPEG streams on host:port (port 0 = ephemeral; see `port` after start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state: Callable[[], dict[str, Any]] | None = None) -> None:
        self.slots: dict[str, FrameSlot] = {}
        self.state = state
        self._stop = threading.Event()
        self.clients = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet: no per-request log
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0].strip("/")
                if path == "":
                    body = "\n".join([f"/{n}.mjpg" for n in server.slots] + [f"/{n}.jpg" for n in server.slots] + ["/state"]).encode()
                    return self._send(200, "text/plain", body)
                if path == "state":
                    body = json.dumps(server.state() if server.state else {}).encode()
                    return self._send(200, "application/json", body)
                name, _, ext = path.rpartition(".")
                slot = server.slots.get(name)
                if slot is None or ext not in ("mjpg", "jpg"):
                    return self._send(404, "text/plain", b"not found\n")
                if ext == "jpg":
                    _, jpeg = slot.wait_newer(0, timeout=2.0)
                    if jpeg is None:
                        return self._send(503, "text/plain", b"no frame yet\n")
                    return self._send(200, "image/jpeg", jpeg)
                self._stream(slot)

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, slot: FrameSlot) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                server.clients += 1
                seq = 0
                try:
                    while not server._stop.is_set():
                        seq, jpeg = slot.wait_newer(seq, timeout=0.5)
                        if jpeg is None:
                            continue
                        head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                        self.wfile.write(head + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client went away
                finally:
                    server.clients -= 1

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    def add_stream(self, name: str) -> FrameSlot:
        return self.slots.setdefault(name, FrameSlot())

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}.mjpg"

    def state_url(self) -> str:
        return f"http://{self.host}:{self.port}/state"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="mjpeg-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


@dataclass(frozen=True)
class StreamStats:
    frames: int
    late: int  # frames rendered after their slot had passed (the stream fell behind its rate)
    fps: float  # measured since start
    render_ms: float  # mean render + encode time per frame

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SceneSnapshot:
    """The simulation's joint positions (qpos, rad and m) in shared memory, for a renderer in
    another process. `publish` never waits: the twin's physics thread calls it after every step,
    and a copy it cannot make now (the renderer is reading) is made after its next step."""

    def __init__(self, nq: int, ctx: Any) -> None:
        self.raw = ctx.RawArray("d", int(nq))
        self.lock = ctx.Lock()
        self._q = np.frombuffer(self.raw, dtype=np.float64)

    def publish(self, data: Any) -> bool:
        """Copy `data.qpos` (an MjData's) if the reader is not holding the lock; True if copied."""
        if not self.lock.acquire(block=False):
            return False
        try:
            self._q[:] = data.qpos
        finally:
            self.lock.release()
        return True


class CameraStreamer:
    """Renders `camera` of `sim`'s model at width×height px and `fps`, publishing JPEGs to `slot`.

    The renderer runs in its own process (spawned, with niceness `nice`). As a thread of the twin it
    took the twin's lock to copy the scene, and under load it was switched out holding that lock or
    the GIL, with the serial emulator waiting behind it (benchmarks/render_gil.py: main-thread gaps
    of 36 ms beside two training runs, against 6 ms with the render process). The process renders
    from a `SceneSnapshot` of qpos: `publish_scene(data)` updates it (the twin's physics thread calls
    it after each step, see `RealtimeTwin.scene_observers`); `start()` takes one under `lock` (the
    lock that guards `sim`). A thread here receives the JPEGs and publishes them. quality: JPEG quality 0–100.
    """

    def __init__(
        self, sim: Any, lock: Any, camera: str, width: int, height: int, fps: float, slot: FrameSlot, quality: int = 90, nice: int = 10
    ) -> None:
        self.sim, self.lock = sim, lock
        self.camera, self.width, self.height, self.fps = camera, int(width), int(height), float(fps)
        self.slot, self.quality, self.nice = slot, int(quality), int(nice)
        self._ctx = mp.get_context("spawn")  # never fork a process that holds GL contexts and threads
        self.snapshot = SceneSnapshot(sim.model.nq, self._ctx)
        self._stop = self._ctx.Event()
        self._proc: Any = None
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stats = StreamStats(0, 0, 0.0, 0.0)
        self._t0 = 0.0

    @property
    def frames(self) -> int:
        return self._stats.frames

    def publish_scene(self, data: Any) -> None:
        self.snapshot.publish(data)

    def start(self) -> None:
        with self.lock:
            self.snapshot.publish(self.sim.data)  # nothing else holds the snapshot yet: never skipped
        parent, child = self._ctx.Pipe(duplex=False)
        self._proc = self._ctx.Process(
            target=_render_process, name=f"camera-{self.camera}", daemon=True,
            args=(self.sim.model, self.snapshot.raw, self.snapshot.lock, self.camera, self.width, self.height,
                  self.fps, self.quality, self.nice, child, self._stop),
        )
        self._proc.start()
        child.close()  # the child's end lives in the child: its exit is our EOF
        self._conn = parent
        # Spawning imports mujoco and cv2 afresh and makes a GL context: seconds on a loaded machine.
        msg = parent.recv() if parent.poll(60.0) else ("error", "the render process did not start within 60 s")
        if msg[0] != "ready":
            self.stop()
            raise RuntimeError(f"camera {self.camera!r}: {msg[1]}")
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._receive, name=f"camera-{self.camera}", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                _, jpeg, frames, late, busy_s = self._conn.recv()
            except (EOFError, OSError):
                return  # the render process ended (stopped, or died: the stream goes stale)
            self.slot.publish(jpeg)
            el = time.perf_counter() - self._t0
            self._stats = StreamStats(frames, late, frames / el if el > 0 else 0.0, 1000.0 * busy_s / max(frames, 1))

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.join(timeout=5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=2.0)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._conn is not None:
            self._conn.close()

    def stats(self) -> StreamStats:
        return self._stats


def _render_process(model: Any, q_raw: Any, q_lock: Any, camera: str, width: int, height: int, fps: float,
                    quality: int, nice: int, conn: Any, stop: Any) -> None:
    """The render process: qpos snapshot -> kinematics -> render -> JPEG -> conn, at `fps`."""
    try:
        os.nice(nice)
    except OSError:
        pass
    try:
        import mujoco

        data = mujoco.MjData(model)
        q = np.frombuffer(q_raw, dtype=np.float64)
        renderer = mujoco.Renderer(model, height, width)  # the GL context belongs to this process
    except BaseException as e:  # report to start()
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    period = 1.0 / fps
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    frames = late = 0
    busy = 0.0
    t_next = time.perf_counter()
    try:
        while not stop.is_set():
            t = time.perf_counter()
            with q_lock:
                data.qpos[:] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            renderer.update_scene(data, camera)
            rgb = renderer.render()
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
            if ok:
                frames += 1
                busy += time.perf_counter() - t
                conn.send(("frame", buf.tobytes(), frames, late, busy))
            t_next += period
            pause = t_next - time.perf_counter()
            if pause < 0:
                late += 1
                t_next = time.perf_counter()  # do not burst to catch up
            else:
                stop.wait(pause)
    except (BrokenPipeError, EOFError, OSError):
        pass  # the twin went away
    finally:
        renderer.close()
        conn.close()
