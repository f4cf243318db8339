"""Tiny Gymnasium envs for SAC tests, each with a known right answer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ConstantRewardEnv(gym.Env):
    """One state, reward 1 every step; `terminate` decides whether the 1-step episode ends as a
    terminal state (Q* = 1) or is cut by a time limit (wrap in TimeLimit; Q* = 1 / (1 - gamma))."""

    def __init__(self, terminate: bool):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate = terminate

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, self.terminate, False, {}


class ShadeBanditEnv(gym.Env):
    """A contextual bandit seen only through pixels: the red channel's brightness encodes the best
    action (0 -> -1, 255 -> +1) under a random-noise green channel; reward = -(a - target)^2 and
    every episode is one step. Brightness is shift-invariant, so DrQ's augmentation keeps the answer.
    """

    size = 24

    def __init__(self, with_state: bool = False):
        img = spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        self.with_state = with_state
        self.observation_space = spaces.Dict({"pixels": img, "state": spaces.Box(-1, 1, (2,), np.float32)}) if with_state else img
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._shade = 0

    def _obs(self):
        img = np.zeros((3, self.size, self.size), np.uint8)
        img[0] = self._shade
        img[1] = self.np_random.integers(0, 256, (self.size, self.size), dtype=np.uint8)
        if self.with_state:
            return {"pixels": img, "state": np.zeros(2, np.float32)}
        return img

    @property
    def target(self) -> float:
        return 2.0 * self._shade / 255.0 - 1.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._shade = int(self.np_random.integers(0, 256))
        return self._obs(), {}

    def step(self, action):
        reward = -float((action[0] - self.target) ** 2)
        return self._obs(), reward, True, False, {}
