"""Gymnasium environments: `import robosac` registers them.

    gymnasium.make("robosac/ClawValveTurn-v0", backend="sim" | "hardware", ...)
    gymnasium.make("robosac/QuadrupedWalk-v0", backend="sim" | "hardware", ...)
"""

import gymnasium as gym

ENV_IDS = ("robosac/ClawValveTurn-v0", "robosac/QuadrupedWalk-v0")


def register() -> None:
    """Register the robosac env ids (idempotent)."""
    entry = {
        "robosac/ClawValveTurn-v0": "robosac.envs.claw:ClawValveTurnEnv",
        "robosac/QuadrupedWalk-v0": "robosac.envs.quadruped:QuadrupedWalkEnv",
    }
    for env_id, ep in entry.items():
        if env_id not in gym.registry:
            # The env truncates at its config's control.episode_s itself.
            gym.register(id=env_id, entry_point=ep)


register()


# Set by `robosac train`/`eval` from their own flags (or not settable from a command line).
_SET_BY_COMMAND = ("backend", "config", "pixels", "port", "camera_source", "render_mode", "robot", "bus_settings", "human_help")


def env_kwargs_from(env_id: str, settings: list[str]) -> dict:
    """Constructor keywords for a robosac env from ``KEY=VALUE`` strings, e.g. ``variant=random``.

    Values are YAML scalars or lists (``true``, ``3``, ``[48, 48]``, ``null``). An unknown key, or
    one that a command sets from its own flags, raises ValueError naming the allowed keys; a bad
    value is the env's own ValueError when it is built.
    """
    import inspect

    import yaml

    from robosac.envs.base import RobotEnv

    from gymnasium.envs.registration import load_env_creator

    cls = load_env_creator(gym.registry[env_id].entry_point)
    params = [*inspect.signature(cls.__init__).parameters, *inspect.signature(RobotEnv.__init__).parameters]
    allowed = [p for p in dict.fromkeys(params) if p not in ("self", "kwargs", *_SET_BY_COMMAND)]
    out: dict = {}
    for text in settings:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"env setting {text!r}: expected KEY=VALUE, e.g. variant=random")
        if key not in allowed:
            raise ValueError(f"env setting {key!r} is not one {env_id} takes here; allowed: {', '.join(allowed)}")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"env setting {key}: {raw!r} is not a YAML value (e.g. true, 3, [48, 48])") from None
    return out
