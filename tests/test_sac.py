"""SAC: the maths (log-prob, temperature, bootstrapping), checkpoints, spaces and the image path."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation, TimeLimit

from robosac.persist import CheckpointError, load_checkpoint, save_checkpoint
from robosac.sac.networks import Actor, PixelDecoder, PixelEncoder
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, Policy, SACConfig, random_shift
from robosac.sac.spaces import UnsupportedSpaceError, parse_obs_space
from robosac.sac.train import TrainConfig, train
from sac_envs import ConstantRewardEnv, ShadeBanditEnv

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests

STATE = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = spaces.Box(-2.0, 2.0, (2,), np.float32)


def _fixed_actor(mean: float, log_std: float, act_dim: int = 1) -> Actor:
    """An actor whose pre-tanh Gaussian is N(mean, exp(log_std)) whatever the input."""
    actor = Actor(1, act_dim, hidden=(4,))
    with torch.no_grad():
        for p in actor.parameters():
            p.zero_()
        last = actor.net[-1]
        # Invert the smooth log-std bound so the head outputs exactly `log_std`.
        raw = math.atanh(2 * (log_std + 5.0) / 7.0 - 1.0)
        last.bias[:act_dim] = mean
        last.bias[act_dim:] = raw
    return actor


@pytest.mark.parametrize("mean,log_std", [(0.0, 0.0), (1.5, -0.5), (-1.0, 0.5)])
def test_log_prob_matches_brute_force_density(mean, log_std):
    torch.manual_seed(0)
    actor = _fixed_actor(mean, log_std)
    a, logp = actor.sample(torch.zeros(200_000, 1))
    a, logp = a[:, 0].double(), logp.detach().double()
    # Closed form by change of variables in float64; near |a| = 1 the float32 action no longer
    # pins down u (atanh amplifies its rounding), so compare where it does.
    inside = a.abs() < 0.999
    u = torch.atanh(a[inside])
    exact = torch.distributions.Normal(mean, math.exp(log_std)).log_prob(u) - torch.log1p(-a[inside] ** 2)
    assert torch.allclose(logp[inside], exact, atol=2e-3, rtol=1e-3)
    # Brute force, no formula: if p is the density the samples come from, then
    # E[1{a in I} / p(a)] = |I| for every interval I (Monte-Carlo importance identity).
    # Checked on every interval holding enough samples for the estimate to be tight.
    checked = 0
    edges = np.linspace(-0.96, 0.96, 9)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (a > lo) & (a < hi)
        if inside.double().mean() < 0.05:
            continue
        estimate = float(torch.where(inside, torch.exp(-logp.detach()), 0.0).mean())
        assert estimate == pytest.approx(hi - lo, rel=0.05), (lo, hi)
        checked += 1
    assert checked >= 2


def test_log_prob_stays_finite_where_tanh_saturates():
    torch.manual_seed(0)
    actor = _fixed_actor(mean=30.0, log_std=-4.0)  # tanh(u) rounds to exactly 1.0 in float32
    a, logp = actor.sample(torch.zeros(1000, 1))
    assert torch.all(a == 1.0)
    assert torch.all(torch.isfinite(logp))
    # The naive log(1 - tanh(u)^2) would be log(0) = -inf here.
    assert torch.isinf(torch.log(1 - a**2)).all()


def _filled_replay(agent: SAC, n: int = 512, seed: int = 0) -> Replay:
    rng = np.random.default_rng(seed)
    replay = Replay(agent.spec, ACT.shape[0], n, seed=seed)
    for _ in range(n):
        o, o2 = rng.uniform(-1, 1, 3).astype(np.float32), rng.uniform(-1, 1, 3).astype(np.float32)
        replay.add(o, rng.uniform(-2, 2, 2).astype(np.float32), float(rng.normal()), o2, False)
    return replay


@pytest.mark.parametrize("target_entropy,direction", [(10.0, +1), (-20.0, -1)])
def test_temperature_moves_toward_target_entropy(target_entropy, direction):
    """Entropy below target -> alpha rises; above -> alpha falls."""
    agent = SAC(STATE, ACT, SACConfig(target_entropy=target_entropy, alpha_lr=1e-2, hidden=(32, 32)), seed=0)
    replay = _filled_replay(agent)
    alphas = [agent.alpha]
    for _ in range(50):
        agent.update(replay.sample(64))
        alphas.append(agent.alpha)
    steps = np.sign(np.diff(alphas))
    assert np.all(steps == direction), alphas[:5]
    assert (alphas[-1] - alphas[0]) * direction > 0.3 * alphas[0]


def test_temperature_settles_entropy_near_target():
    """A cost of 10 a^2 pulls the policy narrow and the entropy bonus pushes it wide; the learned
    alpha must balance them where the policy's entropy equals the target."""
    env = ConstantRewardEnv(True)
    cfg = SACConfig(target_entropy=-1.0, alpha_lr=3e-3, actor_lr=3e-3, critic_lr=3e-3, hidden=(32, 32))
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    replay = Replay(agent.spec, 1, 512, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(512):
        a = rng.uniform(-1, 1, 1).astype(np.float32)
        replay.add(np.zeros(1, np.float32), a, -10.0 * float(a[0] ** 2), np.zeros(1, np.float32), True)
    stats = [agent.update(replay.sample(128)) for _ in range(1500)]
    entropy = np.mean([s["entropy"] for s in stats[-300:]])
    assert abs(entropy - (-1.0)) < 0.2, entropy
    assert stats[-1]["alpha"] < 0.5  # it had to move from 1.0 to get there


def _q_after_training(terminate: bool, steps: int = 700, **sac: Any) -> float:
    env_factory = (lambda: ConstantRewardEnv(True)) if terminate else (lambda: TimeLimit(ConstantRewardEnv(False), max_episode_steps=1))
    cfg = TrainConfig(
        steps=steps, seed=0, learning_starts=64, batch_size=64, eval_episodes=1, log_every=100,
        sac=SACConfig(hidden=(32, 32), gamma=0.9, tau=0.2, init_alpha=1e-6, alpha_lr=0.0, critic_lr=3e-3, actor_lr=3e-3, **sac),
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        train(env_factory, cfg, d, progress=False)
        state = load_checkpoint(f"{d}/checkpoint.pt")
    env = env_factory()
    agent = SAC(env.observation_space, env.action_space, cfg.sac)
    agent.load_state_dict(state["agent"])
    with torch.no_grad():
        obs = agent.obs_to_torch(np.zeros(1, np.float32))
        q = agent.critic(agent.encoder(obs), torch.zeros(1, 1), frozen=True)  # running batch-norm statistics (CrossQ)
    return float(q.mean())


def test_truncation_bootstraps_and_termination_does_not():
    """Reward 1 per step, gamma 0.9: a time-limit cut must bootstrap (Q -> 10), a terminal not (Q -> 1)."""
    assert _q_after_training(terminate=True) == pytest.approx(1.0, abs=0.15)
    assert _q_after_training(terminate=False) == pytest.approx(10.0, abs=1.5)


@pytest.mark.parametrize("crossq", [False, True])
def test_checkpoint_round_trip_gives_identical_actions_and_updates(tmp_path, crossq):
    agent = SAC(STATE, ACT, SACConfig(hidden=(32, 32), crossq=crossq, policy_delay=3 if crossq else 1), seed=0)
    replay = _filled_replay(agent)
    for _ in range(20):
        agent.update(replay.sample(64))
    save_checkpoint({"agent": agent.state_dict()}, tmp_path / "ck.pt")

    clone = SAC(STATE, ACT, agent.config, seed=123)  # different init on purpose
    clone.load_state_dict(load_checkpoint(tmp_path / "ck.pt")["agent"])
    obs = np.array([0.1, -0.4, 0.7], np.float32)
    assert np.array_equal(agent.act(obs, deterministic=True), clone.act(obs, deterministic=True))
    torch.manual_seed(5)
    a1 = agent.act(obs)
    torch.manual_seed(5)
    a2 = clone.act(obs)
    assert np.array_equal(a1, a2)
    assert clone.alpha == agent.alpha and clone.updates == agent.updates
    # Optimizer state came along too: the next update is bit-identical.
    batch = replay.sample(64)
    torch.manual_seed(9)
    s1 = agent.update(batch)
    torch.manual_seed(9)
    s2 = clone.update(batch)
    assert s1 == s2
    assert np.array_equal(agent.act(obs, deterministic=True), clone.act(obs, deterministic=True))


@pytest.mark.parametrize("crossq", [False, True])
def test_policy_acts_like_the_agent_it_was_loaded_from_and_builds_no_optimizer(crossq):
    """What a robot's control process builds: the encoder and actor of SAC, the same ones for the
    same seed, loaded from the learner's state; without critics or optimizers (torch's optimizers
    import its compiler stack, about 2 s of CPU at every robot start)."""
    import subprocess
    import sys

    cfg = SACConfig(hidden=(32, 32), crossq=crossq, policy_delay=3 if crossq else 1)
    agent = SAC(STATE, ACT, cfg, seed=0)
    obs = np.array([0.1, -0.4, 0.7], np.float32)
    assert np.array_equal(Policy(STATE, ACT, cfg, seed=0).act(obs, deterministic=True), agent.act(obs, deterministic=True))
    replay = _filled_replay(agent)
    for _ in range(10):
        agent.update(replay.sample(64))
    policy = Policy(STATE, ACT, cfg, seed=123)
    assert not np.array_equal(policy.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    policy.load_state_dict(agent.state_dict())
    assert np.array_equal(policy.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    torch.manual_seed(5)
    a1 = agent.act(obs)
    torch.manual_seed(5)
    assert np.array_equal(policy.act(obs), a1)
    assert not hasattr(policy, "critic") and not hasattr(policy, "optimizer")
    with pytest.raises(ValueError, match="hidden"):
        Policy(STATE, ACT, SACConfig(hidden=(64, 64)), seed=0).load_state_dict(agent.state_dict())
    # Settings SAC would refuse are refused by the policy too (a robot stops at start, not its learner).
    with pytest.raises(ValueError, match="policy_delay: invalid value 0"):
        Policy(STATE, ACT, SACConfig(policy_delay=0))
    code = ("import sys, numpy as np\nfrom gymnasium import spaces\nfrom robosac.sac.sac import Policy, SAC\n"
            "s, a = spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32)\n"
            "Policy(s, a).act(np.zeros(3, np.float32)); print('torch._dynamo' in sys.modules)\n"
            "SAC(s, a); print('torch._dynamo' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "True"], r.stderr[-2000:]


def test_checkpoint_with_other_settings_is_refused(tmp_path):
    agent = SAC(STATE, ACT, SACConfig(hidden=(32, 32)), seed=0)
    other = SAC(STATE, ACT, SACConfig(hidden=(64, 64)), seed=0)
    with pytest.raises(ValueError, match="hidden"):
        other.load_state_dict(agent.state_dict())
    # A checkpoint from before a setting existed loads as that setting's default, and only then.
    old = agent.state_dict()
    del old["config"]["critic_dropout"]
    SAC(STATE, ACT, SACConfig(hidden=(32, 32)), seed=1).load_state_dict(old)
    with pytest.raises(ValueError, match="critic_dropout"):
        SAC(STATE, ACT, SACConfig(hidden=(32, 32), critic_dropout=0.1), seed=1).load_state_dict(old)
    # The entropy target may change (a run resumed with a lower one): it keeps the learned
    # temperature and aims at the new target from there.
    with torch.no_grad():
        agent.log_alpha.fill_(-3.0)
    lower = SAC(STATE, ACT, SACConfig(hidden=(32, 32), target_entropy=-4.0), seed=1)
    lower.load_state_dict(agent.state_dict())
    assert lower.target_entropy == -4.0 and agent.target_entropy == -ACT.shape[0] and lower.log_alpha.item() == -3.0
    with pytest.raises(ValueError, match="hidden"):
        SAC(STATE, ACT, SACConfig(hidden=(64, 64), target_entropy=-4.0), seed=1).load_state_dict(agent.state_dict())


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"agent": SAC(STATE, ACT, SACConfig(hidden=(8,))).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "obs_space,act_space,message",
    [
        (STATE, spaces.Discrete(3), "continuous 1-D Box"),
        (STATE, spaces.Box(-1, 1, (2, 2)), "must be 1-D"),
        (STATE, spaces.Box(-np.inf, np.inf, (2,)), "finite"),
        (spaces.Discrete(4), ACT, "unsupported space"),
        (spaces.Box(-1, 1, (4, 4), np.float32), ACT, "unsupported space"),
        (spaces.Box(0, 255, (32, 32, 32), np.uint8), ACT, "cannot tell channels"),
        (spaces.Dict({"a": spaces.Box(0, 255, (3, 32, 32), np.uint8), "b": spaces.Box(0, 255, (3, 32, 32), np.uint8)}), ACT, "only one image"),
        (spaces.Dict({"s": STATE, "t": spaces.MultiBinary(3)}), ACT, r"observation\['t'\]"),
    ],
)
def test_unsupported_spaces_are_refused_clearly(obs_space, act_space, message):
    with pytest.raises(UnsupportedSpaceError, match=message):
        SAC(obs_space, act_space)


def test_image_layouts_and_frame_stacks_are_understood():
    assert parse_obs_space(spaces.Box(0, 255, (3, 64, 64), np.uint8)).image.chw == (3, 64, 64)
    assert parse_obs_space(spaces.Box(0, 255, (64, 48, 3), np.uint8)).image.chw == (3, 64, 48)
    stacked = FrameStackObservation(_HWCImageEnv(), stack_size=3)
    spec = parse_obs_space(stacked.observation_space)
    assert spec.image.chw == (9, 40, 40)
    agent = SAC(stacked.observation_space, stacked.action_space, SACConfig(hidden=(16,)))
    obs, _ = stacked.reset(seed=0)
    assert agent.act(obs).shape == (1,)
    replay = Replay(agent.spec, 1, 4)
    replay.add(obs, np.zeros(1, np.float32), 0.0, obs, False)
    batch = replay.sample(2)
    assert batch["obs"]["pixels"].dtype == torch.uint8 and batch["obs"]["pixels"].shape == (2, 9, 40, 40)
    # Channel order survives: frame k's channels land at [3k, 3k+3).
    np.testing.assert_array_equal(batch["obs"]["pixels"][0, 3:6].numpy(), np.moveaxis(obs[1], -1, 0))


class _HWCImageEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (40, 40, 3), np.uint8)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.integers(0, 256, (40, 40, 3), dtype=np.uint8), {}

    def step(self, action):
        return self.np_random.integers(0, 256, (40, 40, 3), dtype=np.uint8), 0.0, False, False, {}


def test_random_shift_moves_whole_images_within_the_pad():
    torch.manual_seed(0)
    img = torch.arange(16 * 16, dtype=torch.int64).reshape(1, 1, 16, 16).repeat(64, 3, 1, 1).to(torch.uint8)
    out = random_shift(img, pad=2)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert torch.equal(random_shift(img, pad=0), img.float())
    img = img.float()
    shifts = set()
    for b in range(64):
        # Recover the shift from the centre pixel; it must be one rigid move of the whole image.
        src = int(out[b, 0, 8, 8])
        dy, dx = src // 16 - 8, src % 16 - 8
        assert abs(dy) <= 2 and abs(dx) <= 2
        rows = (torch.arange(16) + dy).clamp(0, 15)
        cols = (torch.arange(16) + dx).clamp(0, 15)
        assert torch.equal(out[b], img[b][:, rows][:, :, cols])
        shifts.add((dy, dx))
    assert len(shifts) > 10  # per-image shifts, not one for the batch


def test_pixel_encoder_scales_its_input_to_plus_minus_half():
    """The first conv carries the x / 255 - 0.5 scaling; the output must equal the plain pipeline."""
    torch.manual_seed(0)
    enc = PixelEncoder((3, 20, 20), feature_dim=8)
    img = torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8)
    plain = enc.head(enc.convs(img.float() / 255.0 - 0.5))
    torch.testing.assert_close(enc(img), plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc(img.float()), plain, atol=1e-5, rtol=1e-5)
    # The scaling is not applied twice: a constant grey image (127.5 -> 0) gives the bias response.
    grey = torch.full((1, 3, 20, 20), 127.5)
    torch.testing.assert_close(enc(grey), enc.head(enc.convs(torch.zeros(1, 3, 20, 20))), atol=1e-5, rtol=1e-5)


def test_random_shift_returns_channels_last_floats():
    img = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    for pad in (0, 2):
        out = random_shift(img, pad)
        assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)


def test_encoder_learns_from_the_critic_only():
    env = ShadeBanditEnv(with_state=True)
    agent = SAC(env.observation_space, env.action_space, SACConfig(hidden=(32,), critic_lr=0.0), seed=0)
    replay = Replay(agent.spec, 1, 64, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(64):
        replay.add(obs, env.action_space.sample(), -1.0, obs, True)
    enc_before = [p.clone() for p in agent.encoder.parameters()]
    actor_before = [p.clone() for p in agent.actor.parameters()]
    for _ in range(3):
        agent.update(replay.sample(16))
    # critic_lr = 0 freezes what the critic loss trains: the encoder stays put, the actor moves.
    assert all(torch.equal(a, b) for a, b in zip(enc_before, agent.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))


def _learn_bandit(agent: SAC, env: gym.Env, replay: Replay, steps: int, hook=lambda b: b) -> None:
    """One-step episodes: 200 random actions, then the agent acts and updates once per step."""
    obs, _ = env.reset(seed=0)
    for step in range(steps):
        action = env.action_space.sample() if step < 200 else agent.act(obs)
        next_obs, reward, terminated, _, _ = env.step(action)
        replay.add(obs, action, reward, next_obs, terminated)
        obs, _ = env.reset()
        if step >= 200:
            agent.update(hook(replay.sample(64)))


@pytest.mark.parametrize("crossq", [False, True])
def test_pixel_sac_learns_a_bandit_seen_only_in_images(crossq):
    """The answer is only in the image, so the conv encoder must learn it through the critic
    (for CrossQ, from the pass over s and s' joined)."""
    env = ShadeBanditEnv()
    cfg = SACConfig(hidden=(64, 64), feature_dim=16, conv_channels=(8, 16, 16), shift_pad=2, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3,
                    crossq=crossq)
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    replay = Replay(agent.spec, 1, 2000, seed=0)
    _learn_bandit(agent, env, replay, 1200)
    errors = []
    for i in range(50):
        obs, _ = env.reset(seed=10_000 + i)
        errors.append(abs(agent.act(obs, deterministic=True)[0] - env.target))
    # Always answering 0 would give a mean error of 0.5. CrossQ answers less precisely at this
    # budget: 0.12-0.16 over four runs (threads make runs differ), SAC 0.07.
    assert np.mean(errors) < (0.2 if crossq else 0.15), np.mean(errors)


def _assert_restored_agent_updates_identically(agent: SAC, env: gym.Env, replay: Replay, tmp_path, hook=lambda b: b) -> None:
    """Everything an update reads is saved: a restored agent makes a bit-identical next update
    (on a batch passed through ``hook``, as a run's batch hook adds what the env derives)."""
    save_checkpoint({"agent": agent.state_dict()}, tmp_path / "ck.pt")
    clone = SAC(env.observation_space, env.action_space, agent.config, seed=1)
    clone.load_state_dict(load_checkpoint(tmp_path / "ck.pt")["agent"])
    batch = hook(replay.sample(32))
    torch.manual_seed(3)
    s1 = agent.update(batch)
    torch.manual_seed(3)
    assert clone.update(batch) == s1


def test_pixel_decoder_gives_the_encoders_input_shape_channels_last():
    """The decoder's images are (B, C, H, W) like the encoder's input, odd sizes included, and
    channels-last like the shifted frames it is compared with; the layout changes only the speed:
    the same layers on channels-first activations give the same images."""
    torch.manual_seed(0)
    for size in (32, 33, 64):
        dec = PixelDecoder((9, size, size), feature_dim=16)
        feat = torch.randn(4, 16)
        out = dec(feat)
        assert out.shape == (4, 9, size, size) and out.is_contiguous(memory_format=torch.channels_last)
        expected = dec.deconvs(torch.relu(dec.fc(feat)).view(-1, *dec.maps))
        assert expected.is_contiguous()
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        # Weights, and so their gradients and Adam's moments, stay in one layout (channels-first).
        F.mse_loss(out, torch.zeros_like(out)).backward()
        assert all(p.is_contiguous() and p.grad.is_contiguous() for p in dec.parameters())


def test_reconstruction_teaches_the_encoder_what_the_critic_does_not(tmp_path):
    """SAC-AE's loss (recon_weight > 0): with zero rewards the critic carries no information about
    the shade, yet after training the decoder rebuilds each image's red shade from the encoder's
    features, so the features hold it. Without the setting there is no decoder and no recon_loss."""
    env = ShadeBanditEnv()
    cfg = SACConfig(hidden=(32,), feature_dim=16, conv_channels=(8, 16, 16), shift_pad=2, critic_lr=1e-3, recon_weight=1.0)
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    replay = Replay(agent.spec, 1, 512, seed=0)
    for i in range(512):
        obs, _ = env.reset(seed=i)
        replay.add(obs, env.action_space.sample(), 0.0, obs, True)
    first = agent.update(replay.sample(64))["recon_loss"]
    for _ in range(300):
        last = agent.update(replay.sample(64))["recon_loss"]
    assert last < 0.5 * first, (first, last)

    shades, rebuilt = [], []
    with torch.no_grad():
        for i in range(40):
            obs, _ = env.reset(seed=5_000 + i)
            feat = agent.encoder(agent.obs_to_torch(obs))
            rebuilt.append(float(agent.decoder(feat)[0, 0].mean()))  # red channel, scaled to [-0.5, 0.5]
            shades.append(obs[0, 0, 0] / 255.0 - 0.5)
    assert np.corrcoef(shades, rebuilt)[0, 1] > 0.9
    assert np.mean(np.abs(np.array(rebuilt) - shades)) < 0.1

    # The decoder and its optimizer are saved.
    _assert_restored_agent_updates_identically(agent, env, replay, tmp_path)

    plain = SAC(env.observation_space, env.action_space, SACConfig(hidden=(32,), feature_dim=16), seed=0)
    assert plain.decoder is None and "recon_loss" not in plain.update(replay.sample(8))
    with pytest.raises(ValueError, match="recon_weight.*with image observations"):
        SAC(STATE, ACT, SACConfig(recon_weight=1.0))


def test_actions_are_scaled_to_the_action_bounds():
    space = spaces.Box(np.array([0.0, -10.0], np.float32), np.array([1.0, 10.0], np.float32))
    agent = SAC(STATE, space, SACConfig(hidden=(8,)), seed=0)
    acts = np.stack([agent.act(STATE.sample()) for _ in range(200)])
    assert np.all(acts >= space.low) and np.all(acts <= space.high)
    assert acts[:, 1].max() - acts[:, 1].min() > 5.0  # uses the range, not just [-1, 1]


def test_droq_critic_has_layer_norm_and_dropout_and_learns_the_bootstrap():
    """DroQ's critic: with LayerNorm, scaling a hidden layer's weights and bias changes nothing
    (without it, Q scales too); dropout makes two passes differ; and it still learns Q = 10
    (reward 1, gamma 0.9, no termination)."""
    from robosac.sac.networks import TwinCritic

    feat, act = torch.randn(64, 3), torch.randn(64, 2)
    for layer_norm in (True, False):
        torch.manual_seed(0)
        critic = TwinCritic(3, 2, (32, 32), layer_norm=layer_norm)
        with torch.no_grad():
            before = critic(feat, act)
            critic.layers[0].weight.mul_(100.0)
            critic.layers[0].bias.mul_(100.0)
            after = critic(feat, act)
        assert torch.allclose(before, after, atol=1e-4) == layer_norm
    critic = TwinCritic(3, 2, (32, 32), dropout=0.2)
    assert not torch.equal(critic(feat, act), critic(feat, act))  # dropout is on in every pass
    assert _q_after_training(terminate=False, critic_dropout=0.01, critic_layer_norm=True) == pytest.approx(10.0, abs=1.5)


def test_sac_settings_parse_by_field_type_and_name_bad_keys():
    from robosac.sac.sac import sac_config_from

    cfg = sac_config_from(["critic_dropout=0.01", "critic_layer_norm=true", "hidden=64,64", "target_entropy=none", "gamma=0.95"])
    assert (cfg.critic_dropout, cfg.critic_layer_norm, cfg.hidden, cfg.target_entropy, cfg.gamma) == (0.01, True, (64, 64), None, 0.95)
    with pytest.raises(ValueError, match="'nope' is unknown; allowed: hidden"):
        sac_config_from(["nope=1"])
    with pytest.raises(ValueError, match="gamma: invalid value 'fast'; allowed: a number"):
        sac_config_from(["gamma=fast"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        sac_config_from(["gamma"])


def test_learner_tuning_flushes_denormals_in_new_threads_too():
    """A learner's Adam state fills with denormals in real training (100x slower arithmetic on x86);
    tune_learner_process must make them zero on the calling thread and on threads it starts later
    (the distributed learner trains in a thread). Run in a child so this process keeps IEEE maths."""
    import subprocess
    import sys

    code = (
        "import threading, torch\n"
        "from robosac.sac.perf import tune_learner_process\n"
        "tiny = torch.full((4,), 1e-39)\n"
        "assert float(tiny.mul(1.0).max()) > 0  # IEEE by default: a denormal survives\n"
        "print(tune_learner_process())\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(float(tiny.mul(1.0).max()))); t.start(); t.join()\n"
        "print(float(tiny.mul(1.0).max()), seen[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "{'keep_freed_memory': True, 'flush_denormals': True}"
    assert out[1] == "0.0 0.0"


def test_batch_renorm_uses_batch_statistics_in_training_and_running_ones_otherwise():
    """Training: the batch is normalised with its own mean and std and the running statistics move
    towards them; eval: the running statistics. After the warm-up the batch is pulled towards the
    running statistics (r, d), so a batch far off them is no longer normalised to (0, 1)."""
    from robosac.sac.networks import BatchRenorm

    torch.manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(512, 4)
    bn = BatchRenorm(4, momentum=0.5, warmup=3)
    y = bn(x)
    assert torch.allclose(y.mean(0), torch.zeros(4), atol=1e-5) and torch.allclose(y.std(0, unbiased=False), torch.ones(4), atol=1e-3)
    assert torch.allclose(bn.running_mean, 0.5 * x.mean(0), atol=1e-5)  # half way from 0 (momentum 0.5)
    for _ in range(20):
        bn(x)
    assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-4)
    bn.eval()
    assert torch.allclose(bn(x), y, atol=1e-2)  # running statistics now match this batch
    one = bn(x[:1])
    assert torch.allclose(one, y[:1], atol=1e-2)  # one sample gets the same answer as in its batch
    bn.train()
    shifted = bn(x + 10.0)  # past the warm-up: d is clipped at 5 running stds, so the shift shows
    assert shifted.mean() > 4.0
    ens = BatchRenorm(4, lead=(2,))
    z = ens(torch.stack([x, 5 * x]))  # (N, B, H): statistics per member
    assert torch.allclose(z.mean(1), torch.zeros(2, 4), atol=1e-4)


def test_crossq_update_has_no_target_critic_and_moves_the_actor_every_third_update():
    agent = SAC(STATE, ACT, SACConfig(hidden=(32, 32), crossq=True, policy_delay=3), seed=0)
    replay = _filled_replay(agent)
    assert not hasattr(agent, "target_critic") and "target_critic" not in agent.state_dict()
    actor_changes = []
    for _ in range(6):
        before = [p.clone() for p in agent.actor.parameters()]
        agent.update(replay.sample(64))
        actor_changes.append(any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters())))
    # Adam keeps moving a parameter on its momentum after its last gradient, so count the
    # updates that touched the actor through its running statistics instead: 0 and 3.
    passes = agent.actor.net[0].passes.item()
    assert passes == 2, passes
    assert actor_changes[0] and actor_changes[3]
    critic_passes = agent.critic.batch_norms[0].passes.item()
    assert critic_passes == 6  # one joint (s, a) + (s', a') pass per update
    obs = np.array([0.1, -0.4, 0.7], np.float32)
    assert np.array_equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))  # no batch statistics when acting


