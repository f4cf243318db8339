"""n-step returns: built at sampling time from consecutive replay rows, in both replays, and used
by the SAC update's bootstrap (gamma^m for an m-step sample)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from robosac.runtime.shared import SharedReplay
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, SACConfig
from robosac.sac.spaces import parse_obs_space
from test_sac import _q_after_training

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests

GAMMA = 0.9
OBS = spaces.Box(-np.inf, np.inf, (2,), np.float32)


def _episodes(rng: np.random.Generator, n_rows: int) -> list[tuple[np.ndarray, float, np.ndarray, bool]]:
    """(obs, reward, next_obs, terminated) rows as a collector writes them: episodes of 1-6 steps,
    some terminal, some cut by a time limit, each next_obs handed on as the next obs."""
    rows = []
    while len(rows) < n_rows:
        length, terminal = int(rng.integers(1, 7)), bool(rng.integers(2))
        obs = rng.normal(size=2).astype(np.float32)
        for t in range(length):
            nxt = rng.normal(size=2).astype(np.float32)
            rows.append((obs, float(rng.normal()), nxt, terminal and t == length - 1))
            obs = nxt
    return rows[:n_rows]


def _expected(rows: list, i: int, n: int, newest: int) -> tuple[float, float, np.ndarray, bool]:
    """Reference n-step sample from logical row i: (reward sum, discount, next_obs, terminated)."""
    ret, disc, j = rows[i][1], GAMMA, i
    for _ in range(n - 1):
        if rows[j][3] or j + 1 > newest or not np.array_equal(rows[j + 1][0], rows[j][2]):
            break
        j += 1
        ret += disc * rows[j][1]
        disc *= GAMMA
    return ret, disc, rows[j][2], rows[j][3]


def _check(batch: dict, rows: list, first: int, newest: int, n: int) -> None:
    starts = {tuple(r[0]): k for k, r in enumerate(rows) if k >= first}
    for b in range(len(batch["reward"])):
        i = starts[tuple(batch["obs"]["state"][b].numpy())]
        ret, disc, nxt, term = _expected(rows, i, n, newest)
        assert batch["reward"][b].item() == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert batch["discount"][b].item() == pytest.approx(disc, rel=1e-6)
        assert np.array_equal(batch["next_obs"]["state"][b].numpy(), nxt)
        assert bool(batch["terminated"][b]) == term


@pytest.mark.parametrize("n", [2, 3, 5])
def test_replay_builds_n_step_samples_within_episodes_across_the_ring_seam(n):
    rows = _episodes(np.random.default_rng(n), 45)
    replay = Replay(parse_obs_space(OBS), 1, capacity=16, seed=0)  # wrapped almost three times
    for obs, r, nxt, term in rows:
        replay.add(obs, np.zeros(1, np.float32), r, nxt, term)
    batch = replay.sample(512, n_step=n, gamma=GAMMA)
    _check(batch, rows, first=len(rows) - 16, newest=len(rows) - 1, n=n)
    # Every length from 1 to n turns up: episode ends and the newest row cut samples short.
    spans = np.round(np.log(batch["discount"].numpy()) / np.log(GAMMA)).astype(int)
    assert set(spans) == set(range(1, n + 1))


def test_one_step_samples_are_the_stored_rows_unchanged():
    rows = _episodes(np.random.default_rng(0), 20)
    replay = Replay(parse_obs_space(OBS), 1, capacity=32, seed=0)
    for obs, r, nxt, term in rows:
        replay.add(obs, np.zeros(1, np.float32), r, nxt, term)
    batch = replay.sample(64)
    assert "discount" not in batch
    for b in range(64):
        obs, r, nxt, term = next(x for x in rows if np.array_equal(x[0], batch["obs"]["state"][b].numpy()))
        assert (batch["reward"][b].item(), bool(batch["terminated"][b])) == (pytest.approx(r), term)
        assert np.array_equal(batch["next_obs"]["state"][b].numpy(), nxt)


def test_shared_replay_builds_the_same_n_step_samples_and_stops_at_the_newest_row():
    rows = _episodes(np.random.default_rng(7), 40)
    shared = SharedReplay.create(parse_obs_space(OBS), 1, capacity=16)
    try:
        for obs, r, nxt, term in rows:
            shared.add(obs, np.zeros(1, np.float32), r, nxt, term)
        batch = shared.sample(512, np.random.default_rng(0), n_step=3, gamma=GAMMA)
        # The shared ring keeps one slot for the writer: the oldest readable row is written - 15.
        _check(batch, rows, first=len(rows) - 15, newest=len(rows) - 1, n=3)
    finally:
        shared.close()


def test_n_step_bootstrap_learns_the_same_value():
    """Reward 1 per step, gamma 0.9: with 3-step samples (reward 1 + 0.9 + 0.81, bootstrap
    discounted by 0.729) a time-limit cut still bootstraps to Q -> 10."""
    assert _q_after_training(terminate=False, n_step=3) == pytest.approx(10.0, abs=1.5)


def test_bad_n_step_settings_are_refused():
    act = spaces.Box(-1.0, 1.0, (1,), np.float32)
    with pytest.raises(ValueError, match="n_step: invalid value 0"):
        SAC(OBS, act, SACConfig(n_step=0))
    pixels_only = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="n_step > 1 needs a state"):
        SAC(pixels_only, act, SACConfig(n_step=3))
