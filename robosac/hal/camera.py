"""The robot's camera: a capture thread over `cv2.VideoCapture` that keeps only the newest frame.

    with Camera("http://127.0.0.1:8000/overhead.mjpg", 128, 128, max_age_s=0.2) as cam:
        frame, stamp = cam.get()        # RGB uint8 (128, 128, 3), time.monotonic() of its capture

Sources: a device index (int, or a string of digits), a video file path, or a URL (the twin's
MJPEG stream). Each frame is centre-cropped to the target aspect ratio, then resized to
width x height, converted BGR -> RGB and stamped with `time.monotonic()` when `read()` returned it.

Staleness is never hidden: `get()` raises `StaleFrameError` (with the age) when the newest frame is
older than the bound. A source that fails to read, or delivers no new frame within `stall_timeout_s`,
is released and reopened with exponential backoff; every event is counted in `counters`.

Repeated frames: the twin's MJPEG server re-sends its last JPEG every 0.5 s when its renderer
stops publishing, and some drivers repeat a buffer. Byte-identical consecutive frames are counted
(`counters["duplicates"]`); with `reject_duplicates=True` they do not refresh the stamp, so a source
that only repeats itself goes stale and, after `stall_timeout_s`, counts as stalled and is reopened.
It is off by default because a still scene rendered by the twin is byte-identical too (a real
sensor's noise never is).

A file is played once at its own frame rate (like a camera); at its end no new frames come, so
frames go stale (`counters["eof"]` counts it). With `loop=True` a file is reopened at its end, which
counts as a reconnect. Live sources (device, URL) are reconnected whenever they fail or stall.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["Camera", "CameraError", "StaleFrameError", "crop_resize"]


class CameraError(RuntimeError):
    """The camera source cannot be opened (or the camera was used before `start()`)."""


class StaleFrameError(CameraError):
    """The newest frame is older than the allowed age (or there is no frame yet: age = inf)."""

    def __init__(self, age_s: float, max_age_s: float, source: Any) -> None:
        self.age_s = float(age_s)
        self.max_age_s = float(max_age_s)
        self.source = source
        what = "no frame yet" if math.isinf(age_s) else f"newest frame is {age_s * 1000:.0f} ms old"
        super().__init__(f"camera {source!r}: {what} (allowed {max_age_s * 1000:.0f} ms)")


def crop_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop an image (H, W, 3) or gray (H, W) to the aspect width:height and resize it to
    (height, width, 3) uint8, keeping its channel order (a gray image gets three equal channels).
    Shrinking averages the source pixels (area interpolation), so a frame rendered or captured
    larger keeps sub-pixel edges at the policy's size."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    if w * height > h * width:  # too wide: crop columns
        cw = max(1, int(round(h * width / height)))
        x0 = (w - cw) // 2
        image = image[:, x0 : x0 + cw]
    elif w * height < h * width:  # too tall: crop rows
        ch = max(1, int(round(w * height / width)))
        y0 = (h - ch) // 2
        image = image[y0 : y0 + ch]
    if image.shape[1] != width or image.shape[0] != height:
        interp = cv2.INTER_AREA if image.shape[1] >= width else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interp)
    return np.ascontiguousarray(image)


def _normalize_source(source: int | str) -> int | str:
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return source


def _is_url(source: int | str) -> bool:
    return isinstance(source, str) and "://" in source


class Camera:
    """Latest-frame capture thread over cv2.VideoCapture.

    source: device index, file path or URL. width, height: output size (px).
    max_age_s: default bound for `get()` (s). stall_timeout_s: no new frame for this long = stalled
    (also the FFmpeg open/read timeout for URLs). backoff_s / max_backoff_s: first and largest wait
    between reconnect attempts (doubling). loop: reopen a file at its end instead of going stale.
    reject_duplicates: a byte-identical repeat of the previous frame is not a new frame (see above).
    """

    def __init__(
        self,
        source: int | str,
        width: int,
        height: int,
        max_age_s: float = 0.2,
        *,
        stall_timeout_s: float = 1.0,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        loop: bool = False,
        reject_duplicates: bool = False,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"camera size must be positive, got {width}x{height}")
        if max_age_s <= 0 or stall_timeout_s <= 0:
            raise ValueError("max_age_s and stall_timeout_s must be > 0")
        self.source = _normalize_source(source)
        self.width, self.height = int(width), int(height)
        self.max_age_s = float(max_age_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.loop = bool(loop)
        self.reject_duplicates = bool(reject_duplicates)
        self.is_file = isinstance(self.source, str) and not _is_url(self.source)
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._stamp = -math.inf
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap: Any = None
        self.counters: dict[str, int] = {
            "frames": 0,  # frames delivered
            "read_failures": 0,  # read() returned no frame on a live source
            "stalls": 0,  # no new frame within stall_timeout_s
            "reconnects": 0,  # successful reopen after a failure, stall or (loop) file end
            "reconnect_failures": 0,  # reopen attempts that failed
            "eof": 0,  # file sources: end of file reached
            "duplicates": 0,  # byte-identical repeats of the previous frame
        }

    @classmethod
    def from_config(cls, config: Any, max_age_s: float = 0.2, **kw: Any) -> "Camera":
        """From a `robosac.config.CameraConfig` (source, width, height; fps is the source's own)."""
        return cls(config.source, config.width, config.height, max_age_s, **kw)

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> Any:
        if self.is_file and not Path(self.source).exists():
            return None
        if _is_url(self.source):
            ms = int(self.stall_timeout_s * 1000)
            cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def start(self) -> "Camera":
        """Open the source (CameraError if it cannot be opened) and start the capture thread."""
        if self._thread is not None:
            return self
        if self.is_file and not Path(self.source).exists():
            raise CameraError(f"camera source {self.source!r}: no such file")
        cap = self._open()
        if cap is None:
            raise CameraError(f"camera source {self.source!r} could not be opened by cv2.VideoCapture")
        self._cap = cap
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.source}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and release the source (waits at most stall_timeout_s + 1 s)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.stall_timeout_s + 1.0)
            self._thread = None

    def __enter__(self) -> "Camera":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ capture thread
    def _run(self) -> None:
        cap = self._cap
        period = 0.0
        if self.is_file:
            fps = cap.get(cv2.CAP_PROP_FPS)
            period = 1.0 / fps if fps and fps > 0 else 1.0 / 30.0
        t_next = time.monotonic()
        last_new = time.monotonic()
        last_crc: int | None = None
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._reconnect()
                    if cap is None:
                        break  # stopped while reconnecting
                    last_new = t_next = time.monotonic()
                    continue
                ok, bgr = cap.read()
                now = time.monotonic()
                if ok and bgr is not None and bgr.size:
                    crc = zlib.crc32(np.ascontiguousarray(bgr).data)
                    dup, last_crc = crc == last_crc, crc
                    if dup:
                        self.counters["duplicates"] += 1
                    if dup and self.reject_duplicates:
                        if not self.is_file and now - last_new >= self.stall_timeout_s:
                            self.counters["stalls"] += 1
                            cap.release()
                            cap, last_crc = None, None
                        continue
                    frame = cv2.cvtColor(crop_resize(bgr, self.width, self.height), cv2.COLOR_BGR2RGB)
                    with self._cond:
                        self._frame, self._stamp = frame, now
                        self._seq += 1
                        self.counters["frames"] += 1
                        self._cond.notify_all()
                    last_new = now
                    if period:  # play files at their own rate
                        t_next += period
                        pause = t_next - time.monotonic()
                        if pause > 0:
                            self._stop.wait(pause)
                        else:
                            t_next = time.monotonic()
                    continue
                if self.is_file:
                    self.counters["eof"] += 1
                    cap.release()
                    cap = None
                    if not self.loop:
                        self._stop.wait()  # a file does not come back: frames go stale
                        break
                    continue  # loop: reopened by _reconnect (counted)
                # live source: a failed read (lost) or a read that kept returning nothing (stalled)
                if now - last_new >= self.stall_timeout_s:
                    self.counters["stalls"] += 1
                else:
                    self.counters["read_failures"] += 1
                cap.release()
                cap, last_crc = None, None
        finally:
            if cap is not None:
                cap.release()
            self._cap = None

    def _reconnect(self) -> Any:
        """Reopen the source with exponential backoff until it opens or stop() is called."""
        wait = self.backoff_s
        while not self._stop.wait(wait):
            cap = self._open()
            if cap is not None:
                self.counters["reconnects"] += 1
                return cap
            self.counters["reconnect_failures"] += 1
            wait = min(wait * 2.0, self.max_backoff_s)
        return None

    # ------------------------------------------------------------------ readers
    def latest(self) -> tuple[np.ndarray | None, float]:
        """The newest frame (RGB uint8, height x width x 3; None before the first) and its capture
        time (time.monotonic(), s; -inf before the first). No freshness check: see get()."""
        with self._cond:
            return self._frame, self._stamp

    def frame_age(self) -> float:
        """Seconds since the newest frame was captured (inf before the first frame)."""
        with self._cond:
            stamp = self._stamp
        return time.monotonic() - stamp

    def get(self, max_age_s: float | None = None) -> tuple[np.ndarray, float]:
        """The newest frame and its stamp; StaleFrameError if it is older than max_age_s (default:
        the camera's max_age_s) or there is none."""
        bound = self.max_age_s if max_age_s is None else float(max_age_s)
        with self._cond:
            frame, stamp = self._frame, self._stamp
        age = time.monotonic() - stamp
        if frame is None or age > bound:
            raise StaleFrameError(age, bound, self.source)
        return frame, stamp

    def wait_frame(self, newer_than: float = -math.inf, timeout: float = 1.0) -> tuple[np.ndarray, float]:
        """Block (without spinning) until a frame stamped after `newer_than` arrives; StaleFrameError
        on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._stamp > newer_than or self._stop.is_set(), timeout=timeout)
            frame, stamp = self._frame, self._stamp
        if not ok or frame is None or stamp <= newer_than:
            raise StaleFrameError(time.monotonic() - stamp, timeout, self.source)
        return frame, stamp
