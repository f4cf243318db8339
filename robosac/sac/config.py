"""The settings of SAC and of a training run, importable without torch.

`robosac train` builds its parser (defaults, help) and checks ``--sac`` values from these before
anything imports torch, so a bad setting is refused at once and the learner server's torch import
(robosac.runtime.learner) runs beside this process's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SACConfig:
    """Hyper-parameters; defaults follow SB3/CleanRL unless noted."""

    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate for the target critics
    encoder_tau: float = 0.05  # faster for the target encoder, as in DrQ/SAC-AE
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None -> -|A|
    feature_dim: int = 50  # image features (B, F) out of the encoder
    conv_channels: tuple[int, ...] = (16, 32, 32)  # filters of the three 3x3 convs
    shift_pad: int = 4  # DrQ random shift, pixels (at 64x64; DrQ uses 4 at 84x84)
    critic_dropout: float = 0.0  # DroQ: dropout rate in the critics' hidden layers (DroQ uses 0.01)
    critic_layer_norm: bool = False  # DroQ: LayerNorm after each critic hidden layer
    n_step: int = 1  # env steps per critic target (n-step return, as DrQ-v2's 3); built when sampling
    crossq: bool = False  # CrossQ: batch-renormalised actor and critics, no target critics (see the module docstring)
    policy_delay: int = 1  # critic updates per actor and temperature update (CrossQ uses 3)
    recon_weight: float = 0.0  # SAC-AE: weight of the image-reconstruction loss on the encoder (0: none)
    reward_head: bool = False  # predict r from the next observation's features, a loss on the encoder (images, n_step 1)
    aux_weight: float = 0.0  # weight of the loss predicting batch["aux"] from the next observation's features (images; 0: none)
    aux_dim: int = 0  # size of batch["aux"] per row; a training run sets it from the env (its aux_dim)
    privileged_critic: bool = False  # critics on the state + batch["priv"], not the images (see the module docstring)
    priv_dim: int = 0  # size of batch["priv"] per row; a training run sets it from the env (its priv_dim)


# SAC settings a resumed run may change: the entropy target, to lower it late in a run (the
# temperature keeps its learned value and moves from there). Everything else shapes the networks
# or the data they were trained on.
RESUMABLE_SAC_CHANGES = ("target_entropy",)


def sac_config_from(settings: list[str] | dict[str, Any], base: SACConfig | None = None) -> SACConfig:
    """``base`` with fields replaced from ``KEY=VALUE`` strings (or a dict), e.g. ``critic_dropout=0.01``.

    Values are parsed as the field's type (tuples as comma lists: ``hidden=256,256``); an unknown
    key or a bad value raises ValueError naming the key and what is allowed.
    """
    cfg = base or SACConfig()
    fields = {f.name: f for f in dataclasses.fields(SACConfig)}
    items = settings.items() if isinstance(settings, dict) else [_split_setting(s) for s in settings]
    changes: dict[str, Any] = {}
    for key, raw in items:
        if key not in fields:
            raise ValueError(f"SAC setting {key!r} is unknown; allowed: {', '.join(fields)}")
        default = getattr(SACConfig(), key)
        try:
            if not isinstance(raw, str):
                value = tuple(raw) if isinstance(default, tuple) else raw  # e.g. a saved config's lists
            elif isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1")
            elif isinstance(default, tuple):
                value = tuple(int(v) for v in raw.split(","))
            elif default is None or isinstance(default, float):
                value = None if raw.lower() == "none" else float(raw)
            else:
                value = type(default)(raw)
        except ValueError:
            kind = "true/false" if isinstance(default, bool) else "comma-separated integers" if isinstance(default, tuple) else \
                f"a number{' or none' if default is None else ''}"
            raise ValueError(f"SAC setting {key}: invalid value {raw!r}; allowed: {kind}") from None
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def config_dict(cfg: SACConfig) -> dict[str, Any]:
    """The settings as saved in a checkpoint (tuples as lists, as torch.load returns them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _split_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"SAC setting {text!r}: expected KEY=VALUE, e.g. critic_dropout=0.01")
    return key.strip(), value.strip()


@dataclass
class TrainConfig:
    """Loop settings; ``sac`` holds the learning hyper-parameters."""

    steps: int = 10_000  # env steps
    seed: int = 0
    learning_starts: int = 1_000  # uniform random actions (and no updates) before this step
    batch_size: int = 256
    updates_per_step: int = 1
    replay_capacity: int = 1_000_000
    eval_episodes: int = 10
    log_every: int = 500  # env steps between training-statistics lines
    torch_threads: int | None = None  # None: leave torch's default
    checkpoint_every: int = 1_000  # env steps between checkpoints (and one at the end)
    replay_flush_every: int = 1_000  # transitions between replay-chunk writes ...
    replay_flush_interval_s: float = 10.0  # ... or seconds, whichever comes first
    sac: SACConfig = field(default_factory=SACConfig)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "updates_per_step", "replay_capacity", "eval_episodes", "log_every",
                     "checkpoint_every", "replay_flush_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")
