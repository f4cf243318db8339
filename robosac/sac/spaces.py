"""What SAC accepts from a Gymnasium env, checked once, up front, with errors that say why.

Observations:
  * a 1-D float ``Box``: proprioception/state, shape (S,);
  * a uint8 image ``Box``: (C, H, W) channels-first, (H, W, C) channels-last, or a frame stack
    (K, C, H, W) / (K, H, W, C) as ``gymnasium.wrappers.FrameStackObservation`` makes; the agent sees
    it as (K*C, H, W);
  * a ``Dict`` of those: every 1-D Box is concatenated (in key order) into one state vector, and at
    most one image key is allowed (e.g. ``{"state": ..., "pixels": ...}``).
Actions: a 1-D ``Box`` with finite bounds; the actor's tanh output in [-1, 1] is mapped onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

# The largest channel count we treat as "channels" when guessing image layout (RGB-D x frame stack).
_MAX_CHANNELS = 16


class UnsupportedSpaceError(ValueError):
    """The env's observation or action space is one SAC here cannot handle."""


@dataclass(frozen=True)
class ImageLayout:
    """How to turn one stored image observation into (C, H, W) for the encoder."""

    key: str | None  # dict key, or None when the whole observation is the image
    stored_shape: tuple[int, ...]  # as the env emits it (and as the replay buffer stores it)
    channels_last: bool  # stored (..., H, W, C) rather than (..., C, H, W)

    @property
    def chw(self) -> tuple[int, int, int]:
        """(channels incl. frame stack, height px, width px) as the encoder sees them."""
        s = self.stored_shape
        if self.channels_last:
            h, w, c = s[-3], s[-2], s[-1]
        else:
            c, h, w = s[-3], s[-2], s[-1]
        stack = s[0] if len(s) == 4 else 1
        return (stack * c, h, w)


@dataclass(frozen=True)
class ObsSpec:
    """The parts of an observation space: which keys form the state vector, and the image if any."""

    state_keys: tuple[str | None, ...]  # None = the whole observation is the state vector
    state_dim: int
    image: ImageLayout | None


def _image_layout(space: spaces.Box, key: str | None, where: str) -> ImageLayout:
    shape = tuple(space.shape)
    if len(shape) not in (3, 4):
        raise UnsupportedSpaceError(f"{where}: uint8 image must have 3 or 4 dims (C,H,W / H,W,C, optionally with a leading frame stack), got shape {shape}")
    first, last = shape[-3], shape[-1]
    if first <= _MAX_CHANNELS < last:
        channels_last = False
    elif last <= _MAX_CHANNELS < first:
        channels_last = True
    else:
        raise UnsupportedSpaceError(
            f"{where}: cannot tell channels from height/width in image shape {shape}; "
            f"use (C,H,W) or (H,W,C) with C <= {_MAX_CHANNELS} < H, W"
        )
    return ImageLayout(key=key, stored_shape=shape, channels_last=channels_last)


def _is_state_box(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 1 and np.issubdtype(space.dtype, np.floating)


def _is_image_box(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) >= 3


def parse_obs_space(space: spaces.Space) -> ObsSpec:
    """Check ``space`` and describe it; raises :class:`UnsupportedSpaceError` naming the bad part."""
    if _is_state_box(space):
        return ObsSpec(state_keys=(None,), state_dim=int(space.shape[0]), image=None)
    if _is_image_box(space):
        return ObsSpec(state_keys=(), state_dim=0, image=_image_layout(space, None, "observation"))
    if isinstance(space, spaces.Dict):
        state_keys: list[str] = []
        state_dim = 0
        image: ImageLayout | None = None
        for key, sub in space.spaces.items():
            where = f"observation[{key!r}]"
            if _is_state_box(sub):
                state_keys.append(key)
                state_dim += int(sub.shape[0])
            elif _is_image_box(sub):
                if image is not None:
                    raise UnsupportedSpaceError(f"{where}: only one image key is supported, already have {image.key!r}")
                image = _image_layout(sub, key, where)
            else:
                raise UnsupportedSpaceError(f"{where}: unsupported space {sub}; allowed: 1-D float Box (state) or uint8 image Box")
        if not state_keys and image is None:
            raise UnsupportedSpaceError("observation: empty Dict space")
        return ObsSpec(state_keys=tuple(state_keys), state_dim=state_dim, image=image)
    raise UnsupportedSpaceError(
        f"observation: unsupported space {space}; allowed: 1-D float Box, uint8 image Box, or a Dict of those"
    )


def check_action_space(space: spaces.Space) -> spaces.Box:
    """SAC needs a 1-D continuous Box with finite bounds; returns it or raises naming the problem."""
    if not isinstance(space, spaces.Box):
        raise UnsupportedSpaceError(f"action: unsupported space {space}; SAC needs a continuous 1-D Box")
    if len(space.shape) != 1:
        raise UnsupportedSpaceError(f"action: Box must be 1-D, got shape {space.shape}")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise UnsupportedSpaceError(f"action: Box bounds must be finite, got low={space.low} high={space.high}")
    if np.any(space.high <= space.low):
        raise UnsupportedSpaceError("action: Box needs high > low in every dimension")
    return space
