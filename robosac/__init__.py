"""robosac: learn robot skills on Dynamixel servos and a camera with Soft Actor-Critic."""

__version__ = "0.1.0"

# Register the Gymnasium ids (robosac/ClawValveTurn-v0, robosac/QuadrupedWalk-v0): entry points are
# strings, so this imports neither MuJoCo nor the hardware layer.
from robosac.envs import register as _register_envs  # noqa: E402

_register_envs()
