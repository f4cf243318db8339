"""Fault injection for the servo-chain emulator, scriptable from Python and from the command line.

Python (``chain.faults`` of a running `ServoChain`)::

    chain.faults.drop_replies(id, n=1)           # servo executes the next n instructions, replies are lost
    chain.faults.corrupt_crc(id, n=1)            # next n replies fail the host's CRC check
    chain.faults.delay_replies(id, seconds, n=1) # next n replies are sent `seconds` late
    chain.faults.raise_hardware_error(id, bits, persistent=False)
                                                 # bits: int or names ("overload", ...); Shutdown applies;
                                                 # persistent: raised again after every reboot
    chain.faults.silence(id) / unsilence(id)     # servo neither hears nor answers (unplugged cable)
    chain.faults.unplug() / replug()             # close the pty (port vanishes) / open a new one behind
                                                 # the same stable symlink path
    chain.faults.jam(id, seconds=None)           # the servo's joint is held where it is (a finger that
    chain.faults.unjam(id)                       # cannot move) for `seconds` (None/0: until unjam/clear)
    chain.faults.jammed()                        # {id: seconds left, None = until cleared}
    chain.faults.clear()                         # drop every pending packet fault, unsilence and unjam all

A jam is mechanical, not a bus fault: the servo keeps hearing and answering, Present Position is the
joint's real (unmoving) position, Goal Position is accepted but not reached, and a reboot does not
free it. The joint model does the holding (its optional ``jam(on, seconds)``, sim/dxl/physics.py):
`FirstOrderJoint` stops integrating; the MuJoCo twin clamps the joint's range around its position,
so the actuator pushes against a physical stop and its current rises toward stall / Current Limit
(in mode 5 Goal Current caps it), as on a real servo. A timed jam ends by itself on the joint
model's clock (the chain's clock; simulated time in the twin, which follows the wall clock);
`jammed()` reports the nominal time left on the chain's clock.

Counts are per servo and are consumed only by replies that servo would actually have sent. In a
Fast Sync/Bulk Read the whole chain answers in one packet: a dropped or silent servo truncates it
there, a corrupted servo flips a byte of its own part (the packet CRC then fails).

Command line: the running emulator listens on a Unix socket (``control.sock`` next to the serial
symlink) for one JSON object per line, e.g. ``{"cmd": "drop_replies", "id": 3, "n": 2}``, and
answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. `robosac fault` (see
sim/fault_cli.py) sends these.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from .control_table import HW_ERROR_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from .chain import ServoChain


@dataclass
class _ServoFaults:
    drop: int = 0
    corrupt: int = 0
    delay_s: float = 0.0
    delay_n: int = 0
    silent: bool = False


def parse_bits(bits: int | str | Iterable[str]) -> int:
    """Hardware error bits from an int, a name, or names (input_voltage, overheating, encoder,
    electrical_shock, overload); comma-separated strings are accepted."""
    if isinstance(bits, int):
        return bits
    if isinstance(bits, str):
        try:
            return int(bits, 0)
        except ValueError:
            bits = [b.strip() for b in bits.split(",") if b.strip()]
    out = 0
    for name in bits:
        if name not in HW_ERROR_NAMES:
            raise ValueError(f"unknown hardware error {name!r}; known: {', '.join(HW_ERROR_NAMES)}")
        out |= HW_ERROR_NAMES[name]
    return out


class Faults:
    """Fault state of one chain. All methods are thread-safe (they take the chain's lock)."""

    def __init__(self, chain: "ServoChain") -> None:
        self._chain = chain
        self._lock: threading.RLock = chain.lock
        self._per: dict[int, _ServoFaults] = {}
        self.injected: dict[str, int] = {}  # how many of each fault were applied to a reply
        self._jams: dict[int, float] = {}  # id -> chain clock time the jam ends (inf: until unjam)

    def _f(self, dxl_id: int) -> _ServoFaults:
        if dxl_id not in self._chain.ids():
            raise KeyError(f"no servo with id {dxl_id} on this chain (ids: {self._chain.ids()})")
        return self._per.setdefault(dxl_id, _ServoFaults())

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    # ---------------------------------------------------------------- API
    def drop_replies(self, dxl_id: int, n: int = 1) -> None:
        with self._lock:
            self._f(dxl_id).drop += int(n)

    def corrupt_crc(self, dxl_id: int, n: int = 1) -> None:
        with self._lock:
            self._f(dxl_id).corrupt += int(n)

    def delay_replies(self, dxl_id: int, seconds: float, n: int = 1) -> None:
        with self._lock:
            f = self._f(dxl_id)
            f.delay_s = float(seconds)
            f.delay_n = int(n)

    def raise_hardware_error(self, dxl_id: int, bits: int | str | Iterable[str], persistent: bool = False) -> None:
        """Raise Hardware Error Status bits now; persistent=True: they come back after every
        reboot too (a servo that cannot recover), until `clear()`."""
        b = parse_bits(bits)
        with self._lock:
            self._f(dxl_id)
            for s in self._chain.servos_with_id(dxl_id):
                s.raise_hardware_error(b, persistent=persistent)

    def silence(self, dxl_id: int) -> None:
        with self._lock:
            self._f(dxl_id).silent = True

    def unsilence(self, dxl_id: int) -> None:
        with self._lock:
            self._f(dxl_id).silent = False

    def unplug(self) -> None:
        self._chain._unplug()

    def replug(self) -> str:
        return self._chain._replug()

    def jam(self, dxl_id: int, seconds: float | None = None) -> None:
        """Jam the servo's joint where it is now: it does not follow Goal Position for `seconds`
        (None or 0: until `unjam`/`clear`); the servo keeps answering. Jamming a jammed servo
        keeps it where it is and replaces the duration."""
        if seconds is not None:
            seconds = float(seconds)
            if not seconds >= 0:
                raise ValueError(f"jam seconds must be >= 0, got {seconds}")
        with self._lock:
            self._f(dxl_id)
            servos = self._chain.servos_with_id(dxl_id)
            for s in servos:
                if not callable(getattr(s.joint, "jam", None)):
                    raise ValueError(f"servo {dxl_id}'s joint model ({type(s.joint).__name__}) cannot be jammed")
            for s in servos:
                s.joint.jam(True, seconds or None)
            self._jams[dxl_id] = self._chain._clock() + seconds if seconds else float("inf")

    def unjam(self, dxl_id: int) -> None:
        """Free a jammed servo's joint (no-op if it is not jammed)."""
        with self._lock:
            self._f(dxl_id)
            for s in self._chain.servos_with_id(dxl_id):
                if callable(getattr(s.joint, "jam", None)):
                    s.joint.jam(False)
            self._jams.pop(dxl_id, None)

    def jammed(self) -> dict[int, float | None]:
        """{id: seconds the jam still lasts, None = until unjam/clear} for every jammed servo."""
        with self._lock:
            now = self._chain._clock()
            for i in [i for i, t in self._jams.items() if t <= now]:
                del self._jams[i]
            return {i: (t - now if t != float("inf") else None) for i, t in sorted(self._jams.items())}

    def clear(self) -> None:
        """Cancel pending packet faults, unsilence and unjam every servo, forget persistent
        hardware errors (errors already latched stay until the host reboots the servo)."""
        with self._lock:
            self._per.clear()
            for s in self._chain.servos:
                s.persistent_error = 0
                if callable(getattr(s.joint, "jam", None)):
                    s.joint.jam(False)
            self._jams.clear()

    def pending(self) -> dict[int, dict[str, Any]]:
        """Per servo: pending packet faults, silence, and jam (`jammed`, `jam_left_s`: None = until
        cleared)."""
        with self._lock:
            out = {k: {**vars(v), "jammed": False, "jam_left_s": None} for k, v in self._per.items()}
            for i, left in self.jammed().items():
                out.setdefault(i, {**vars(_ServoFaults()), "jammed": False, "jam_left_s": None})
                out[i].update(jammed=True, jam_left_s=left)
            return out

    # ---------------------------------------------------------------- used by the chain (lock held)
    def is_silent(self, dxl_id: int) -> bool:
        f = self._per.get(dxl_id)
        return bool(f and f.silent)

    def take_reply_fault(self, dxl_id: int) -> tuple[bool, bool, float]:
        """For a reply about to be sent: (drop, corrupt, delay_s), consuming the counts."""
        f = self._per.get(dxl_id)
        if f is None:
            return False, False, 0.0
        drop = corrupt = False
        delay = 0.0
        if f.drop > 0:
            f.drop -= 1
            drop = True
            self._count("drop")
        elif f.corrupt > 0:
            f.corrupt -= 1
            corrupt = True
            self._count("corrupt")
        if not drop and f.delay_n > 0:
            f.delay_n -= 1
            delay = f.delay_s
            self._count("delay")
        return drop, corrupt, delay

    # ---------------------------------------------------------------- control channel
    def command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Execute one control-channel command (a decoded JSON object)."""
        cmd = msg.get("cmd")
        try:
            if cmd == "drop_replies":
                self.drop_replies(int(msg["id"]), int(msg.get("n", 1)))
            elif cmd == "corrupt_crc":
                self.corrupt_crc(int(msg["id"]), int(msg.get("n", 1)))
            elif cmd == "delay_replies":
                self.delay_replies(int(msg["id"]), float(msg["seconds"]), int(msg.get("n", 1)))
            elif cmd == "raise_hardware_error":
                self.raise_hardware_error(int(msg["id"]), msg["bits"], bool(msg.get("persistent", False)))
            elif cmd == "silence":
                self.silence(int(msg["id"]))
            elif cmd == "unsilence":
                self.unsilence(int(msg["id"]))
            elif cmd == "jam":
                s = msg.get("seconds")
                self.jam(int(msg["id"]), None if s is None else float(s))
            elif cmd == "unjam":
                self.unjam(int(msg["id"]))
            elif cmd == "unplug":
                self.unplug()
            elif cmd == "replug":
                return {"ok": True, "serial": self.replug()}
            elif cmd == "clear":
                self.clear()
            elif cmd == "status":
                return {"ok": True, **self._chain.stats()}
            else:
                return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"}
        except (KeyError, ValueError, TypeError) as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"ok": True}


COMMANDS = (
    "drop_replies",
    "corrupt_crc",
    "delay_replies",
    "raise_hardware_error",
    "silence",
    "unsilence",
    "jam",
    "unjam",
    "unplug",
    "replug",
    "clear",
    "status",
)
