"""Instruction-by-instruction conformance over the pty with a raw byte-level host (no SDK)."""

from __future__ import annotations

import time

import pytest

from _emu_util import RawHost, h
from sim.dxl import ServoChain, ServoSpec
from sim.dxl import protocol as P

RD0 = {"return_delay_time": 0}


@pytest.fixture
def chain():
    specs = [
        ServoSpec(id=1, model="XM430-W350", eeprom=RD0),
        ServoSpec(id=2, model="XM430-W210", eeprom=RD0),
        ServoSpec(id=3, model="XL430-W250", eeprom=RD0),
    ]
    with ServoChain(specs, reboot_s=0.02) as c:
        yield c


@pytest.fixture
def host(chain):
    hst = RawHost(chain.port)
    yield hst
    hst.close()


def test_ping_reply_model_and_firmware(host) -> None:
    assert host.txrx(1, P.INST_PING) == (1, 0, h("FC 03 2E"))  # 1020, fw 46
    assert host.txrx(3, P.INST_PING) == (3, 0, h("24 04 2E"))  # XL430-W250 1060
    assert host.txrx(9, P.INST_PING, timeout=0.03) is None


def test_broadcast_ping_every_servo_in_id_order(host) -> None:
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_PING))
    ids = [host.recv()[0] for _ in range(3)]
    assert ids == [1, 2, 3]


def test_read_write_and_signed_values(chain, host) -> None:
    assert host.read_int(1, 0, 2) == 1020
    assert host.write(1, 20, -1000, 4) == 0  # homing offset (EEPROM, torque off)
    assert host.read_int(1, 20, 4) == -1000
    assert host.read_int(1, 132, 4) == 2048 - 1000  # present = actual + homing offset


def test_write_errors(chain, host) -> None:
    assert host.write(1, 0, 5, 2) == P.ERR_ACCESS  # model number is read-only
    assert host.write(1, 132, 5, 4) == P.ERR_ACCESS  # present position is read-only
    assert host.write(1, 116, 5, 2) == P.ERR_DATA_LENGTH  # half of goal position
    assert host.write(1, 68, 3, 1) == P.ERR_DATA_RANGE  # status return level 0..2
    assert host.write(1, 11, 2, 1) == P.ERR_DATA_RANGE  # operating mode 2 does not exist
    assert host.write(3, 11, 5, 1) == P.ERR_DATA_RANGE  # XL430 has no current-based position
    assert host.write(1, 52, 1000, 4) == 0 and host.write(1, 48, 3000, 4) == 0
    assert host.write(1, 116, 3500, 4) == P.ERR_DATA_LIMIT  # goal beyond max position limit
    assert host.write(1, 104, 2000, 4) == P.ERR_DATA_RANGE  # goal velocity beyond its range
    assert host.write(1, 104, 400, 4) == P.ERR_DATA_LIMIT  # beyond velocity limit (350)
    assert host.write(1, 102, 1500, 2) == P.ERR_DATA_RANGE  # goal current beyond 1193
    # EEPROM while torque on: access error; RAM still fine.
    assert host.write(1, 64, 1, 1) == 0
    assert host.write(1, 9, 0, 1) == P.ERR_ACCESS
    assert host.write(1, 11, 4, 1) == P.ERR_ACCESS
    assert host.write(1, 65, 1, 1) == 0
    # Reads: past the end of the table, zero length.
    err, _ = host.read(1, 660, 4)
    assert err == P.ERR_ACCESS
    assert host.txrx(1, P.INST_READ, h("84 00 00 00"))[1] == P.ERR_DATA_LENGTH
    assert host.txrx(1, P.INST_READ, h("84 00"))[1] == P.ERR_DATA_LENGTH


def test_unknown_instruction_and_crc_error(host) -> None:
    assert host.txrx(1, 0x77)[1] == P.ERR_INSTRUCTION
    pkt = bytearray(P.build_instruction(1, P.INST_PING))
    pkt[-2] ^= 0x55
    host.send(bytes(pkt))
    assert host.recv()[1] == P.ERR_CRC


def test_xl430_has_present_load_not_current(chain, host) -> None:
    err, _ = host.read(3, 38, 2)  # reading a gap is allowed and reads 0 ...
    assert err == 0
    assert host.write(3, 38, 100, 2) == P.ERR_ACCESS  # ... but there is no Current Limit to write
    assert host.write(3, 102, 10, 2) == P.ERR_ACCESS  # nor Goal Current
    assert chain.servo(3).has("present_load") and not chain.servo(3).has("present_current")