@pytest.mark.parametrize("terminate, q", [(True, 1.0), (False, 10.0)])
def test_crossq_learns_the_bootstrap_without_target_critics(terminate, q):
    """CrossQ's target comes from the critic itself: it must still learn Q = 1 with terminals and
    Q = 10 with time-limit cuts (reward 1, gamma 0.9)."""
    got = _q_after_training(terminate=terminate, steps=400, crossq=True, policy_delay=3)  # 9.87 at 400 steps, 7.26 at 300
    assert got == pytest.approx(q, abs=0.15 * q), got


def test_policy_delay_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="policy_delay: invalid value 0"):
        SAC(STATE, ACT, SACConfig(policy_delay=0))


def test_reward_head_reads_the_reward_from_the_next_image(tmp_path):
    """reward_head: each transition's reward is the red shade of the image it led to (in [-1, 1]);
    after training, the head predicts it for unseen images from the encoder's features alone, so
    the encoder learned to read it. The head and its optimizer survive a checkpoint; the setting is
    refused without images or with n-step returns, and off by default."""
    env = ShadeBanditEnv()
    cfg = SACConfig(hidden=(32,), feature_dim=16, conv_channels=(8, 16, 16), shift_pad=2, critic_lr=1e-3, reward_head=True)
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    replay = Replay(agent.spec, 1, 512, seed=0)
    obs, _ = env.reset(seed=0)
    for i in range(512):
        next_obs, _ = env.reset(seed=i + 1)
        replay.add(obs, env.action_space.sample(), env.target, next_obs, True)
        obs = next_obs
    first = agent.update(replay.sample(64))["reward_loss"]
    for _ in range(300):
        last = agent.update(replay.sample(64))["reward_loss"]
    assert last < 0.2 * first, (first, last)

    targets, predicted = [], []
    with torch.no_grad():
        for i in range(40):
            obs, _ = env.reset(seed=5_000 + i)
            predicted.append(float(agent.reward_head(agent.encoder(agent.obs_to_torch(obs)))))
            targets.append(env.target)
    assert np.corrcoef(targets, predicted)[0, 1] > 0.9
    assert np.mean(np.abs(np.array(predicted) - targets)) < 0.2

    _assert_restored_agent_updates_identically(agent, env, replay, tmp_path)

    plain = SAC(env.observation_space, env.action_space, SACConfig(hidden=(32,), feature_dim=16), seed=0)
    assert plain.reward_head is None and "reward_loss" not in plain.update(replay.sample(8))
    with pytest.raises(ValueError, match="reward_head.*with image observations and n_step=1"):
        SAC(STATE, ACT, SACConfig(reward_head=True))
    with pytest.raises(ValueError, match="reward_head.*with image observations and n_step=1"):
        SAC(env.observation_space, env.action_space, SACConfig(reward_head=True, n_step=3))


