"""Helpers for the emulator tests: a raw Protocol 2.0 host on pyserial (no SDK), packet builders,
and the two polls with a deadline that other tests use too: `eventually` (a bool to assert) and
`wait_for` (the value, or an AssertionError naming what never came)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import serial

from robosac.config import RobotConfig, load_config

from sim.dxl import protocol as P


class RawHost:
    """Talks bytes to the emulator's pty, reading whole status packets by their LEN field."""

    def __init__(self, port: str, baud: int = 1_000_000) -> None:
        self.ser = serial.Serial(port, baud, timeout=0)
        self._buf = b""

    def close(self) -> None:
        self.ser.close()

    def send(self, data: bytes) -> None:
        self.ser.reset_input_buffer()
        self._buf = b""
        self.ser.write(data)

    def recv_raw(self, timeout: float = 0.1) -> bytes | None:
        """One status packet as on the wire (stuffed), or None on timeout."""
        buf = self._buf
        deadline = time.monotonic() + timeout
        while True:
            buf += self.ser.read(4096)
            i = buf.find(P.HEADER)
            if i >= 0 and len(buf) >= i + 7:
                total = 7 + (buf[i + 5] | buf[i + 6] << 8)
                if len(buf) >= i + total:
                    self._buf = buf[i + total :]
                    return buf[i : i + total]
            if time.monotonic() > deadline:
                self._buf = buf
                return None
            time.sleep(0.0002)

    def recv(self, timeout: float = 0.1) -> tuple[int, int, bytes] | None:
        raw = self.recv_raw(timeout)
        return None if raw is None else P.parse_status(raw)

    def txrx(self, dxl_id: int, inst: int, params: bytes = b"", timeout: float = 0.1) -> tuple[int, int, bytes] | None:
        self.send(P.build_instruction(dxl_id, inst, params))
        return self.recv(timeout)

    def read(self, dxl_id: int, addr: int, length: int) -> tuple[int, bytes]:
        r = self.txrx(dxl_id, P.INST_READ, P.u16(addr) + P.u16(length))
        assert r is not None, "no reply"
        return r[1], r[2]

    def write(self, dxl_id: int, addr: int, value: int, size: int) -> int:
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        r = self.txrx(dxl_id, P.INST_WRITE, P.u16(addr) + data)
        assert r is not None, "no reply"
        return r[1]

    def read_int(self, dxl_id: int, addr: int, size: int, signed: bool = True) -> int:
        err, data = self.read(dxl_id, addr, size)
        assert err & 0x7F == 0, f"error {err:#x}"
        return int.from_bytes(data, "little", signed=signed)


def h(s: str) -> bytes:
    """Bytes from an e-manual style hex listing: '0xFF 0xFF 0xFD ...' or 'FF FF FD'."""
    return bytes(int(x, 16) for x in s.replace(",", " ").split())


def position_mode_claw() -> RobotConfig:
    """hardware_configs/claw.yaml with the fingers in plain position mode (3) instead of
    current-based position mode (5): full stall torque and the firmware's own position limits, the
    setting the position-mode servo model and the jam physics are checked against."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "hardware_configs" / "claw.yaml")
    return replace(cfg, servos=tuple(replace(s, operating_mode=3) if s.operating_mode == 5 else s for s in cfg.servos))


def wait_for(pred, timeout_s: float, what: str, poll_s: float = 0.005):
    """Poll ``pred`` every ``poll_s`` until it returns something true, and return that; an
    AssertionError naming ``what`` once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def eventually(pred, timeout_s: float = 2.0) -> bool:
    """Poll ``pred`` until it holds or ``timeout_s`` passes; its last value. For what follows an
    instruction with no reply (a Sync Write, a broadcast): the emulator takes it in when its thread
    runs, within ms alone but not always within a fixed 20 ms beside a busy core."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return bool(pred())
        time.sleep(0.005)
    return True
