"""Robot-level logic above the servo bus.

- `safety`: the SafetyMonitor every command passes, and SafeBus;
- `robot`: Robot = servos + camera (+ tracker) behind the monitor, for the hardware (`HardwareRobot`)
  or the fast simulation (`SimRobot`);
- `claw_reset`, `quadruped_reset`: each robot's own reset routine.
"""

from robosac.robots.safety import (
    CURRENT_STOP_FRACTION,
    CURRENT_WARN_FRACTION,
    TEMPERATURE_STOP_C,
    TEMPERATURE_WARN_C,
    SafeBus,
    SafetyConfigError,
    SafetyEvent,
    SafetyLimits,
    SafetyMonitor,
    SafetyStop,
    StepResult,
    UnsafeCommandError,
)

__all__ = [
    "CURRENT_STOP_FRACTION",
    "CURRENT_WARN_FRACTION",
    "TEMPERATURE_STOP_C",
    "TEMPERATURE_WARN_C",
    "SafeBus",
    "SafetyConfigError",
    "SafetyEvent",
    "SafetyLimits",
    "SafetyMonitor",
    "SafetyStop",
    "StepResult",
    "UnsafeCommandError",
]
