"""Rendered cameras served as MJPEG over HTTP on 127.0.0.1, so `cv2.VideoCapture(url)` opens them
like a network camera (OpenCV's FFmpeg backend reads `multipart/x-mixed-replace` JPEG streams).

Endpoints (one server, an ephemeral port):
    GET /<camera>.mjpg   the live stream: parts of `Content-Type: image/jpeg` with Content-Length
    GET /<camera>.jpg    the latest frame, once
    GET /state           JSON from the `state` callback (the twin's ground truth and clock)
    GET /                plain-text list of the above

`CameraStreamer` is the thread that renders one MJCF camera at a fixed rate. It owns its
`mujoco.Renderer` (the OpenGL context is current on the thread that made it, so the renderer is
created and used on that thread only), copies the scene under the twin's lock and renders outside
it, then JPEG-encodes and publishes. Late frames are counted, never hidden.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402

__all__ = ["FrameSlot", "MjpegServer", "CameraStreamer", "StreamStats"]

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


class CameraStreamer:
    """Renders `camera` of the twin's model at width×height px and `fps`, publishing JPEGs to `slot`.

    lock: the lock that guards `sim` (the twin's). quality: JPEG quality 0–100. nice: the render
    thread's niceness (Linux: per thread), so physics and the servo emulator come first.
    """

    def __init__(
        self, sim: Any, lock: Any, camera: str, width: int, height: int, fps: float, slot: FrameSlot, quality: int = 90, nice: int = 10
    ) -> None:
        self.sim, self.lock = sim, lock
        self.camera, self.width, self.height, self.fps = camera, int(width), int(height), float(fps)
        self.slot, self.quality, self.nice = slot, int(quality), int(nice)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.frames = 0
        self.late = 0
        self._busy = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera}", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10.0)
        if self._error is not None:
            raise RuntimeError(f"camera {self.camera!r}: {self._error}") from self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        import mujoco

        try:
            # Rendering is the twin's bulk CPU load; the physics clock and the serial emulator
            # must win any contention for a core (measured: without this a 640x480 render on a
            # 2-core machine delayed status packets past the SDK's 34 ms timeout).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (OSError, AttributeError):
            pass
        try:
            # Created here: the GL context belongs to this thread.
            renderer = mujoco.Renderer(self.sim.model, self.height, self.width)
            with self.lock:
                renderer.update_scene(self.sim.data, self.camera)
        except BaseException as e:  # report to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        period = 1.0 / self.fps
        params = [int(cv2.IMWRITE_JPEG_QUALITY), self.quality]
        self._t0 = t_next = time.perf_counter()
        try:
            while not self._stop.is_set():
                t = time.perf_counter()
                with self.lock:
                    renderer.update_scene(self.sim.data, self.camera)
                rgb = renderer.render()
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
                if ok:
                    self.slot.publish(buf.tobytes())
                    self.frames += 1
                self._busy += time.perf_counter() - t
                t_next += period
                pause = t_next - time.perf_counter()
                if pause < 0:
                    self.late += 1
                    t_next = time.perf_counter()  # do not burst to catch up
                else:
                    self._stop.wait(pause)
        finally:
            renderer.close()

    def stats(self) -> StreamStats:
        el = time.perf_counter() - self._t0 if self._t0 else 0.0
        return StreamStats(
            frames=self.frames,
            late=self.late,
            fps=self.frames / el if el > 0 else 0.0,
            render_ms=1000.0 * self._busy / self.frames if self.frames else 0.0,
        )
