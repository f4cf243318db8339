"""The SDK's PortHandler, tuned for a control loop: shorter timeouts, no busy spin, byte counts.

Why a subclass and not patches of dynamixel_sdk.port_handler.LATENCY_TIMER: the module constant is
process-wide (it would also change other users' ports), while these overrides stay per port.

* Timeout. The SDK waits `bytes * tx_time + 2 * LATENCY_TIMER + 2 ms`, with LATENCY_TIMER = 16 ms,
  the FTDI default. With the adapter's latency timer at 1 ms (`robosac ftdi-latency` / the udev
  rule in tools/) the reply's USB frame is flushed within 1 ms, so `2 * latency_ms + margin_ms`
  with latency_ms = 1 is safe and a silent servo costs ~4 ms + wire time instead of ~36 ms.
  Keep latency_ms >= the adapter's real latency timer, or replies get cut off as timeouts:
  ServoBus.open() reads the timer from sysfs (read_latency_timer) and uses it when it is larger.
* No busy spin. The SDK opens pyserial with timeout=0 and polls `read()` in a loop until its own
  deadline, pinning a core for the whole transaction (never while idle: there is no background
  thread; it only spins inside a call). We give pyserial a short blocking timeout instead, so each
  `readPort(n)` sleeps in select() until the n bytes the SDK asked for arrive (the SDK always asks
  for exactly the bytes it still needs), or `poll_s` passes; the SDK's deadline logic is unchanged
  and overshoots by at most poll_s.
* Clock. The SDK measures timeouts on time.time() (wall clock, jumps with NTP); we use monotonic.
* Counting. tx/rx bytes, for telemetry and the bench's bytes-per-cycle figure.
"""

from __future__ import annotations

import errno
import os
import time

import serial
from dynamixel_sdk import PortHandler

from robosac.hal.faults import PortError, PortNotFoundError, PortPermissionError


class LowLatencyPortHandler(PortHandler):
    """dynamixel_sdk.PortHandler with per-port latency, blocking reads and byte counters."""

    def __init__(self, port_name: str, latency_ms: float = 1.0, margin_ms: float = 2.0, poll_s: float = 0.001):
        super().__init__(port_name)
        self.latency_ms = float(latency_ms)
        self.margin_ms = float(margin_ms)
        self.poll_s = float(poll_s)
        self.tx_bytes = 0
        self.rx_bytes = 0

    # -- timing --
    def getCurrentTime(self) -> float:  # ms, monotonic
        return time.monotonic() * 1000.0

    def setPacketTimeout(self, packet_length: int) -> None:
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * self.latency_ms + self.margin_ms

    # -- I/O --
    def setupPort(self, cflag_baud: int) -> bool:
        ok = super().setupPort(cflag_baud)
        # Blocking read with a short timeout: see module docstring ("No busy spin").
        self.ser.timeout = self.poll_s
        try:
            # ASYNC_LOW_LATENCY: ftdi_sio then uses a 1 ms latency timer. Not supported on ptys
            # and some adapters; the sysfs latency_timer (robosac ftdi-latency) is the other route.
            self.ser.set_low_latency_mode(True)
        except (ValueError, OSError, AttributeError, NotImplementedError):
            pass
        return ok

    def readPort(self, length: int) -> bytes:
        data = self.ser.read(length)
        self.rx_bytes += len(data)
        return data

    def writePort(self, packet) -> int:
        n = self.ser.write(bytes(packet))
        self.tx_bytes += n or 0
        return n


def open_port(
    path: str, baud: int, latency_ms: float = 1.0, margin_ms: float = 2.0
) -> LowLatencyPortHandler:
    """Open `path` at `baud` through the SDK; raise PortNotFoundError / PortPermissionError /
    PortError with a fix the operator can act on."""
    try:
        os.stat(path)  # unlike os.path.exists, tells "missing" from "a parent dir is not ours"
    except FileNotFoundError:
        raise PortNotFoundError(path) from None
    except PermissionError as e:
        raise PortPermissionError(path, str(e)) from None
    if not os.access(path, os.R_OK | os.W_OK):
        raise PortPermissionError(path)
    port = LowLatencyPortHandler(path, latency_ms=latency_ms, margin_ms=margin_ms)
    if port.getCFlagBaud(baud) <= 0:
        raise PortError(
            f"baud {baud} not supported by dynamixel_sdk's PortHandler "
            "(accepted: 9600 ... 4000000; 4.5M is not)"
        )
    port.baudrate = baud
    try:
        port.openPort()
    except serial.SerialException as exc:
        code = getattr(exc, "errno", None)
        if code == errno.ENOENT:
            raise PortNotFoundError(path, str(exc)) from exc
        if code in (errno.EACCES, errno.EPERM):
            raise PortPermissionError(path, str(exc)) from exc
        raise PortError(f"cannot open {path!r}: {exc}") from exc
    return port


def latency_timer_path(port: str, sysfs_root: str = "/sys") -> str:
    """sysfs file of the FTDI latency timer behind `port` (which may be a by-id symlink)."""
    tty = os.path.basename(os.path.realpath(port))
    return os.path.join(sysfs_root, "bus", "usb-serial", "devices", tty, "latency_timer")


def read_latency_timer(port: str, sysfs_root: str = "/sys") -> int | None:
    """The adapter's latency timer in ms, or None if it has none (not FTDI, a pty, ...)."""
    try:
        with open(latency_timer_path(port, sysfs_root)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def close_quietly(port: PortHandler | None) -> None:
    """Close a port that may already be dead (unplugged): never raises."""
    if port is None or port.ser is None:
        return
    try:
        port.ser.close()
    except Exception:  # noqa: BLE001 - a vanished device can raise anything here
        pass
    port.is_open = False
    port.is_using = False