def _with_shade_angle(batch: dict) -> dict:
    """batch["aux"] as the claw's: cos and sin of an angle, here the next image's red shade mapped
    to [-pi/2, pi/2] (what a sensor on the robot would read after the step)."""
    angle = (batch["next_obs"]["pixels"][:, 0].float().mean((1, 2)) / 255.0 - 0.5) * math.pi
    return {**batch, "aux": torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)}


def test_aux_head_teaches_the_encoder_to_read_an_angle(tmp_path):
    """aux_weight > 0: with zero rewards the critic carries nothing about the shade, yet after
    training the auxiliary head reads the angle the shade stands for from unseen images' features
    (to a few hundredths of a radian), so the encoder learned it. The head and its optimizer
    survive a checkpoint; the setting is refused without images, n-step returns or targets."""
    env = ShadeBanditEnv()
    cfg = SACConfig(hidden=(32,), feature_dim=16, conv_channels=(8, 16, 16), shift_pad=2, critic_lr=1e-3, aux_weight=1.0, aux_dim=2)
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    replay = Replay(agent.spec, 1, 512, seed=0)
    for i in range(512):
        obs, _ = env.reset(seed=i)
        replay.add(obs, env.action_space.sample(), 0.0, obs, True)
    first = agent.update(_with_shade_angle(replay.sample(64)))["aux_loss"]
    for _ in range(300):
        last = agent.update(_with_shade_angle(replay.sample(64)))["aux_loss"]
    assert last < 0.05 * first, (first, last)

    errors = []
    with torch.no_grad():
        for i in range(40):
            obs, _ = env.reset(seed=5_000 + i)
            c, s = agent.aux_head(agent.encoder(agent.obs_to_torch(obs)))[0].tolist()
            errors.append(abs(math.atan2(s, c) - env.target * math.pi / 2))
    assert np.mean(errors) < 0.1, np.mean(errors)

    _assert_restored_agent_updates_identically(agent, env, replay, tmp_path, _with_shade_angle)

    plain = SAC(env.observation_space, env.action_space, SACConfig(hidden=(32,), feature_dim=16), seed=0)
    assert plain.aux_head is None and "aux_loss" not in plain.update(replay.sample(8))
    with pytest.raises(ValueError, match="aux_weight: invalid value 1.0; allowed: 0, or > 0 with image observations"):
        SAC(STATE, ACT, SACConfig(aux_weight=1.0, aux_dim=2))  # no images
    for bad in (SACConfig(aux_weight=1.0), SACConfig(aux_weight=1.0, aux_dim=2, n_step=3), SACConfig(aux_weight=-1.0, aux_dim=2)):
        with pytest.raises(ValueError, match="aux_weight: invalid value"):
            SAC(env.observation_space, env.action_space, bad)


