"""Servo-chain emulator: Dynamixel Protocol 2.0 X-series servos on a pseudo-terminal.

Modules: protocol (packets, CRC, stuffing), control_table (per-model tables), physics (the
JointModel interface and the default first-order joint), servo (one servo's rules), chain (the pty,
bus rules and the emulator thread), faults (fault injection and the control channel).
"""

from .chain import ServoChain, send_control
from .control_table import MODELS, ModelSpec
from .faults import Faults
from .physics import FirstOrderJoint, JointModel, JointState, JointTarget
from .servo import GoalLimits, Servo, ServoSpec

__all__ = [
    "MODELS",
    "ModelSpec",
    "Faults",
    "FirstOrderJoint",
    "GoalLimits",
    "JointModel",
    "JointState",
    "JointTarget",
    "Servo",
    "ServoChain",
    "ServoSpec",
    "send_control",
]
