"""Typed bus faults and the counted events the env can put into `info`.

Every exception derives from BusError. Recoverable events (a retried read, a rebooted servo, a
reopened port) are not exceptions: they are counted in BusCounters. An exception means the bus
gave up; by then the bus has already tried to switch torque off on every servo that still listens
(see ServoBus._fail_safe), and the servos' Bus Watchdog stops them if even that could not be sent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from robosac.hal.control_table import describe_hw_error


class BusError(RuntimeError):
    """Base of every servo-bus fault."""


class PortError(BusError):
    """The serial port could not be opened or used."""


class PortNotFoundError(PortError):
    def __init__(self, port: str, detail: str = "") -> None:
        super().__init__(
            f"serial port {port!r} does not exist{': ' + detail if detail else ''}. "
            "Is the U2D2/USB adapter plugged in? List candidates with `ls /dev/serial/by-id/ /dev/ttyUSB*`."
        )
        self.port = port


class PortPermissionError(PortError):
    def __init__(self, port: str, detail: str = "") -> None:
        super().__init__(
            f"permission denied opening {port!r}{': ' + detail if detail else ''}. "
            "Fix: add yourself to the dialout group (`sudo usermod -aG dialout $USER`), then log out and "
            "back in (or run `newgrp dialout`)."
        )
        self.port = port


class PortLostError(PortError):
    """The port vanished mid-run (USB unplug) and could not be reopened within the backoff budget."""

    def __init__(self, port: str, attempts: int, detail: str = "") -> None:
        super().__init__(
            f"serial port {port!r} lost and not back after {attempts} reopen attempt(s)"
            f"{': ' + detail if detail else ''}"
        )
        self.port = port
        self.attempts = attempts


class CommError(BusError):
    """A transaction failed persistently although every servo still answers a ping."""


class ServoSilentError(BusError):
    """These servo IDs did not answer (after the read retries and a ping each)."""

    def __init__(self, ids: list[int], detail: str = "") -> None:
        super().__init__(f"servo(s) {ids} silent{': ' + detail if detail else ''}")
        self.ids = list(ids)


class HardwareFault(BusError):
    """A servo raised a hardware error that reboot-and-restore did not clear within its budget."""

    def __init__(self, servo_id: int, bits: int, attempts: int) -> None:
        super().__init__(
            f"servo {servo_id} hardware error 0x{bits:02x} ({', '.join(describe_hw_error(bits))}) "
            f"persists after {attempts} reboot(s)"
        )
        self.id = servo_id
        self.bits = bits
        self.attempts = attempts


class ConfigMismatchError(BusError):
    """The servo found at an ID is not the configured model, or a configured ID is missing."""


class ServoCommandError(BusError):
    """A servo answered a single write/read with an error byte (range, access, ...)."""

    def __init__(self, servo_id: int, what: str, error: int, text: str = "") -> None:
        super().__init__(f"servo {servo_id}: {what} failed with status error 0x{error:02x} {text}".rstrip())
        self.id = servo_id
        self.error = error


@dataclass
class BusCounters:
    """Counted bus events since the bus was created (all plain ints, JSON-able via as_dict)."""

    cycles: int = 0  # successful read_state calls
    writes: int = 0  # goal-position sync writes sent
    read_timeouts: int = 0  # group reads that got no (complete) reply
    read_corrupt: int = 0  # group reads with a bad CRC / malformed reply
    read_retries: int = 0  # extra group-read attempts made after a failure
    single_retries: int = 0  # extra attempts of single-servo reads/writes (configure, restore, tools)
    silent_faults: int = 0  # ServoSilentError raised
    hardware_errors: int = 0  # servo-cycles with a nonzero Hardware Error Status seen
    reboots: int = 0  # reboot instructions sent
    recoveries: int = 0  # servos brought back by reboot + restore
    hardware_faults: int = 0  # HardwareFault raised
    turn_rehomes: int = 0  # multi-turn joints given whole turns back after a reboot/reset
    servo_resets: int = 0  # a servo lost its RAM (power blip) and was restored without reboot
    watchdog_rearms: int = 0  # Bus Watchdog re-armed after a host stall longer than its period
    port_lost: int = 0  # serial exceptions (port vanished)
    port_reopens: int = 0  # successful reopen after a loss
    eeprom_writes: int = 0  # EEPROM items written by configure()
    ram_writes: int = 0  # RAM items written by configure()/restore
    goal_clips: int = 0  # goal positions clipped to the joint limits
    torque_offs_on_fault: int = 0  # fail-safe torque-off broadcasts
    tx_bytes: int = 0  # bytes written to the port
    rx_bytes: int = 0  # bytes read from the port

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
