"""`RobotEnv`: one Gymnasium env class for a robot on the bench, on the twin, or in the fast sim.

backend "hardware": a `HardwareRobot` from the config (real servos, or the twin through the serial
path and camera URL `robosac twin` prints); backend "sim": a `SimRobot` (MuJoCo stepped directly).
Both go through the same `Robot.step` (safety monitor on every command), the same spaces, reward
and reset code. A task subclass supplies `_features`, `_reward` and `_reset_robot`.

Observation: {"state": float32 (task features), "pixels": uint8 (H, W, 3*frame_stack), newest frame
last, only with pixels=True; each frame as the robot's camera delivers it (the config's camera size,
RGB), cut to the config's camera.roi if it has one, then centre-cropped and shrunk to image_size the
same way on both backends}. Action: Box[-1, 1] per action joint, mapped piecewise-linearly around
a centre pose: 0 -> centre, -1 -> lo, +1 -> hi. The centre is the config's
control.action_center_rad, or for joints it does not name, the reset pose ("nominal"); (lo, hi) is
control.action_range_rad, or for joints it does not name, the servo's min_rad/max_rad.

info (every step): reward terms ("reward/<term>"), "success", "score", "safety" (monitor counters
and latch), "safety_events" (warn/stop events this step), "frame_age_s", "period_s", "overruns",
"action_clipped". A safety stop ends the episode with truncated=True and info["safety_stop"] = the
reason; the next reset() clears it if its cause is gone (never an e-stop: see Robot.recover).
A camera frame older than safety.max_frame_age_s raises StaleFrameError (the servos hold their
last goal) instead of feeding an old image to the policy.

Domain randomisation (sim backend): on by default (`randomization="typical"`, i.e.
`DomainRandomization.typical()`); every reset() draws fresh model parameters from a seed taken from
the env's np_random (so reset(seed=s) repeats exactly) and reports the draw in
info["randomization"] ({knob: value}, floats; {} when off). `randomization=None` keeps the MJCF's
nominal model. The hardware backend takes no randomisation (a real robot cannot be randomised; the
real-time twin draws its own once at start, see `robosac twin --seed / --no-randomize`).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np

from robosac.config import RobotConfig, load_config
from robosac.robots.robot import HardwareRobot, Robot, RobotState, SimRobot
from robosac.robots.safety import SafetyStop, UnsafeCommandError
from sim.randomization import DomainRandomization

__all__ = ["RobotEnv", "BACKENDS", "HARDWARE_CONFIGS", "console_help"]

BACKENDS = ("hardware", "sim")
HARDWARE_CONFIGS = Path(__file__).resolve().parents[2] / "hardware_configs"


def console_help(message: str) -> None:
    """Ask the operator at the terminal to fix the robot, then continue."""
    print(f"\nrobosac: {message}\nFix it by hand, then press Enter to retry (Ctrl-C to stop).", file=sys.stderr, flush=True)
    input()


class RobotEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    default_config = ""  # file name in hardware_configs/

    def __init__(
        self,
        backend: str = "sim",
        *,
        config: str | Path | RobotConfig | None = None,
        pixels: bool = False,
        image_size: tuple[int, int] = (64, 64),
        frame_stack: int = 1,
        port: str | None = None,
        camera_source: int | str | None = None,
        human_help: Callable[[str], None] | None | str = "auto",
        robot: Robot | None = None,
        render_mode: str | None = None,
        sim_seed: int | None = None,
        bus_settings: dict[str, Any] | None = None,
        randomization: DomainRandomization | Literal["typical"] | None = "typical",
        action_filter: float = 0.0,
    ) -> None:
        """sim_seed: seed of the randomisation drawn when the simulation is built (every reset()
        draws again). randomization (sim backend): "typical" = `DomainRandomization.typical()`,
        a `DomainRandomization`, or None (nominal model); re-drawn at every reset(). The hardware
        backend accepts only the default or None.

        action_filter f in [0, 1): a first-order low-pass on the actions, applied after clipping
        and before the safety monitor: applied = f * previous applied + (1 - f) * policy's (each
        in [-1, 1]; the previous is 0 after reset()). The state's last-action block holds the
        applied action, so the task stays Markov. Time constant about -dt / ln f (f = 0.5 at
        10 Hz: 0.14 s). 0 (the default) sends the policy's action unchanged."""
        f = action_filter
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not 0.0 <= float(f) < 1.0:
            raise ValueError(f"action_filter: invalid value {action_filter!r}; allowed: a number in [0, 1) (0 = off)")
        self.action_filter = float(f)
        if backend not in BACKENDS:
            raise ValueError(f"backend: invalid value {backend!r}; allowed: {', '.join(BACKENDS)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: invalid value {render_mode!r}; allowed: None, 'rgb_array'")
        if int(frame_stack) < 1:
            raise ValueError(f"frame_stack: invalid value {frame_stack!r}; allowed: an integer >= 1")
        # The smallest image the conv encoder (3x3, strides 2-2-1) still reduces to at least 1x1.
        if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2
                and all(isinstance(v, (int, np.integer)) and v >= 16 for v in image_size)):
            raise ValueError(f"image_size: invalid value {image_size!r}; allowed: (width, height), integers >= 16 px")
        self.randomization = _resolve_randomization(randomization, backend)
        cfg = config if isinstance(config, RobotConfig) else load_config(config or HARDWARE_CONFIGS / self.default_config)
        if pixels and cfg.camera is None:
            raise ValueError(f"pixels=True needs a camera: section in {cfg.source or cfg.name}")
        self.config = cfg
        self.backend = backend
        self.pixels = bool(pixels)
        self.image_size = (int(image_size[0]), int(image_size[1]))  # (width, height) px
        self.frame_stack = int(frame_stack)
        self._roi = cfg.camera.roi if cfg.camera is not None else None  # (x, y, w, h), fractions of the frame
        self.render_mode = render_mode
        if human_help == "auto":
            human_help = console_help if backend == "hardware" and sys.stdin is not None and sys.stdin.isatty() else None
        self.human_help = human_help
        if robot is None:
            if backend == "sim":
                robot = SimRobot(cfg, seed=sim_seed, randomization=self.randomization)
            else:
                robot = HardwareRobot(cfg, port=port, camera_source=camera_source,
                                      use_camera=self.pixels or cfg.tracker is not None or render_mode == "rgb_array", **(bus_settings or {}))
        self.robot = robot
        self.metadata = {**self.metadata, "render_fps": cfg.control.rate_hz}

        joints = cfg.control.action_joints or robot.names
        self.act_idx = robot.index(joints)
        pose = cfg.reset.pose_rad or {}
        lo, hi = robot.limits_min_rad, robot.limits_max_rad
        self.nominal_rad = np.array([np.clip(pose.get(n, 0.0), lo[i], hi[i]) for i, n in enumerate(robot.names)])
        center = cfg.control.action_center_rad or {}
        self.action_center_rad = np.array([center.get(n, self.nominal_rad[i]) for i, n in enumerate(robot.names)])[self.act_idx]
        ranges = cfg.control.action_range_rad or {}
        names = [robot.names[i] for i in self.act_idx]
        self._lo = np.array([ranges[n][0] if n in ranges else lo[i] for n, i in zip(names, self.act_idx)])
        self._hi = np.array([ranges[n][1] if n in ranges else hi[i] for n, i in zip(names, self.act_idx)])
        n_act = len(self.act_idx)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.last_action = np.zeros(n_act, np.float32)
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (self._state_size(),), np.float32)}
        if self.pixels:
            w, h = self.image_size
            spaces["pixels"] = gym.spaces.Box(0, 255, (h, w, 3 * self.frame_stack), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._spec = None
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self._steps = 0
        self._needs_reset = True
        self._frame_age = math.nan

    @property
    def spec(self) -> Any:
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        # A real robot (or the real-time twin) never repeats an episode exactly: say so, so that
        # checkers and wrappers do not expect seeded determinism from the hardware backend.
        if value is not None and self.backend == "hardware" and not value.nondeterministic:
            from dataclasses import replace

            value = replace(value, nondeterministic=True)
        self._spec = value

    # -- task hooks ----------------------------------------------------------------------------
    def _state_size(self) -> int:
        raise NotImplementedError

    def _features(self, st: RobotState) -> np.ndarray:
        raise NotImplementedError

    def _reward(self, st: RobotState, action: np.ndarray) -> tuple[dict[str, float], bool, float, bool]:
        """(reward terms, success, score, terminated)."""
        raise NotImplementedError

    def _reset_robot(self, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _tilt(self) -> tuple[float, float] | None:
        return None

    def _task_info(self, st: RobotState) -> dict[str, float]:
        """Task figures for info (each step), beyond the reward terms, success and score."""
        return {}

    # -- mapping -------------------------------------------------------------------------------
    def action_to_goal(self, action: np.ndarray) -> np.ndarray:
        """Goal (n,) rad for all joints: action joints from the action, others hold their goal."""
        a = np.asarray(action, dtype=float)
        c = self.action_center_rad
        q_act = np.where(a >= 0, c + a * (self._hi - c), c + a * (c - self._lo))
        last = self.robot.monitor.last_goal
        goal = last.copy() if last is not None else self.nominal_rad.copy()
        goal[self.act_idx] = q_act
        return goal

    # -- gym API -------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        drawn: dict[str, float] | None = None
        if self.backend == "sim":
            drawn = {}
            if self.randomization is not None:
                # A new robot each episode, drawn from np_random: reset(seed=s) repeats it exactly.
                drawn = self.robot.randomize(self.randomization, int(self.np_random.integers(2**63 - 1)))
            if seed is not None:
                self.robot.restart()  # a seeded sim episode starts from the model's initial state
        self.robot.recover()
        try:
            info = self._reset_robot(dict(options or {}))
        except RuntimeError as e:
            if self.backend != "sim" or isinstance(e, SafetyStop):
                raise
            # The fast sim is for learning runs: when the robot's own reset fails (a finger wedged
            # after a wild episode), start the simulation over rather than end the run. The
            # hardware backend never does this (it asks a human or raises).
            self.robot.restart()
            self.robot.recover()
            info = self._reset_robot(dict(options or {}))
            info["reset_restarted_sim"] = f"{type(e).__name__}: {e}"
        self._steps = 0
        self._needs_reset = False
        self.last_action = np.zeros(self.action_space.shape, np.float32)
        self._frames.clear()
        st = self.robot.last_state or self.robot.read()
        obs = self._observe(st)
        info.update(self._common_info([]))
        if drawn is not None:
            info["randomization"] = drawn
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode ended or never started)")
        a = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        if not np.all(np.isfinite(a)):
            self.robot.monitor.count("nonfinite_commands")
            raise UnsafeCommandError(f"non-finite action {a.tolist()}; nothing was sent, the servos hold their last goal")
        clipped = int(np.count_nonzero((a < -1.0) | (a > 1.0)))
        a = np.clip(a, -1.0, 1.0)
        if self.action_filter:
            a = (self.action_filter * self.last_action + (1.0 - self.action_filter) * a).astype(np.float32)
        stop_reason = None
        try:
            st = self.robot.step(self.action_to_goal(a), self._tilt())
        except SafetyStop as e:
            stop_reason = str(e)
            st = self.robot.read()
        self.last_action = a
        obs = self._observe(st)
        terms, success, score, terminated = self._reward(st, a)
        reward = float(sum(terms.values()))
        self._steps += 1
        truncated = stop_reason is not None or self._steps >= self.config.control.max_steps
        self._needs_reset = terminated or truncated
        info = {f"reward/{k}": float(v) for k, v in terms.items()}
        info.update(success=bool(success), score=float(score), action_clipped=clipped)
        info.update(self._task_info(st))
        info.update(self._common_info(self.robot.last_events))
        if stop_reason is not None:
            info["safety_stop"] = stop_reason
        return obs, reward, bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame, _ = self.robot.frame()
        return frame

    def close(self) -> None:
        self.robot.close()

    # -- helpers -------------------------------------------------------------------------------
    def _observe(self, st: RobotState) -> dict[str, np.ndarray]:
        obs = {"state": self._features(st).astype(np.float32)}
        if self.pixels:
            from robosac.hal.camera import crop_resize

            frame, stamp = self.robot.frame()
            self._frame_age = self.robot.frame_age_s()
            if self._roi is not None:
                fh, fw = frame.shape[:2]
                x, y, rw, rh = self._roi
                frame = frame[round(y * fh) : round((y + rh) * fh), round(x * fw) : round((x + rw) * fw)]
            w, h = self.image_size
            if frame.shape[:2] != (h, w):
                frame = crop_resize(frame, w, h)
            if not self._frames:
                self._frames.extend([frame] * self.frame_stack)
            else:
                self._frames.append(frame)
            obs["pixels"] = np.concatenate(list(self._frames), axis=-1)
        return obs

    def _common_info(self, events: list[Any]) -> dict[str, Any]:
        r = self.robot
        return {
            "safety": r.info(),
            "safety_events": [f"{e.level} {e.kind}: {e.message}" for e in events],
            "frame_age_s": float(self._frame_age),
            "period_s": float(getattr(r, "last_period_s", r.dt_s)),
            "late_s": float(r.last_late_s),
            "obs_to_action_s": float(r.last_obs_to_action_s),
            "overruns": int(getattr(r, "overruns", 0)),
            "temperature_max_c": float(np.max(r.last_state.temperature)) if r.last_state is not None else math.nan,
        }


def _resolve_randomization(value: Any, backend: str) -> DomainRandomization | None:
    """The env's `randomization` argument as what the sim backend applies (None = nominal model)."""
    if value is not None and not isinstance(value, DomainRandomization) and value != "typical":
        raise ValueError(f"randomization: invalid value {value!r}; allowed: 'typical', None or a DomainRandomization")
    if backend == "hardware":
        if isinstance(value, DomainRandomization):
            raise ValueError("randomization: the hardware backend cannot randomise a real robot; leave it at the "
                             "default or None (the twin randomises itself: robosac twin --seed N / --no-randomize)")
        return None
    dr = DomainRandomization.typical() if value == "typical" else value
    # A neutral one changes nothing: skip the per-reset work and report nothing drawn.
    return None if dr == DomainRandomization() else dr