def test_status_return_level(host) -> None:
    # The new level already applies to the write that sets it: no status packet.
    host.send(P.build_instruction(1, P.INST_WRITE, h("44 00 01")))
    assert host.recv(0.03) is None
    host.send(P.build_instruction(1, P.INST_WRITE, h("41 00 01")))  # LED: no reply at level 1
    assert host.recv(0.03) is None
    assert host.read_int(1, 65, 1) == 1  # read still answered
    host.send(P.build_instruction(1, P.INST_WRITE, h("44 00 00")))  # level 0
    assert host.recv(0.03) is None
    host.send(P.build_instruction(1, P.INST_READ, h("41 00 01 00")))
    assert host.recv(0.03) is None
    assert host.txrx(1, P.INST_PING)[1] == 0  # ping always


def test_broadcast_write_and_read_get_no_reply(chain, host) -> None:
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_WRITE, h("41 00 01")))
    assert host.recv(0.03) is None
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_READ, h("41 00 01 00")))
    assert host.recv(0.03) is None
    assert [host.read_int(i, 65, 1) for i in (1, 2, 3)] == [1, 1, 1]


def test_stuffing_incoming_and_outgoing(chain, host) -> None:
    # Write FF FF FD 00 into indirect data 5..8 (plain RAM bytes: by default indirect address k
    # points at indirect data k itself), then read it back.
    raw = P.build_instruction(1, P.INST_WRITE, P.u16(228) + h("FF FF FD 00"))
    assert h("FF FF FD FD") in raw  # the host stuffed it
    host.send(raw)
    assert host.recv()[1] == 0
    assert bytes(chain.servo(1).mem[228:232]) == h("FF FF FD 00")  # the servo unstuffed it
    host.send(P.build_instruction(1, P.INST_READ, P.u16(228) + P.u16(4)))
    wire = host.recv_raw()
    assert h("FF FF FD FD") in wire[7:]  # the servo stuffed its reply
    assert P.parse_status(wire)[2] == h("FF FF FD 00")


def test_fast_sync_read_reply_is_not_stuffed(chain, host) -> None:
    s = chain.servo(1)
    s.mem[224:228] = h("FF FF FD 00")
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_FAST_SYNC_READ, P.u16(224) + P.u16(4) + bytes([1])))
    wire = host.recv_raw()
    assert wire == P.build_fast_read_reply([(0, 1, h("FF FF FD 00"))])
    assert h("FF FF FD FD") not in wire


def test_indirect_addressing_reads_and_writes(chain, host) -> None:
    # Map Goal Position (116..119) and Present Position (132..135) into indirect data 1..8.
    for k in range(4):
        assert host.write(1, 168 + 2 * k, 116 + k, 2) == 0
        assert host.write(1, 176 + 2 * k, 132 + k, 2) == 0
    assert host.write(1, 224, 3000, 4) == 0  # writes Goal Position via indirect data
    with chain.lock:
        assert chain.servo(1).get("goal_position") == 3000
    assert host.read_int(1, 228, 4) == 2048  # present position via indirect data
    assert host.write(1, 224, 5000, 4) == P.ERR_DATA_LIMIT  # checks apply through indirection
    assert host.write(1, 168, 10, 2) == P.ERR_DATA_RANGE  # indirect address must be >= 64


def test_torque_moves_joint_mode3(chain, host) -> None:
    assert host.write(1, 44, 1023, 4) == 0
    assert host.write(1, 64, 1, 1) == 0
    assert host.write(1, 116, 2548, 4) == 0
    time.sleep(0.3)
    pos = host.read_int(1, 132, 4)
    assert abs(pos - 2548) < 10
    assert host.read_int(1, 128, 4) == pytest.approx(0, abs=3)


