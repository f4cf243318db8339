"""Hardware abstraction: the Dynamixel servo bus (dynamixel_sdk) with SI units at its boundary.

Public names: ServoBus, JointSpec, BusSettings, BusState, ServoInfo and the fault types.
"""

from robosac.hal.bus import BusSettings, BusState, JointSpec, ServoBus, ServoInfo
from robosac.hal.faults import (
    BusCounters,
    BusError,
    CommError,
    ConfigMismatchError,
    HardwareFault,
    PortError,
    PortLostError,
    PortNotFoundError,
    PortPermissionError,
    ServoCommandError,
    ServoSilentError,
)

__all__ = [
    "BusCounters",
    "BusError",
    "BusSettings",
    "BusState",
    "CommError",
    "ConfigMismatchError",
    "HardwareFault",
    "JointSpec",
    "PortError",
    "PortLostError",
    "PortNotFoundError",
    "PortPermissionError",
    "ServoBus",
    "ServoCommandError",
    "ServoInfo",
    "ServoSilentError",
]
