"""A chain of emulated Dynamixel servos behind a pseudo-terminal.

The stock dynamixel-sdk opens the returned path like a U2D2 adapter and cannot tell it from real
servos. One thread waits on the pty master with select() (no busy spin), parses instruction
packets, lets each addressed servo execute them and writes the status packets back.

    from sim.dxl import ServoChain, ServoSpec
    with ServoChain([ServoSpec(id=1, model="XM430-W350", firmware=46)], baud=1_000_000) as chain:
        port = chain.port            # stable symlink, e.g. /tmp/robosac-twin-abc/serial -> /dev/pts/7
        chain.servo(1).get("present_position")
        chain.faults.drop_replies(1, 2)
        chain.stats()                # bytes / packets received and sent

`start()` returns a symlink in a private temp dir that points at the current pty; `unplug()`
closes the pty (and removes the link, so opening the port fails like a pulled USB adapter) and
`replug()` opens a new pty and points the same link at it, so a host that reopens the same path
finds the chain again. Next to the link is ``control.sock`` for `robosac fault`.

Bus rules emulated beyond single servos: broadcast ping answered by every servo in ID order;
broadcast read/write and other broadcast instructions get no reply; sync/bulk reads answered in
the order of the instruction's ID list, each servo after its Return Delay Time (2 us units,
honoured in real time); Fast Sync/Bulk Read answered as one packet built by the chain (servos
with firmware < 45 do not know the instruction and stay silent, truncating the reply there);
servos whose Baud Rate item differs from the host's termios speed do not hear the host; two
servos with the same ID answering at once collide (bytes AND-ed, as on an open-drain bus);
optional pacing sleeps bytes*10/baud for every packet in each direction.
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import shutil
import socketserver
import tempfile
import sys
import termios
import threading
import time
import traceback
import tty
from typing import TYPE_CHECKING, Any, Sequence

from . import protocol as P
from .control_table import MODELS, TICKS_PER_REV
from .faults import Faults
from .servo import GoalLimits, Servo, ServoSpec

if TYPE_CHECKING:  # pragma: no cover
    from robosac.config import RobotConfig

# termios speed constant -> bps (for "does this servo hear the host at this baud").
_TERMIOS_BAUD: dict[int, int] = {}
for _b in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000,
           1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000):
    _c = getattr(termios, f"B{_b}", None)
    if _c is not None:
        _TERMIOS_BAUD[_c] = _b

_PARTIAL_PACKET_TIMEOUT_S = 0.05  # a half-received packet older than this is dropped


class ServoChain:
    """An emulated servo chain on a pty. See the module docstring.

    servos: ServoSpec list (order does not matter; replies follow the protocol's ordering).
    baud: bps used for pacing when the host's speed cannot be read from the pty.
    pace: sleep bytes*10/baud per packet so wire time is realistic (off by default).
    usb_latency_ms: model a USB-serial adapter's latency timer (FTDI default 16 ms, U2D2 set to
        1 ms by udev rule): replies reach the host in 62-byte blocks, a partial block only after
        this many ms. 0 (default) = bytes arrive as soon as they are written.
    reboot_s: how long a servo ignores the bus after a Reboot instruction.
    check_host_baud: servos whose Baud Rate differs from the host's port speed do not hear it.
    link: path of the stable symlink (default: a new temp dir).
    """

    def __init__(
        self,
        servos: Sequence[ServoSpec],
        baud: int = 1_000_000,
        *,
        pace: bool = False,
        usb_latency_ms: float = 0.0,
        reboot_s: float = 0.05,
        check_host_baud: bool = True,
        link: str | None = None,
        clock=time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self.servos: list[Servo] = [Servo(s, clock=clock) for s in servos]
        self.baud = int(baud)
        self.pace = pace
        self.usb_latency_ms = float(usb_latency_ms)
        self.reboot_s = reboot_s
        self.check_host_baud = check_host_baud
        self.faults = Faults(self)
        self._link_req = link
        self._dir: str | None = None
        self._link: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._pty_path: str | None = None
        self._parser = P.PacketParser()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._requests: list[tuple[str, threading.Event, list[Any]]] = []
        self._server: socketserver.UnixStreamServer | None = None
        self._server_thread: threading.Thread | None = None
        self.reset_counters()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(
        cls,
        config: "RobotConfig",
        *,
        firmware: int | dict[int, int] = 46,
        joints: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> "ServoChain":
        """A chain matching a hardware config: same IDs, models and baud; factory defaults
        otherwise (Return Delay 250 = 500 us, as servos come from the factory), operating mode as
        configured, and each joint starting at the middle of its configured range.

        firmware: one version for all, or {id: version}. joints: {servo name: JointModel} to
        attach physics (the MuJoCo twin); others get a FirstOrderJoint. kwargs go to __init__.
        Each servo audits its goals against the config's limits (`GoalLimits`: min_rad/max_rad
        through the calibration, one tick of rounding allowed; current_a).
        """
        joints = joints or {}
        unknown = set(joints) - {s.name for s in config.servos}
        if unknown:
            raise KeyError(f"joints for unknown servos: {sorted(unknown)}")
        specs = []
        for sc in config.servos:
            mid_joint = 0.5 * (sc.limits.min_rad + sc.limits.max_rad)
            if sc.operating_mode == 4 and abs(mid_joint) > math.pi:
                mid_joint = 0.0
            ticks = int(round(_joint_ticks(sc, mid_joint)))
            specs.append(
                ServoSpec(
                    id=sc.id,
                    model=sc.model,
                    firmware=firmware.get(sc.id, 46) if isinstance(firmware, dict) else firmware,
                    baud=config.bus.baud,
                    position_ticks=ticks,
                    eeprom={"operating_mode": sc.operating_mode},
                    joint=joints.get(sc.name),
                    limits=_goal_limits(sc),
                )
            )
        return cls(specs, baud=config.bus.baud, **kwargs)

    # ------------------------------------------------------------------ access
    def ids(self) -> list[int]:
        with self.lock:
            return sorted({s.id for s in self.servos})

    def servos_with_id(self, dxl_id: int) -> list[Servo]:
        return [s for s in self.servos if s.id == dxl_id]

    def servo(self, dxl_id: int) -> Servo:
        """The (first) servo with this ID; use under `chain.lock` when the chain is running."""
        for s in self.servos:
            if s.id == dxl_id:
                return s
        raise KeyError(f"no servo with id {dxl_id}")

    def get_item(self, dxl_id: int, name: str) -> int:
        """Thread-safe read of a control-table item (present values refreshed), decoded."""
        with self.lock:
            s = self.servo(dxl_id)
            s.refresh()
            return s.get(name)

    def set_item(self, dxl_id: int, name: str, value: int) -> None:
        """Thread-safe raw store into a control-table item, no checks or side effects (use it to
        stage conditions: temperature, input voltage, ...; present values are recomputed)."""
        with self.lock:
            self.servo(dxl_id).set(name, value)

    @property
    def port(self) -> str:
        """Stable path for the host to open (a symlink to the current pty)."""
        if self._link is None:
            raise RuntimeError("chain not started")
        return self._link

    @property
    def pty_path(self) -> str | None:
        return self._pty_path

    @property
    def control_path(self) -> str:
        if self._dir is None:
            raise RuntimeError("chain not started")
        return os.path.join(self._dir, "control.sock")

    def reset_counters(self) -> None:
        with self.lock:
            self.rx_bytes = 0
            self.tx_bytes = 0
            self.rx_packets = 0
            self.tx_packets = 0
            self.crc_errors = 0
            self.internal_errors = 0  # emulator bugs caught in the thread (should stay 0)
            self.instructions: dict[int, int] = {}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "rx_bytes": self.rx_bytes,
                "tx_bytes": self.tx_bytes,
                "rx_packets": self.rx_packets,
                "tx_packets": self.tx_packets,
                "crc_errors": self.crc_errors,
                "internal_errors": self.internal_errors,
                "instructions": {f"0x{k:02X}": v for k, v in sorted(self.instructions.items())},
                "faults_injected": dict(self.faults.injected),
                "jammed": self.faults.jammed(),  # {id: seconds left, None = until cleared}
                # {id: {goal item: count}}: goals outside the config's limits that took effect.
                "limit_violations": {s.id: dict(s.limit_violations) for s in self.servos if s.limit_violations},
                "serial": self._link,
                "pty": self._pty_path,
            }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Open the pty, start the emulator thread and control socket; returns the port path."""
        if self._thread is not None:
            return self.port
        if self._link_req:
            self._link = os.path.abspath(self._link_req)
            self._dir = tempfile.mkdtemp(prefix="robosac-twin-")
        else:
            self._dir = tempfile.mkdtemp(prefix="robosac-twin-")
            self._link = os.path.join(self._dir, "serial")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="servo-chain", daemon=True)
        self._thread.start()
        self._start_control()
        return self._link

    def stop(self) -> None:
        """Stop the thread, close the pty and control socket, remove the temp dir."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)
        self._thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        if self._link_req and self._link and os.path.islink(self._link):
            os.unlink(self._link)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "ServoChain":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pty handling
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw from the start (pyserial makes it raw too) so nothing is echoed or translated; we
        # keep the slave open so the master never sees a hang-up between host opens.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self._pty_path = os.ttyname(slave)
        tmp = self._link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self._pty_path, tmp)
        os.replace(tmp, self._link)  # atomic: a host reopening the link never sees it missing
        self._parser.reset()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        self._pty_path = None

    def _request(self, what: str) -> Any:
        """Run a pty change on the emulator thread (which owns the fds) and wait for it."""
        if self._thread is None or threading.current_thread() is self._thread:
            return self._do(what)
        ev = threading.Event()
        box: list[Any] = []
        with self.lock:
            self._requests.append((what, ev, box))
        self._wake()
        if not ev.wait(5):
            raise RuntimeError(f"emulator thread did not {what}")
        return box[0] if box else None

    def _do(self, what: str) -> Any:
        if what == "unplug":
            self._close_pty()
            if self._link and os.path.lexists(self._link):
                os.unlink(self._link)
            return None
        if what == "replug":
            if self._master is None:
                self._open_pty()
            return self._link
        raise ValueError(what)

    def _unplug(self) -> None:
        self._request("unplug")

    def _replug(self) -> str:
        return self._request("replug")

    def unplug(self) -> None:
        """Close the pty: the host's next read/write fails and the port path disappears."""
        self._unplug()

    def replug(self) -> str:
        """Open a new pty behind the same symlink; returns the (unchanged) port path."""
        return self._replug()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _host_baud(self) -> int | None:
        if self._master is None:
            return None
        try:
            return _TERMIOS_BAUD.get(termios.tcgetattr(self._master)[5])
        except termios.error:
            return None

    # ------------------------------------------------------------------ main loop
    def _run(self) -> None:
        last_byte = 0.0
        while not self._stop.is_set():
            with self.lock:
                reqs, self._requests = self._requests, []
            for what, ev, box in reqs:
                try:
                    box.append(self._do(what))
                finally:
                    ev.set()
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.02)
            except (OSError, ValueError):
                continue
            now = self._clock()
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            if self._master is not None and self._master in ready:
                try:
                    data = os.read(self._master, 65536)
                except OSError as e:
                    if e.errno in (errno.EIO, errno.EBADF):
                        time.sleep(0.01)
                        continue
                    raise
                if data:
                    last_byte = now
                    with self.lock:
                        self.rx_bytes += len(data)
                    host_baud = self._host_baud()
                    for pkt in self._parser.feed(data):
                        try:
                            self._dispatch(pkt, host_baud)
                        except Exception:  # noqa: BLE001  keep the bus alive, but say so loudly
                            self.internal_errors += 1
                            traceback.print_exc(file=sys.stderr)
            elif self._parser.pending and now - last_byte > _PARTIAL_PACKET_TIMEOUT_S:
                self._parser.reset()
            with self.lock:
                for s in self.servos:
                    s.check_watchdog(now)
                    s.check_conditions()

    def _wire_time(self, nbytes: int, host_baud: int | None) -> float:
        return nbytes * 10.0 / (host_baud or self.baud)

    def _dispatch(self, pkt: P.Packet | P.CorruptPacket, host_baud: int | None) -> None:
        if self.pace:
            time.sleep(self._wire_time(len(pkt.raw), host_baud))
        with self.lock:
            out = self._process(pkt, host_baud)
        # USB adapter model (usb_latency_ms > 0): like an FTDI chip, bytes reach the host in
        # 62-byte USB packets, and a partial one only when the latency timer expires.
        lat = self.usb_latency_ms / 1000.0
        pending = bytearray()
        for delay, data in out:
            if self.pace:
                delay += self._wire_time(len(data), host_baud)
            if lat and pending and delay >= lat:
                time.sleep(lat)
                delay -= lat
                if not self._write(bytes(pending), 0):
                    return
                pending.clear()
            if delay > 0:
                time.sleep(delay)
            if not lat:
                if not self._write(data, 1):
                    return
                continue
            pending += data
            with self.lock:
                self.tx_packets += 1
            while len(pending) >= 62:
                if not self._write(bytes(pending[:62]), 0):
                    return
                del pending[:62]
        if pending:
            time.sleep(lat)
            self._write(bytes(pending), 0)

    def _write(self, data: bytes, packets: int) -> bool:
        master = self._master
        if master is None:
            return False
        # Counted before the write: counted after it, a host that had read the reply and reset the
        # counters meanwhile found it counted in the new window (the bus test's 188 extra bytes).
        with self.lock:
            self.tx_bytes += len(data)
            self.tx_packets += packets
        try:
            os.write(master, data)
        except OSError:
            with self.lock:  # never sent
                self.tx_bytes -= len(data)
                self.tx_packets -= packets
            return False
        return True

    # ------------------------------------------------------------------ packet processing
    def _listeners(self, host_baud: int | None) -> list[Servo]:
        out = []
        for s in self.servos:
            if self.faults.is_silent(s.id) or s.booting():
                continue
            if self.check_host_baud and host_baud is not None and s.baud != host_baud:
                continue
            out.append(s)
        return sorted(out, key=lambda s: s.id)

    @staticmethod
    def _may_reply(s: Servo, inst: int) -> bool:
        level = s.mem[68]
        if inst == P.INST_PING:
            return True
        if inst in (P.INST_READ, P.INST_SYNC_READ, P.INST_BULK_READ):
            return level >= 1
        return level >= 2

    def _reply(self, s: Servo, reply_id: int, err: int, params: bytes = b"") -> tuple[float, bytes] | None:
        """Status packet from servo s, with faults applied; None when dropped."""
        drop, corrupt, delay = self.faults.take_reply_fault(s.id)
        if drop:
            return None
        pkt = P.build_status(reply_id, err | s.alert(), params)
        if corrupt:
            pkt = pkt[:-2] + bytes((pkt[-2] ^ 0xFF, pkt[-1]))
        return delay + s.get("return_delay_time") * 2e-6, pkt

    def _process(self, pkt: P.Packet | P.CorruptPacket, host_baud: int | None) -> list[tuple[float, bytes]]:
        now = self._clock()
        self.rx_packets += 1
        self.instructions[pkt.inst] = self.instructions.get(pkt.inst, 0) + 1
        listeners = self._listeners(host_baud)
        if isinstance(pkt, P.CorruptPacket):
            self.crc_errors += 1
            if pkt.id == P.BROADCAST_ID:
                return []
            outs = []
            for s in listeners:
                if s.id == pkt.id and self._may_reply(s, pkt.inst):
                    r = self._reply(s, pkt.id, P.ERR_CRC)
                    if r:
                        outs.append(r)
            return self._collide(outs)
        if pkt.id != P.BROADCAST_ID:
            outs = []
            for s in [s for s in listeners if s.id == pkt.id]:
                s.touch(now)
                r = self._unicast(s, pkt)
                if r:
                    outs.append(r)
            return self._collide(outs)
        return self._broadcast(pkt, listeners, now)

    @staticmethod
    def _collide(outs: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        if len(outs) <= 1:
            return outs
        n = max(len(d) for _, d in outs)
        merged = bytearray(b"\xff" * n)
        for _, d in outs:
            for i, b in enumerate(d):
                merged[i] &= b
        return [(min(t for t, _ in outs), bytes(merged))]

    def _unicast(self, s: Servo, pkt: P.Packet) -> tuple[float, bytes] | None:
        inst, prm = pkt.inst, pkt.params
        params = b""
        after = None
        if inst == P.INST_PING:
            err = P.ERR_NONE
            params = P.u16(s.model.model_number) + bytes((s.firmware,))
        elif inst == P.INST_READ:
            if len(prm) != 4:
                err = P.ERR_DATA_LENGTH
            else:
                err, params = s.read(prm[0] | prm[1] << 8, prm[2] | prm[3] << 8)
        elif inst in (P.INST_WRITE, P.INST_REG_WRITE):
            if len(prm) < 3:
                err = P.ERR_DATA_LENGTH
            elif inst == P.INST_WRITE:
                err = s.write(prm[0] | prm[1] << 8, prm[2:])
            else:
                err = s.reg_write(prm[0] | prm[1] << 8, prm[2:])
        elif inst == P.INST_ACTION:
            err = s.action()
        elif inst == P.INST_REBOOT:
            err = P.ERR_NONE
            after = lambda: s.reboot(self.reboot_s)  # noqa: E731  (reply first, then reboot)
        elif inst == P.INST_FACTORY_RESET:
            if len(prm) != 1 or prm[0] not in (0x01, 0x02, 0xFF):
                err = P.ERR_DATA_RANGE
            else:
                err = P.ERR_NONE
                opt = prm[0]
                after = lambda: (s.factory_reset(opt), s.reboot(self.reboot_s))  # noqa: E731
        elif inst == P.INST_CLEAR:
            err = s.clear_multi_turn(prm)
        else:
            # Unknown here, or a group instruction sent to one ID: Instruction Error.
            err = P.ERR_INSTRUCTION
        r = self._reply(s, pkt.id, err, params) if self._may_reply(s, inst) else None
        if after is not None:
            after()
        return r

    def _broadcast(self, pkt: P.Packet, listeners: list[Servo], now: float) -> list[tuple[float, bytes]]:
        inst, prm = pkt.inst, pkt.params
        by_id: dict[int, list[Servo]] = {}
        for s in listeners:
            by_id.setdefault(s.id, []).append(s)
        outs: list[tuple[float, bytes]] = []

        if inst == P.INST_PING:
            for i in sorted(by_id):
                group = []
                for s in by_id[i]:
                    s.touch(now)
                    r = self._reply(s, i, P.ERR_NONE, P.u16(s.model.model_number) + bytes((s.firmware,)))
                    if r:
                        group.append(r)
                outs += self._collide(group)
            return outs

        if inst in (P.INST_WRITE, P.INST_REG_WRITE, P.INST_ACTION, P.INST_REBOOT, P.INST_CLEAR, P.INST_FACTORY_RESET, P.INST_READ):
            for s in listeners:
                s.touch(now)
                if inst == P.INST_WRITE and len(prm) >= 3:
                    s.write(prm[0] | prm[1] << 8, prm[2:])
                elif inst == P.INST_REG_WRITE and len(prm) >= 3:
                    s.reg_write(prm[0] | prm[1] << 8, prm[2:])
                elif inst == P.INST_ACTION:
                    s.action()
                elif inst == P.INST_REBOOT:
                    s.reboot(self.reboot_s)
                elif inst == P.INST_CLEAR:
                    s.clear_multi_turn(prm)
                elif inst == P.INST_FACTORY_RESET and len(prm) == 1 and prm[0] in (0x01, 0x02, 0xFF):
                    # Broadcast + 0xFF (reset all) is ignored from firmware 42 (e-manual).
                    if prm[0] != 0xFF or s.firmware < 42:
                        s.factory_reset(prm[0])
                        s.reboot(self.reboot_s)
            return []  # no status packets to broadcast read/write (e-manual)

        if inst in (P.INST_SYNC_READ, P.INST_FAST_SYNC_READ):
            if len(prm) < 5:
                return []
            addr, length = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
            reqs = [(i, addr, length) for i in prm[4:]]
        elif inst in (P.INST_BULK_READ, P.INST_FAST_BULK_READ):
            if len(prm) < 5 or len(prm) % 5:
                return []
            reqs = [(prm[k], prm[k + 1] | prm[k + 2] << 8, prm[k + 3] | prm[k + 4] << 8) for k in range(0, len(prm), 5)]
        elif inst == P.INST_SYNC_WRITE:
            if len(prm) < 4:
                return []
            addr, length = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
            body = prm[4:]
            step = length + 1
            if length == 0 or len(body) % step:
                return []
            for k in range(0, len(body), step):
                for s in by_id.get(body[k], []):
                    s.touch(now)
                    s.write(addr, body[k + 1 : k + step])
            return []
        elif inst == P.INST_BULK_WRITE:
            k = 0
            while k + 5 <= len(prm):
                i, addr, length = prm[k], prm[k + 1] | prm[k + 2] << 8, prm[k + 3] | prm[k + 4] << 8
                data = prm[k + 5 : k + 5 + length]
                k += 5 + length
                if len(data) != length:
                    break
                for s in by_id.get(i, []):
                    s.touch(now)
                    s.write(addr, data)
            return []
        else:
            return []  # unknown broadcast instruction: nobody answers

        fast = inst in (P.INST_FAST_SYNC_READ, P.INST_FAST_BULK_READ)
        if not fast:
            for i, addr, length in reqs:
                group = []
                for s in by_id.get(i, []):
                    s.touch(now)
                    err, data = s.read(addr, length)
                    if self._may_reply(s, inst):
                        r = self._reply(s, i, err, data if not err else b"")
                        if r:
                            group.append(r)
                outs += self._collide(group)
            return outs

        # Fast read: one packet, each servo appending its part; a servo that does not answer
        # (absent, silent, dropped, too old to know the instruction) ends the packet there.
        parts: list[tuple[int, int, bytes]] = []
        delay = 0.0
        corrupt_at: list[int] = []
        for i, addr, length in reqs:
            group = by_id.get(i, [])
            if not group:
                break
            s = group[0]
            s.touch(now)
            if s.firmware < 45 or not self._may_reply(s, P.INST_SYNC_READ):
                break
            err, data = s.read(addr, length)
            if err:
                data = bytes(length)
            drop, corrupt, d = self.faults.take_reply_fault(s.id)
            if drop:
                break
            delay += d + s.get("return_delay_time") * 2e-6
            if corrupt:
                corrupt_at.append(len(parts))
            parts.append((err | s.alert(), i, data))
        if not parts:
            return []
        if len(parts) < len(reqs):
            # Truncated: the packet's LEN promises more than is sent, as on a real bus.
            full = P.build_fast_read_reply(parts + [(0, i, bytes(n)) for i, _, n in reqs[len(parts) :]])
            cut = len(P.build_fast_read_reply(parts))
            pkt_bytes = bytearray(full[:cut])
        else:
            pkt_bytes = bytearray(P.build_fast_read_reply(parts))
        for k in corrupt_at:
            # Flip the first byte of that servo's part (its ERR byte's neighbour: the ID stays).
            off = 8 + sum(len(d) + 4 for _, _, d in parts[:k]) + 2
            if len(parts[k][2]):
                pkt_bytes[off] ^= 0xFF
            else:
                pkt_bytes[-1] ^= 0xFF
        return [(delay, bytes(pkt_bytes))]

    # ------------------------------------------------------------------ control channel
    def _start_control(self) -> None:
        chain = self
        path = self.control_path

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        msg = json.loads(line)
                        if not isinstance(msg, dict):
                            raise ValueError("expected a JSON object")
                        reply = chain.faults.command(msg)
                    except ValueError as e:
                        reply = {"ok": False, "error": f"bad request: {e}"}
                    self.wfile.write((json.dumps(reply) + "\n").encode())
                    self.wfile.flush()

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        if os.path.exists(path):
            os.unlink(path)
        self._server = Server(path, Handler)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="servo-chain-control", daemon=True
        )
        self._server_thread.start()


def _joint_ticks(sc: Any, joint_rad: float) -> float:
    """A config servo's joint angle as position ticks: servo rad = sign * joint + offset, tick 2048 = 0 rad."""
    servo_rad = sc.calibration.sign * joint_rad + sc.calibration.offset_rad
    return 2048 + servo_rad * TICKS_PER_REV / (2 * math.pi)


def _goal_limits(sc: Any) -> GoalLimits:
    """A config servo's joint range as Goal Position ticks (one tick of slack for the host's
    rounding) and its current cap in raw units."""
    ticks = [_joint_ticks(sc, r) for r in (sc.limits.min_rad, sc.limits.max_rad)]
    unit = MODELS[sc.model].current_unit_a
    cap = None if sc.limits.current_a is None or not unit else math.ceil(sc.limits.current_a / unit) + 1
    return GoalLimits(math.floor(min(ticks)) - 1, math.ceil(max(ticks)) + 1, cap)


def send_control(control_path: str, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a running chain's control socket and return its JSON answer."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(control_path)
        sock.sendall((json.dumps(msg) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