def test_extended_mode_multi_turn_clear_and_reboot_wrap(chain, host) -> None:
    import math

    assert host.write(2, 11, 4, 1) == 0
    with chain.lock:  # turn the limp horn by hand two turns and a bit
        chain.servo(2).joint.move_to((2048 + 2 * 4096 + 100) * 2 * math.pi / 4096)
    assert host.read_int(2, 132, 4) == 2048 + 2 * 4096 + 100  # multi-turn count kept in mode 4
    assert host.txrx(2, P.INST_CLEAR, h("01 44 58 4C 22"))[1] == 0  # stopped: allowed
    assert host.read_int(2, 132, 4) == 2148  # within one turn
    assert host.txrx(2, P.INST_CLEAR, h("02 44 58 4C 22"))[1] == P.ERR_DATA_RANGE
    with chain.lock:
        chain.servo(2).joint.move_to((2048 - 3 * 4096) * 2 * math.pi / 4096)
    assert host.read_int(2, 132, 4) == 2048 - 3 * 4096 - 2 * 4096  # turn offset from Clear kept
    host.txrx(2, P.INST_REBOOT)
    time.sleep(0.03)
    assert host.read_int(2, 132, 4) == 2048  # reboot: within one turn again
    assert host.read_int(2, 116, 4) == 2048  # goal = present after boot


def test_clear_fails_while_moving(chain, host) -> None:
    assert host.write(2, 11, 4, 1) == 0
    assert host.write(2, 64, 1, 1) == 0
    assert host.write(2, 116, 2048 + 40000, 4) == 0
    time.sleep(0.05)
    assert host.txrx(2, P.INST_CLEAR, h("01 44 58 4C 22"))[1] == P.ERR_RESULT_FAIL


def test_current_based_position_caps_current(chain, host) -> None:
    assert host.write(1, 11, 5, 1) == 0
    assert host.write(1, 102, 50, 2) == 0
    assert host.write(1, 64, 1, 1) == 0
    assert host.write(1, 116, 2048 + 20000, 4) == 0  # mode 5 takes the extended range
    time.sleep(0.05)
    assert abs(host.read_int(1, 126, 2)) <= 50


def test_reg_write_and_action(chain, host) -> None:
    assert host.txrx(1, P.INST_ACTION)[1] == P.ERR_INSTRUCTION  # nothing registered
    assert host.txrx(1, P.INST_REG_WRITE, h("41 00 01"))[1] == 0
    assert host.read_int(1, 69, 1) == 1  # Registered Instruction
    assert host.read_int(1, 65, 1) == 0  # not applied yet
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_ACTION))
    time.sleep(0.02)
    assert host.read_int(1, 65, 1) == 1
    assert host.read_int(1, 69, 1) == 0


def test_reboot_resets_ram_and_clears_errors(chain, host) -> None:
    chain.faults.raise_hardware_error(1, "overload")
    assert host.write(1, 65, 1, 1) == P.ERR_ALERT  # alert bit on every status
    assert host.read_int(1, 70, 1) == 0x20
    chain.reboot_s = 0.5
    assert host.txrx(1, P.INST_REBOOT)[1] & 0x7F == 0
    assert host.txrx(1, P.INST_PING, timeout=0.01) is None  # still booting
    time.sleep(0.5)
    assert host.txrx(1, P.INST_PING) == (1, 0, h("FC 03 2E"))
    assert host.read_int(1, 70, 1) == 0 and host.read_int(1, 65, 1) == 0


def test_shutdown_latches_torque_off_until_reboot(chain, host) -> None:
    assert host.write(1, 64, 1, 1) == 0
    chain.faults.raise_hardware_error(1, 0x04)  # overheating is in the default Shutdown (0x34)
    assert host.read_int(1, 64, 1) == 0
    assert host.write(1, 64, 1, 1) == P.ERR_ALERT  # ignored, Alert set
    assert host.read_int(1, 64, 1) == 0
    # An error not in Shutdown only raises Alert.
    chain.faults.raise_hardware_error(2, "encoder")
    assert host.write(2, 64, 1, 1) == P.ERR_ALERT
    assert host.read_int(2, 64, 1) == 1
    host.txrx(1, P.INST_REBOOT)
    time.sleep(0.03)
    assert host.write(1, 64, 1, 1) == 0
    assert host.read_int(1, 64, 1) == 1


def test_factory_reset_options(chain, host) -> None:
    assert host.write(1, 65, 1, 1) == 0 and host.write(1, 31, 70, 1) == 0
    assert host.txrx(1, P.INST_FACTORY_RESET, h("02"))[1] == 0
    time.sleep(0.03)
    assert host.read_int(1, 31, 1) == 80 and host.read_int(1, 9, 1, signed=False) == 250  # defaults back
    assert host.txrx(1, P.INST_FACTORY_RESET, h("05"))[1] == P.ERR_DATA_RANGE
    # 0xFF resets the ID to 1 and the baud to 57600: servo 2 disappears from the 1 Mbps bus.
    host.txrx(2, P.INST_FACTORY_RESET, h("FF"))
    time.sleep(0.03)
    assert host.txrx(2, P.INST_PING, timeout=0.03) is None
    with chain.lock:
        assert [s.id for s in chain.servos].count(1) == 2 and chain.servos[1].baud == 57600


