"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv 1801.01290 and 1812.05905), one file.

Read top to bottom (the settings are in robosac/sac/config.py): the agent's parts, acting, then one update:
  1. critic: soft Bellman target from the target critics, bootstrapped unless *terminated*
     (a time-limit truncation is stored as not terminated, so it bootstraps);
  2. actor: maximise min(Q1, Q2) - alpha * log pi on features detached from the encoder;
  3. temperature: move log alpha so the policy's entropy tracks the target (-|A| by default);
  4. Polyak-average the target critics (and target encoder);
  5. with ``recon_weight`` > 0: one reconstruction step on the encoder and decoder (SAC-AE);
  6. with ``reward_head``: one reward-prediction step on the encoder and a reward head;
  7. with ``aux_weight`` > 0: one step predicting the env's auxiliary targets, likewise.
With ``privileged_critic`` (an asymmetric actor-critic, Pinto et al. 2018, arXiv 1710.06542) the
critics take the state plus ``batch["priv"]`` / ``batch["next_priv"]`` (B, ``priv_dim``), what the
robot's own sensors read at s and s' (the claw: the valve angle, which the reward is computed from),
and no images; the encoder then learns through the actor's loss in step 2 (and steps 5-7). Only
training reads those inputs: the policy still acts from the image and the state.
Images: a conv encoder trained through the critic loss, random-shift augmentation (DrQ), state
concatenated after the encoder; with ``recon_weight`` > 0 also through SAC-AE's loss (Yarats et al.
2019): a decoder rebuilds the (shifted) images from the image features, with its own Adam; with
``reward_head`` also through a head that predicts each transition's reward from the features of the
observation it led to (the reward is in every transition, so this needs nothing privileged), also
with its own Adam; with ``aux_weight`` > 0 also through a head that predicts ``batch["aux"]``
(B, ``aux_dim``), what the robot's own sensors read when the transition ended (the claw: cos and
sin of the valve angle, which the reward is computed from anyway), from the same features. The
policy and the critics never take those targets as input: they act from the image and the state.
CrossQ (``crossq=True``; Bhatt et al., ICLR 2024): batch renormalisation in the actor and the
critics and no target critics; step 1 takes its target from the critic itself, with (s, a) and
(s', a') in one batch so both halves are normalised with the same statistics; the actor and the
temperature move every ``policy_delay``-th update, and Adam's beta1 is 0.5.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from robosac.sac.config import RESUMABLE_SAC_CHANGES, SACConfig, config_dict, sac_config_from
from robosac.sac.networks import Actor, ObsEncoder, PixelDecoder, TwinCritic, mlp
from robosac.sac.replay import canonical_obs
from robosac.sac.spaces import ObsSpec, check_action_space, parse_obs_space


__all__ = ["SACConfig", "sac_config_from", "random_shift", "Policy", "SAC"]  # the settings too, as before they had a module


