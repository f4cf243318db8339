"""robosac: learn robot skills on Dynamixel servos and a camera with Soft Actor-Critic."""

__version__ = "0.1.0"
