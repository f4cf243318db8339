"""Protocol 2.0 framing from the e-manual's worked examples: CRC, stuffing, parsing, fast replies."""

from __future__ import annotations

import pytest

from _emu_util import h
from sim.dxl import protocol as P

# (description, complete packet bytes) copied from the e-manual Protocol 2.0 examples.
EMANUAL_PACKETS = [
    ("ping id1", "FF FF FD 00 01 03 00 01 19 4E"),
    ("ping status id1", "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D"),
    ("broadcast ping", "FF FF FD 00 FE 03 00 01 31 42"),
    ("ping status id2", "FF FF FD 00 02 07 00 55 00 06 04 26 6F 6D"),
    ("read", "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15"),
    ("read status", "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0"),
    ("write", "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89"),
    ("empty status", "FF FF FD 00 01 04 00 55 00 A1 0C"),
    ("reg write", "FF FF FD 00 01 09 00 04 68 00 C8 00 00 00 AE 8E"),
    ("action", "FF FF FD 00 01 03 00 05 02 CE"),
    ("factory reset", "FF FF FD 00 01 04 00 06 01 A1 E6"),
    ("reboot", "FF FF FD 00 01 03 00 08 2F 4E"),
    ("clear", "FF FF FD 00 01 08 00 10 01 44 58 4C 22 B1 DC"),
    ("sync read", "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA"),
    ("sync read status id2", "FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE"),
    ("sync write", "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87"),
    ("bulk read", "FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00 1A 05"),
    ("bulk read status id1", "FF FF FD 00 01 06 00 55 00 77 00 C3 69"),
    ("bulk read status id2", "FF FF FD 00 02 05 00 55 00 24 8B A9"),
    ("bulk write", "FF FF FD 00 FE 10 00 93 01 20 00 02 00 A0 00 02 1F 00 01 00 50 B7 68"),
    ("fast sync read", "FF FF FD 00 FE 0A 00 8A 84 00 04 00 03 07 04 20 F2"),
]


@pytest.mark.parametrize("name,packet", EMANUAL_PACKETS, ids=[n for n, _ in EMANUAL_PACKETS])
def test_crc_matches_emanual(name: str, packet: str) -> None:
    raw = h(packet)
    assert P.crc16(raw[:-2]) == raw[-2] | raw[-1] << 8


def test_builders_reproduce_emanual_bytes() -> None:
    assert P.build_instruction(1, P.INST_PING) == h("FF FF FD 00 01 03 00 01 19 4E")
    assert P.build_instruction(1, P.INST_READ, h("84 00 04 00")) == h("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
    assert P.build_status(1, 0, h("06 04 26")) == h("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")
    assert P.build_status(1, 0, h("A6 00 00 00")) == h("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0")


def test_fast_sync_read_reply_matches_emanual() -> None:
    # e-manual 0x8A example: ID3=166, ID7=2079, ID4=1023 at Present Position.
    expect = h(
        "FF FF FD 00 FE 19 00 55 00 03 A6 00 00 00 84 08"
        " 00 07 1F 08 00 00 16 CA"
        " 00 04 FF 03 00 00 D1 9E"
    )
    got = P.build_fast_read_reply(
        [(0, 3, (166).to_bytes(4, "little")), (0, 7, (2079).to_bytes(4, "little")), (0, 4, (1023).to_bytes(4, "little"))]
    )
    assert got == expect


def test_fast_bulk_read_reply_layout() -> None:
    # e-manual 0x9A example: ID3 position 166 (4 B), ID7 PWM 421 (2 B), ID4 temperature 31 (1 B).
    got = P.build_fast_read_reply([(0, 3, (166).to_bytes(4, "little")), (0, 7, (421).to_bytes(2, "little")), (0, 4, b"\x1f")])
    assert got[:16] == h("FF FF FD 00 FE 14 00 55 00 03 A6 00 00 00 67 A4")
    assert got[16:22] == h("00 07 A5 01 24 74")
    assert got[22:] == h("00 04 1F D9 C1")


def test_stuffing_round_trip_and_length() -> None:
    body = bytes([P.INST_WRITE]) + h("74 00 FF FF FD 00")
    st = P.stuff(body)
    assert st == bytes([P.INST_WRITE]) + h("74 00 FF FF FD FD 00")
    assert P.unstuff(st) == body
    pkt = P.build_instruction(1, P.INST_WRITE, h("74 00 FF FF FD 00"))
    assert pkt[5] | pkt[6] << 8 == len(st) + 2  # LEN counts the stuffed bytes
    assert P.crc16(pkt[:-2]) == pkt[-2] | pkt[-1] << 8  # CRC over the stuffed packet
    # Twice in a row, and a pattern already followed by FD.
    body2 = h("FF FF FD FF FF FD FD")
    assert P.unstuff(P.stuff(body2)) == body2


def test_parser_unstuffs_and_skips_noise_and_stuffed_headers() -> None:
    pkt = P.build_instruction(1, P.INST_WRITE, h("74 00 FF FF FD 00"))
    parser = P.PacketParser()
    # Noise, a partial header and a FF FF FD FD (which is not a header) before the packet,
    # then the packet split in two feeds.
    got = list(parser.feed(h("00 FF 12 FF FF FD FD 33") + pkt[:9])) + list(parser.feed(pkt[9:]))
    assert len(got) == 1 and isinstance(got[0], P.Packet)
    assert got[0].params == h("74 00 FF FF FD 00")


def test_parser_reports_crc_error() -> None:
    pkt = bytearray(P.build_instruction(3, P.INST_PING))
    pkt[-1] ^= 1
    got = list(P.PacketParser().feed(bytes(pkt)))
    assert len(got) == 1 and isinstance(got[0], P.CorruptPacket) and got[0].id == 3