def random_shift(pixels: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ augmentation: shift each image of (B, C, H, W) by up to ±pad px, edges replicated.

    Returns float32 in the input's value range (0-255 for uint8), channels-last, ready for the
    encoder (converted here once, not in each of the encoders it goes through). Nearest-neighbour
    ``grid_sample`` at pixel centres moves whole pixels exactly and is the fastest of the exact
    methods on a CPU (BENCHMARKS.md).
    """
    b, _, h, w = pixels.shape
    x = pixels.float()
    if pad == 0:
        return x.contiguous(memory_format=torch.channels_last)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device)  # pixel centres, align_corners=False
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    shift = torch.randint(-pad, pad + 1, (b, 1, 1, 2), device=x.device).float()
    grid = grid + shift * torch.tensor([2 / w, 2 / h], device=x.device)
    out = F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


class Policy:
    """What acting needs: the encoder and the tanh-Gaussian actor, no critics and no optimizers.
    A robot's control process builds this, not :class:`SAC`: torch's optimizers import its compiler
    stack on first use (about 2 s of CPU), which acting never needs."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: SACConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ):
        self.config = cfg = config or SACConfig()
        self.spec: ObsSpec = parse_obs_space(observation_space)
        # Settings the encoder and actor do not use are checked here too: a robot refuses them at start.
        if cfg.n_step < 1:
            raise ValueError(f"SAC setting n_step: invalid value {cfg.n_step}; allowed: an integer >= 1")
        if cfg.policy_delay < 1:
            raise ValueError(f"SAC setting policy_delay: invalid value {cfg.policy_delay}; allowed: an integer >= 1")
        if cfg.recon_weight < 0 or (cfg.recon_weight > 0 and self.spec.image is None):
            raise ValueError(f"SAC setting recon_weight: invalid value {cfg.recon_weight}; allowed: 0, or > 0 with image observations")
        if cfg.reward_head and (self.spec.image is None or cfg.n_step != 1):
            raise ValueError("SAC setting reward_head: invalid value True; allowed: false, or true with image observations and n_step=1")
        if cfg.aux_weight < 0 or (cfg.aux_weight > 0 and (self.spec.image is None or cfg.n_step != 1 or cfg.aux_dim < 1)):
            raise ValueError(f"SAC setting aux_weight: invalid value {cfg.aux_weight}; allowed: 0, or > 0 with image observations, "
                             f"n_step=1 and an env that gives auxiliary targets (aux_dim >= 1, now {cfg.aux_dim})")
        if cfg.privileged_critic and (self.spec.image is None or cfg.n_step != 1 or cfg.priv_dim < 1):
            raise ValueError("SAC setting privileged_critic: invalid value True; allowed: false, or true with image observations, "
                             f"n_step=1 and an env that gives privileged critic inputs (priv_dim >= 1, now {cfg.priv_dim})")
        if cfg.n_step > 1 and not self.spec.state_dim:
            raise ValueError("SAC setting n_step > 1 needs a state part in the observation (it tells where episodes end)")
        action_space = check_action_space(action_space)
        self.device = torch.device(device)
        if seed is not None:
            torch.manual_seed(seed)  # the encoder and actor first: a SAC with this seed starts with the same ones
        # Env units <-> the actor's [-1, 1]: a_env = center + half_range * a.
        self.action_center = torch.as_tensor((action_space.high + action_space.low) / 2, dtype=torch.float32, device=self.device)
        self.action_half_range = torch.as_tensor((action_space.high - action_space.low) / 2, dtype=torch.float32, device=self.device)
        self.encoder = ObsEncoder(self.spec, cfg.feature_dim, cfg.conv_channels).to(self.device)
        # The actor stays in eval mode (running batch-norm statistics) except for its own loss.
        self.actor = Actor(self.encoder.out_dim, action_space.shape[0], cfg.hidden, batch_norm=cfg.crossq).to(self.device).eval()

    def obs_to_torch(self, obs: Any) -> dict[str, torch.Tensor]:
        """One env observation -> canonical batch of 1 on the agent's device."""
        return {k: torch.from_numpy(v).unsqueeze(0).to(self.device) for k, v in canonical_obs(obs, self.spec).items()}

    @torch.inference_mode()
    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        """Action (A,) in env units for one observation as the env emits it."""
        feat = self.encoder(self.obs_to_torch(obs))
        a = self.actor.mode(feat) if deterministic else self.actor.sample(feat)[0]
        return (self.action_center + self.action_half_range * a)[0].cpu().numpy()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The encoder and actor of a :meth:`SAC.state_dict` (a checkpoint's ``"agent"``); raises
        ValueError if it was saved with other settings (see :meth:`SAC.load_state_dict`)."""
        _check_settings(state, self.config)
        for name in ("encoder", "actor"):
            getattr(self, name).load_state_dict(state[name])


def _check_settings(state: dict[str, Any], config: SACConfig) -> None:
    """ValueError unless a saved agent's settings are ``config``'s, :data:`RESUMABLE_SAC_CHANGES` aside."""
    # A setting added after the checkpoint was written counts as its default (which is how the
    # agent behaved before the setting existed).
    saved = {k: v for k, v in {**config_dict(SACConfig()), **state.get("config", {})}.items() if k not in RESUMABLE_SAC_CHANGES}
    mine = {k: v for k, v in config_dict(config).items() if k not in RESUMABLE_SAC_CHANGES}
    if saved != mine:
        diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine) if saved.get(k) != mine.get(k)}
        raise ValueError(f"checkpoint was saved with other SAC settings (saved, current): {diff}")


class SAC(Policy):
    """The agent: ``act`` for the control loop (from :class:`Policy`), ``update`` for the learner,
    ``state_dict`` to save."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: SACConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ):
        super().__init__(observation_space, action_space, config, device, seed)
        cfg = self.config
        act_dim = self.action_center.shape[0]
        critic_in = self.spec.state_dim + cfg.priv_dim if cfg.privileged_critic else self.encoder.out_dim
        self.critic = TwinCritic(critic_in, act_dim, cfg.hidden, dropout=cfg.critic_dropout,
                                 layer_norm=cfg.critic_layer_norm, batch_norm=cfg.crossq).to(self.device)
        # Target networks only where the update reads them (CrossQ bootstraps from the critic itself;
        # a privileged critic reads no image features, so it needs no target encoder).
        targets = () if cfg.crossq else ("target_critic",) if cfg.privileged_critic else ("target_encoder", "target_critic")
        self._modules = ("encoder", "actor", "critic") + targets
        self._optimizers: tuple[str, ...] = ("optimizer",)
        self.decoder = None
        if cfg.recon_weight > 0:
            self.decoder = PixelDecoder(self.spec.image.chw, cfg.feature_dim, cfg.conv_channels).to(self.device)
            self._modules += ("decoder",)
            # Its own Adam, as in SAC-AE: in the critic's, Adam would scale the encoder's summed
            # gradient by the critic's (returns of -1000s), and the reconstruction's share of each
            # step would vanish (the pixel claw's reconstruction error did not move in 11 000 updates).
            self.recon_optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=cfg.critic_lr,
                                                    fused=self.device.type in ("cpu", "cuda"))
            self._optimizers += ("recon_optimizer",)
        self.reward_head = None
        if cfg.reward_head:
            self.reward_head = mlp(self.encoder.out_dim, (256, 256), 1).to(self.device)
            self._modules += ("reward_head",)
            # Its own Adam for the reason the decoder has one: in the critic's, the TD error's
            # gradient on the encoder would set the step size and the reward's share would vanish.
            self.reward_optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.reward_head.parameters()], lr=cfg.critic_lr,
                                                     fused=self.device.type in ("cpu", "cuda"))
            self._optimizers += ("reward_optimizer",)
        self.aux_head = None
        if cfg.aux_weight > 0:
            self.aux_head = mlp(self.encoder.out_dim, (256, 256), cfg.aux_dim).to(self.device)
            self._modules += ("aux_head",)
            self.aux_optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.aux_head.parameters()], lr=cfg.critic_lr,
                                                  fused=self.device.type in ("cpu", "cuda"))
            self._optimizers += ("aux_optimizer",)
        if not cfg.crossq:
            self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
            self._critic_params = list(self.critic.parameters())
            self._target_critic_params = list(self.target_critic.parameters())
            self._encoder_params: list[torch.nn.Parameter] = []
            if "target_encoder" in targets:
                self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
                self._encoder_params = list(self.encoder.parameters())
                self._target_encoder_params = list(self.target_encoder.parameters())
        self.log_alpha = torch.tensor(np.log(cfg.init_alpha), dtype=torch.float32, device=self.device, requires_grad=True)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)

        # One Adam over all parameters, a learning rate per group; the encoder is in the group of
        # the loss it learns through (besides steps 5-7, with their own Adams): the critic's, or
        # with a privileged critic the actor's.
        encoder = list(self.encoder.parameters())
        self.optimizer = torch.optim.Adam(
            [
                {"params": [*self.critic.parameters(), *([] if cfg.privileged_critic else encoder)], "lr": cfg.critic_lr},
                {"params": [*self.actor.parameters(), *(encoder if cfg.privileged_critic else [])], "lr": cfg.actor_lr},
                {"params": [self.log_alpha], "lr": cfg.alpha_lr},
            ],
            betas=(0.5, 0.999) if cfg.crossq else (0.9, 0.999),
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.updates = 0
        self._actor_stats = torch.zeros(3, device=self.device)  # actor loss, alpha loss, entropy of the last actor update

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # ---- learning -----------------------------------------------------------------------------

    def sample(self, replay: Any, batch_size: int, **kwargs: Any) -> dict[str, Any]:
        """A batch from ``replay`` (a Replay or SharedReplay) as this agent's update expects it
        (n-step transitions when ``n_step`` > 1); ``kwargs`` go to the replay's ``sample``."""
        return replay.sample(batch_size, device=self.device, n_step=self.config.n_step, gamma=self.config.gamma, **kwargs)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One SAC gradient step on a batch from :meth:`sample`.

        As in the authors' softlearning code, the three losses are computed at the same parameters
        and stepped together: one backward pass and one optimizer step instead of three, which is
        most of what an update costs on a CPU. Each loss reaches only its own parameters.
        Returns scalar diagnostics: losses (recon_loss with recon_weight > 0, reward_loss with
        reward_head, aux_loss with aux_weight > 0), alpha, entropy (-mean log pi), mean Q.
        """
        cfg = self.config
        obs, next_obs = batch["obs"], batch["next_obs"]
        b = batch["action"].shape[0]
        # s and s' as one batch (2B, ...): the frames are shifted in one call, on uint8 (a quarter
        # of the bytes of floats to join), and CrossQ's critic pass reads the joined batch as it is.
        both_obs = {k: torch.cat([obs[k], next_obs[k]]) for k in obs}
        if "pixels" in both_obs:
            both_obs["pixels"] = random_shift(both_obs["pixels"], cfg.shift_pad)
            obs = {**obs, "pixels": both_obs["pixels"][:b]}
            next_obs = {**next_obs, "pixels": both_obs["pixels"][b:]}
        action = (batch["action"] - self.action_center) / self.action_half_range  # back to [-1, 1]
        reward, not_done = batch["reward"], 1.0 - batch["terminated"]
        discount = batch.get("discount", cfg.gamma)  # gamma^m for an m-step sample (n_step > 1)
        alpha = self.log_alpha.detach().exp()

        # 1. Critic: y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s')),
        # with r the discounted reward sum and gamma^m in place of gamma for an m-step sample.
        # Q' is the target critic, or for CrossQ the critic itself, run on (s, a) and (s', a') in
        # one batch (gradient through the (s, a) half only).
        if cfg.privileged_critic:
            with torch.no_grad():
                next_action, next_logp = self.actor.sample(self.encoder(next_obs))
            crit_in = self._privileged(obs, batch["priv"])
            next_in = self._privileged(next_obs, batch["next_priv"])
            if cfg.crossq:
                q, next_q = self.critic(torch.cat([crit_in, next_in]), torch.cat([action, next_action])).split(b, dim=1)
                target_q = next_q.detach().min(0).values
            else:
                with torch.no_grad():
                    target_q = self.target_critic(next_in, next_action).min(0).values
                q = self.critic(crit_in, action)
        elif cfg.crossq:
            feat_both = self.encoder(both_obs)
            feat = feat_both[:b]
            with torch.no_grad():
                next_action, next_logp = self.actor.sample(feat_both[b:])
            q, next_q = self.critic(feat_both, torch.cat([action, next_action])).split(b, dim=1)
            target_q = next_q.detach().min(0).values
        else:
            with torch.inference_mode():
                next_action, next_logp = self.actor.sample(self.encoder(next_obs))
                target_q = self.target_critic(self.target_encoder(next_obs), next_action).min(0).values
            feat = self.encoder(obs)
            q = self.critic(feat, action)  # (2, B)
        y = reward + discount * not_done * (target_q - alpha * next_logp)
        critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
        loss = critic_loss

        if self.updates % cfg.policy_delay == 0:
            # 2. Actor: minimise alpha * log pi(a|s) - min_i Q_i(s, a), a ~ pi(s). The features are
            # detached (the encoder learns from the critic only; with a privileged critic, from
            # this loss) and the critic's weights are frozen (this loss must not train it).
            feat = self.encoder(obs) if cfg.privileged_critic else feat.detach()
            self.actor.train()  # batch statistics, for batch norm
            pi_action, logp = self.actor.sample(feat)
            self.actor.eval()
            q_pi = self.critic(crit_in if cfg.privileged_critic else feat, pi_action, frozen=True).min(0).values
            actor_loss = (alpha * logp - q_pi).mean()

            # 3. Temperature: the gradient on log alpha is -(log pi + target entropy).
            logp = logp.detach()
            alpha_loss = -(self.log_alpha * (logp + self.target_entropy)).mean()
            loss = loss + actor_loss + alpha_loss
            self._actor_stats = torch.stack([actor_loss.detach(), alpha_loss.detach(), -logp.mean()])

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        # 4. Targets follow slowly: theta' <- (1 - tau) theta' + tau theta (CrossQ has none).
        if not cfg.crossq:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_critic_params, self._critic_params, cfg.tau)
                if self._encoder_params:
                    torch._foreach_lerp_(self._target_encoder_params, self._encoder_params, cfg.encoder_tau)

        # 5. Reconstruction (recon_weight > 0): the decoder rebuilds the shifted images from the
        # encoder's image features, scaled as the encoder sees them (x / 255 - 0.5); one step of
        # its own Adam on the encoder and the decoder.
        if self.decoder is not None:
            pixels = obs["pixels"]
            recon_loss = F.mse_loss(self.decoder(self.encoder.pixels(pixels)), pixels / 255.0 - 0.5)
            self.recon_optimizer.zero_grad(set_to_none=True)
            (cfg.recon_weight * recon_loss).backward()
            self.recon_optimizer.step()

        # 6. Reward prediction (reward_head): r_t depends on the state the action led to (the claw's
        # on the valve's angle to the target, which only the image shows), so the head reads the
        # next observation's features; one step of its own Adam on the encoder and the head.
        if self.reward_head is not None:
            reward_loss = F.mse_loss(self.reward_head(self.encoder(next_obs)).squeeze(-1), reward)
            self.reward_optimizer.zero_grad(set_to_none=True)
            reward_loss.backward()
            self.reward_optimizer.step()

        # 7. Auxiliary targets (aux_weight > 0): what the robot's sensors read after the action,
        # so from the next observation's features, as the reward head's.
        if self.aux_head is not None:
            aux_loss = F.mse_loss(self.aux_head(self.encoder(next_obs)), batch["aux"])
            self.aux_optimizer.zero_grad(set_to_none=True)
            (cfg.aux_weight * aux_loss).backward()
            self.aux_optimizer.step()
        self.updates += 1

        actor_loss, alpha_loss, entropy = self._actor_stats  # the last actor update's, with policy_delay > 1
        names = ["critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean"]
        values = [critic_loss.detach(), actor_loss, alpha_loss, alpha, entropy, q.detach().mean()]
        if self.decoder is not None:
            names.append("recon_loss")
            values.append(recon_loss.detach())
        if self.reward_head is not None:
            names.append("reward_loss")
            values.append(reward_loss.detach())
        if self.aux_head is not None:
            names.append("aux_loss")
            values.append(aux_loss.detach())
        return dict(zip(names, torch.stack(values).tolist()))

    def _privileged(self, obs: dict[str, torch.Tensor], priv: torch.Tensor) -> torch.Tensor:
        """A privileged critic's input (B, S + priv_dim): the state, then the privileged reading."""
        return torch.cat([obs["state"], priv], dim=1) if self.spec.state_dim else priv

    # ---- saving -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume learning: networks, targets, optimizers, log alpha, update count."""
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in (*self._modules, *self._optimizers)}
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["updates"] = self.updates
        state["actor_stats"] = self._actor_stats.clone()  # reported by updates that skip the actor (policy_delay)
        state["config"] = config_dict(self.config)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; raises ValueError if the saved agent has other settings
        (other than :data:`RESUMABLE_SAC_CHANGES`, which a resumed run may change)."""
        _check_settings(state, self.config)
        for name in (*self._modules, *self._optimizers):  # a CrossQ checkpoint from before session 19 also holds unused targets
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.updates = int(state["updates"])
        if "actor_stats" in state:
            self._actor_stats = state["actor_stats"].to(self.device)