def _with_shade_priv(batch: dict) -> dict:
    """A privileged critic's inputs for the shade bandit: the best action itself, read off the red
    shade of each image (as the claw's valve servo reads the angle the camera shows)."""
    def best(obs: dict) -> torch.Tensor:
        return (2.0 * obs["pixels"][:, 0].float().mean((1, 2)) / 255.0 - 1.0).unsqueeze(1)

    return {**batch, "priv": best(batch["obs"]), "next_priv": best(batch["next_obs"])}


@pytest.mark.parametrize("crossq", [True, False])
def test_privileged_critic_learns_from_the_reading_and_the_actor_from_the_image(tmp_path, crossq):
    """privileged_critic: the critics take the state plus batch["priv"] and no images; the encoder
    learns through the actor's loss. The policy, which sees only the image, learns the bandit; a
    restored agent updates bit-identically; the setting is refused where it cannot work."""
    env = ShadeBanditEnv(with_state=True)
    cfg = SACConfig(hidden=(64, 64), feature_dim=16, conv_channels=(8, 16, 16), shift_pad=2, actor_lr=1e-3, critic_lr=1e-3,
                    alpha_lr=1e-3, crossq=crossq, privileged_critic=True, priv_dim=1)
    agent = SAC(env.observation_space, env.action_space, cfg, seed=0)
    assert agent.critic.layers[0].weight.shape[1] == 2 + 1 + 1  # state (2) + priv (1) + action (1): no image features
    replay = Replay(agent.spec, 1, 2000, seed=0)
    env.action_space.seed(0)
    encoder_before = [p.clone() for p in agent.encoder.parameters()]
    _learn_bandit(agent, env, replay, 1500, _with_shade_priv)  # mean error 0.045-0.058 over 4 exploration seeds, both critics
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, agent.encoder.parameters()))
    errors = []
    for i in range(50):
        obs, _ = env.reset(seed=10_000 + i)
        errors.append(abs(agent.act(obs, deterministic=True)[0] - env.target))
    assert np.mean(errors) < 0.15, np.mean(errors)  # always answering 0 would give 0.5

    _assert_restored_agent_updates_identically(agent, env, replay, tmp_path, _with_shade_priv)

    with pytest.raises(ValueError, match="privileged_critic: invalid value True; allowed: false, or true with image observations"):
        SAC(STATE, ACT, SACConfig(privileged_critic=True, priv_dim=1))  # no images
    for bad in (SACConfig(privileged_critic=True), SACConfig(privileged_critic=True, priv_dim=1, n_step=3)):
        with pytest.raises(ValueError, match="privileged_critic: invalid value True"):
            SAC(env.observation_space, env.action_space, bad)
