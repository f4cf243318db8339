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