def test_return_delay_time_is_honoured(chain, host) -> None:
    def rtt() -> float:
        best = 1.0
        for _ in range(5):
            t = time.perf_counter()
            host.txrx(1, P.INST_PING)
            best = min(best, time.perf_counter() - t)
        return best

    assert host.write(1, 9, 254, 1) == 0  # 508 us
    # A lower bound only: machine load can slow a reply down but never speed it up.
    assert rtt() >= 0.000508


def test_bus_watchdog(chain, host) -> None:
    assert host.write(1, 11, 4, 1) == 0
    assert host.write(1, 64, 1, 1) == 0
    assert host.write(1, 98, 2, 1) == 0  # 40 ms
    assert host.write(1, 116, 2048 + 30000, 4) == 0  # a long move
    time.sleep(0.1)  # no packets to servo 1
    assert host.read_int(1, 98, 1) == -1  # tripped reads -1 (0xFF)
    p1 = host.read_int(1, 132, 4)
    time.sleep(0.05)
    assert abs(host.read_int(1, 132, 4) - p1) < 5  # stopped
    assert host.write(1, 116, 2048, 4) == P.ERR_DATA_RANGE  # goals locked
    assert host.write(1, 98, 0, 1) == 0  # clear
    assert host.write(1, 116, 2048, 4) == 0
    assert host.write(1, 98, -1 & 0xFF, 1) == P.ERR_DATA_RANGE  # -1 is read-only state


def test_sync_and_bulk_instructions_raw(chain, host) -> None:
    with chain.lock:
        for i in (1, 2):
            chain.servo(i).set("present_input_voltage", 119 + i)
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_SYNC_READ, h("90 00 02 00 01 02")))
    assert host.recv() == (1, 0, h("78 00")) and host.recv() == (2, 0, h("79 00"))
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_SYNC_WRITE, h("41 00 01 00 01 01 02 01")))
    assert host.recv(0.03) is None
    assert host.read_int(1, 65, 1) == 1 and host.read_int(2, 65, 1) == 1
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_BULK_WRITE, h("01 41 00 01 00 00 02 1F 00 01 00 50")))
    assert host.recv(0.03) is None
    assert host.read_int(1, 65, 1) == 0 and host.read_int(2, 31, 1) == 0x50
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_BULK_READ, h("01 90 00 02 00 02 92 00 01 00")))
    assert host.recv() == (1, 0, h("78 00")) and host.recv() == (2, 0, h("23"))
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_FAST_BULK_READ, h("02 92 00 01 00 01 90 00 02 00")))
    assert host.recv_raw() == P.build_fast_read_reply([(0, 2, h("23")), (0, 1, h("78 00"))])


def test_fast_read_alert_and_error_in_part(chain, host) -> None:
    chain.faults.raise_hardware_error(2, "encoder")
    host.send(P.build_instruction(P.BROADCAST_ID, P.INST_FAST_SYNC_READ, h("92 00 01 00 01 02")))
    assert host.recv_raw() == P.build_fast_read_reply([(0, 1, h("23")), (0x80, 2, h("23"))])


def test_duplicate_ids_collide() -> None:
    specs = [ServoSpec(id=1, eeprom=RD0), ServoSpec(id=1, model="XL430-W250", eeprom=RD0)]
    with ServoChain(specs) as c:
        hst = RawHost(c.port)
        try:
            hst.send(P.build_instruction(1, P.INST_PING))
            raw = hst.recv_raw(0.05)
            with pytest.raises(ValueError):
                P.parse_status(raw)  # two answers at once: garbage
        finally:
            hst.close()


def test_partial_packet_is_dropped_after_a_gap(host) -> None:
    pkt = P.build_instruction(1, P.INST_PING)
    host.send(pkt[:8])  # a truncated packet (e.g. the host died mid-write)
    time.sleep(0.08)  # longer than the receiver's inter-byte timeout
    assert host.txrx(1, P.INST_PING) == (1, 0, h("FC 03 2E"))
