"""Dynamixel Protocol 2.0 framing, written from the ROBOTIS e-manual (Protocol 2.0 page).

Wire format (little-endian)::

    instruction: FF FF FD 00 | ID | LEN_L LEN_H | INST | params...      | CRC_L CRC_H
    status:      FF FF FD 00 | ID | LEN_L LEN_H | 55   | ERR | params...| CRC_L CRC_H

LEN counts INST (+ERR) + params + 2 CRC bytes, *after* byte stuffing. Byte stuffing: from INST to
the last param, every ``FF FF FD`` gets an extra ``FD``; the CRC (CRC-16, poly 0x8005, init 0, no
reflection, no final xor) is computed over the stuffed packet from the first FF up to the last
param. Fast Sync/Bulk Read replies are *not* stuffed (e-manual note on 0x8A / 0x9A).

This module is the emulator's own implementation: it must not share code with robosac.hal so that
it can catch the HAL's (and our) misreadings of the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 252

# Instruction codes.
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_FACTORY_RESET = 0x06
INST_REBOOT = 0x08
INST_CLEAR = 0x10
INST_STATUS = 0x55
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83
INST_FAST_SYNC_READ = 0x8A
INST_BULK_READ = 0x92
INST_BULK_WRITE = 0x93
INST_FAST_BULK_READ = 0x9A

# Status packet ERR field: bit 7 Alert, bits 0-6 an error number.
ERR_NONE = 0x00
ERR_RESULT_FAIL = 0x01
ERR_INSTRUCTION = 0x02
ERR_CRC = 0x03
ERR_DATA_RANGE = 0x04
ERR_DATA_LENGTH = 0x05
ERR_DATA_LIMIT = 0x06
ERR_ACCESS = 0x07
ERR_ALERT = 0x80

# Largest LEN we accept before treating the header as noise (keeps a garbage LEN from stalling the
# parser while it waits for 65 kB that never come).
MAX_LEN = 4096


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/BUYPASS (poly 0x8005, init 0) over ``data``, continuing from ``crc``."""
    t = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) ^ t[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte-stuff the INST..params region: after every ``FF FF FD`` insert an extra ``FD``."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo `stuff`: every ``FF FF FD FD`` becomes ``FF FF FD``."""
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF and i + 1 < n and body[i + 1] == 0xFD:
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


def _frame(dxl_id: int, body: bytes, *, stuffed: bool = True) -> bytes:
    if stuffed:
        body = stuff(body)
    length = len(body) + 2
    head = HEADER + bytes((dxl_id & 0xFF, length & 0xFF, length >> 8))
    pkt = head + body
    c = crc16(pkt)
    return pkt + bytes((c & 0xFF, c >> 8))


def build_instruction(dxl_id: int, inst: int, params: bytes = b"") -> bytes:
    """A complete, stuffed instruction packet (used by tests and tools)."""
    return _frame(dxl_id, bytes((inst,)) + bytes(params))


def build_status(dxl_id: int, error: int, params: bytes = b"") -> bytes:
    """A complete, stuffed status packet."""
    return _frame(dxl_id, bytes((INST_STATUS, error)) + bytes(params))


def build_fast_read_reply(parts: list[tuple[int, int, bytes]]) -> bytes:
    """The single Fast Sync/Bulk Read status packet for ``parts`` = [(error, id, data), ...].

    Layout (e-manual 0x8A/0x9A): ``FF FF FD 00 FE LEN 55 | ERR1 ID1 data1 CRC1 | ERR2 ID2 ...``,
    where each CRCk is the running CRC of the whole packet up to that point, so the last one is
    the packet CRC. LEN = 1 + sum(len(data_k) + 4). Not byte-stuffed.
    """
    length = 1 + sum(len(d) + 4 for _, _, d in parts)
    pkt = bytearray(HEADER + bytes((BROADCAST_ID, length & 0xFF, length >> 8, INST_STATUS)))
    crc = crc16(pkt)
    for err, dxl_id, data in parts:
        seg = bytes((err, dxl_id)) + bytes(data)
        pkt += seg
        crc = crc16(seg, crc)
        pkt += bytes((crc & 0xFF, crc >> 8))
        crc = crc16(pkt[-2:], crc)
    return bytes(pkt)


@dataclass(frozen=True)
class Packet:
    """A received instruction packet, CRC checked and unstuffed."""

    id: int
    inst: int
    params: bytes
    raw: bytes  # the packet as it was on the wire (stuffed)


@dataclass(frozen=True)
class CorruptPacket:
    """A framed packet whose CRC did not match (the servo answers ERR_CRC if addressed)."""

    id: int
    inst: int
    raw: bytes


class PacketParser:
    """Incremental receiver: feed bytes, iterate complete packets.

    Follows the e-manual's reception order: find ``FF FF FD`` (a following ``FD`` is stuffing, not
    a header) with Reserved 0x00, read LEN bytes, check the CRC over the stuffed bytes, unstuff.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def reset(self) -> None:
        """Drop a partial packet (a real servo resets its receiver on an inter-byte timeout)."""
        self._buf.clear()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[Packet | CorruptPacket]:
        self._buf += data
        buf = self._buf
        while True:
            idx = buf.find(b"\xff\xff\xfd")
            if idx < 0:
                # Keep a trailing FF / FF FF that may start the next header.
                keep = 2 if buf[-2:] == b"\xff\xff" else (1 if buf[-1:] == b"\xff" else 0)
                del buf[: len(buf) - keep]
                return
            if idx:
                del buf[:idx]
            if len(buf) < 7:
                return
            if buf[3] != 0x00:  # FF FF FD FD is stuffing / Reserved must be 0: not a header
                del buf[:3]
                continue
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > MAX_LEN:
                del buf[:3]
                continue
            total = 7 + length
            if len(buf) < total:
                return
            raw = bytes(buf[:total])
            del buf[:total]
            crc = raw[-2] | (raw[-1] << 8)
            if crc16(raw[:-2]) != crc:
                yield CorruptPacket(id=raw[4], inst=raw[7], raw=raw)
                continue
            body = unstuff(raw[7:-2])
            yield Packet(id=raw[4], inst=body[0], params=body[1:], raw=raw)


def parse_status(raw: bytes) -> tuple[int, int, bytes]:
    """Parse one complete (stuffed) status packet -> (id, error, params); raises ValueError."""
    if raw[:4] != HEADER or len(raw) < 11:
        raise ValueError("not a status packet")
    length = raw[5] | (raw[6] << 8)
    if len(raw) != 7 + length:
        raise ValueError(f"length mismatch: LEN {length}, got {len(raw) - 7}")
    if crc16(raw[:-2]) != (raw[-2] | (raw[-1] << 8)):
        raise ValueError("bad CRC")
    body = unstuff(raw[7:-2])
    if body[0] != INST_STATUS:
        raise ValueError("not a status packet")
    return raw[4], body[1], body[2:]


def u16(v: int) -> bytes:
    return bytes((v & 0xFF, (v >> 8) & 0xFF))
