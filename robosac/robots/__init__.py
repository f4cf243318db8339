"""Robot-level logic above the servo bus: the safety monitor (robosac.robots.safety)."""

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
