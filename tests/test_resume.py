"""Crash-proof resume: replay chunks on disk, full checkpoints, `robosac train --resume` after kill -9."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from robosac import cli
from robosac.persist import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from robosac.runtime.replay_store import ReplayStore, ReplayStoreError
from robosac.sac.replay import Replay
from robosac.sac.spaces import parse_obs_space

ROBOSAC = [sys.executable, "-m", "robosac.cli"]


def _pixel_replay(capacity: int) -> Replay:
    import gymnasium as gym

    space = gym.spaces.Dict({
        "pixels": gym.spaces.Box(0, 255, (20, 20, 3), np.uint8),
        "state": gym.spaces.Box(-1, 1, (2,), np.float32),
    })
    return Replay(parse_obs_space(space), act_dim=1, capacity=capacity, seed=0)


def _fill(replay: Replay, store: ReplayStore, n: int, rng: np.random.Generator) -> None:
    for step in range(n):
        obs = {"pixels": rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "state": rng.standard_normal(2).astype(np.float32)}
        nxt = {"pixels": rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "state": rng.standard_normal(2).astype(np.float32)}
        slot = replay.add(obs, rng.uniform(-1, 1, 1).astype(np.float32), float(rng.standard_normal()), nxt, step % 7 == 6)
        store.append({k: v[slot] for k, v in replay.arrays.items()}, step=step, episode=step // 7, episode_end=step % 7 == 6)


def test_replay_store_round_trip_keeps_uint8_images_and_refills_a_replay(tmp_path):
    replay = _pixel_replay(64)
    store = ReplayStore.for_replay(tmp_path / "replay", replay, flush_every=10, flush_interval_s=None)
    _fill(replay, store, 25, np.random.default_rng(1))
    assert store.pending == 5 and len(store.chunk_paths()) == 2  # flushed at 10 and 20 only
    store.close()
    assert [p.name for p in store.chunk_paths()] == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]

    reader = ReplayStore.for_replay(tmp_path / "replay", replay)
    chunks = reader.load()
    assert [len(c["step"]) for c in chunks] == [10, 10, 5]
    assert chunks[0]["obs.pixels"].dtype == np.uint8 and chunks[0]["obs.pixels"].shape == (10, 3, 20, 20)
    assert np.array_equal(np.concatenate([c["step"] for c in chunks]), np.arange(25))
    assert np.array_equal(np.concatenate([c["episode_end"] for c in chunks]), np.arange(25) % 7 == 6)

    fresh = _pixel_replay(64)
    info = reader.restore(fresh)
    assert info == {"transitions": 25, "next_step": 25, "last_episode": 3, "last_episode_end": 0}
    assert len(fresh) == 25 and fresh.cursor == 25
    for key, array in replay.arrays.items():
        assert np.array_equal(fresh.arrays[key][:25], array[:25]), key

    small = _pixel_replay(8)  # a smaller ring keeps the newest transitions, FIFO
    reader.restore(small)
    assert len(small) == 8
    assert np.array_equal(np.sort(small.arrays["reward"]), np.sort(replay.arrays["reward"][17:25]))


def test_replay_store_flushes_on_time_and_prunes_what_the_ring_no_longer_holds(tmp_path):
    replay = _pixel_replay(16)
    store = ReplayStore.for_replay(tmp_path, replay, flush_every=1000, flush_interval_s=0.05, keep_last=16)
    rng = np.random.default_rng(2)
    _fill(replay, store, 3, rng)
    assert store.chunk_paths() == []
    time.sleep(0.06)
    store.append({k: v[0] for k, v in replay.arrays.items()}, step=3, episode=0, episode_end=False)
    assert len(store.chunk_paths()) == 1 and store.pending == 0  # the interval passed: flushed
    with pytest.raises(ValueError, match="expected env step 4"):
        store.append({k: v[0] for k, v in replay.arrays.items()}, step=9, episode=0, episode_end=False)

    store2 = ReplayStore.for_replay(tmp_path / "p", replay, flush_every=5, flush_interval_s=None, keep_last=12)
    for step in range(30):
        store2.append({k: v[0] for k, v in replay.arrays.items()}, step=step, episode=0, episode_end=False)
    kept = store2.load()
    steps = np.concatenate([c["step"] for c in kept])
    assert steps[0] == 15 and steps[-1] == 29 and len(steps) == 15  # >= 12 newest kept, whole chunks


@pytest.mark.parametrize("damage", ["truncate", "garble", "dtype", "empty"])
def test_a_damaged_or_foreign_chunk_is_a_clear_error_naming_the_file(tmp_path, damage):
    replay = _pixel_replay(32)
    store = ReplayStore.for_replay(tmp_path, replay, flush_every=10, flush_interval_s=None)
    _fill(replay, store, 20, np.random.default_rng(3))
    victim = tmp_path / "chunk_000001.npz"
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "garble":  # flip bytes inside the pixel data: the zip CRC catches it
        mid = len(data) // 3
        victim.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :])
    elif damage == "dtype":
        arrays = dict(np.load(victim))
        arrays["obs.pixels"] = arrays["obs.pixels"].astype(np.float32)
        np.savez(victim, **arrays)
    else:
        victim.write_bytes(b"")
    with pytest.raises(ReplayStoreError) as err:
        ReplayStore.for_replay(tmp_path, replay).load()
    assert str(victim) in str(err.value)
    if damage == "dtype":
        assert "obs.pixels" in str(err.value) and "float32" in str(err.value)
    # the undamaged first chunk alone still loads
    assert len(ReplayStore.for_replay(tmp_path, replay).read_chunk(tmp_path / "chunk_000000.npz")["step"]) == 10


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    gens = {"a": np.random.default_rng(5), "b": np.random.default_rng(6)}
    random.seed(7)
    torch.manual_seed(8)
    save_checkpoint({"agent": {}, "rng": capture_rng_state(gens)}, tmp_path / "c.pt")
    first = (random.random(), gens["a"].random(), gens["b"].integers(1 << 62), torch.rand(3))
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], gens)  # torch.load(weights_only=True)
    second = (random.random(), gens["a"].random(), gens["b"].integers(1 << 62), torch.rand(3))
    assert first[:3] == second[:3] and torch.equal(first[3], second[3])


def _metrics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _chunk_steps(replay_dir) -> dict[str, np.ndarray]:
    return {p.name: np.load(p)["step"] for p in sorted(replay_dir.glob("chunk_*.npz"))}


STEPS = 2000
TRAIN = ["train", "Pendulum-v1", "--steps", str(STEPS), "--learning-starts", "200", "--batch-size", "32", "--checkpoint-every", "500",
         "--replay-flush-every", "100", "--no-progress", "--threads", "1", "--eval-episodes", "2"]


@pytest.mark.compute  # the synchronous loop on Pendulum: no servo bus, control clock or learner watchdog
def test_kill_9_then_resume_finishes_the_run_with_every_flushed_transition(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(ROBOSAC + TRAIN + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = out / "metrics.jsonl"
            # After the second checkpoint, wait for two more replay flushes: data past the checkpoint.
            if (metrics.exists() and metrics.read_text().count('"kind": "checkpoint"') >= 2
                    and len(list((out / "replay").glob("chunk_*.npz"))) >= 12):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            raise AssertionError("no second checkpoint within 60 s")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    before = _chunk_steps(out / "replay")
    flushed = sum(len(s) for s in before.values())
    assert np.array_equal(np.concatenate(list(before.values())), np.arange(flushed))
    assert 1200 <= flushed < STEPS and flushed % 100 == 0
    chunk_bytes = {name: (out / "replay" / name).read_bytes() for name in before}
    ckpt = load_checkpoint(out / "checkpoint.pt")
    ckpt_step, ckpt_updates = ckpt["loop"]["step"], ckpt["agent"]["updates"]
    assert ckpt_step >= 1000 and ckpt_step % 500 == 0 and ckpt_step < flushed  # flushed after the checkpoint
    assert ckpt_updates == ckpt_step - 199
    old_lines = (out / "metrics.jsonl").read_text().splitlines()

    res = subprocess.run(ROBOSAC + TRAIN + ["--resume", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == STEPS and summary["resumed_from"] == flushed
    assert summary["updates"] == ckpt_updates + STEPS - flushed

    # The replay: the pre-kill chunks untouched, then the rest; every env step exactly once.
    after = _chunk_steps(out / "replay")
    assert all((out / "replay" / name).read_bytes() == data for name, data in chunk_bytes.items())
    assert np.array_equal(np.concatenate(list(after.values())), np.arange(STEPS))

    # metrics.jsonl appended: the old lines kept (a line cut by the kill dropped), then the resume.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines[: len(old_lines) - 1] == old_lines[:-1]
    records = [json.loads(line) for line in lines]
    resume_at = next(i for i, r in enumerate(records) if r["kind"] == "resume")
    assert resume_at >= len(old_lines) - 1 and records[0]["kind"] == "config"
    resume = records[resume_at]
    assert resume["step"] == flushed and resume["replay_transitions"] == flushed and resume["checkpoint_step"] == ckpt_step
    later = records[resume_at + 1 :]
    steps = [r["step"] for r in later]
    assert steps and steps == sorted(steps) and steps[0] > flushed and steps[-1] == STEPS and later[-1]["kind"] == "eval"
    trains = [r for r in later if r["kind"] == "train"]
    assert trains and all(r["updates"] == ckpt_updates + r["step"] - flushed for r in trains)
    assert [r["step"] for r in later if r["kind"] == "checkpoint"] == [s for s in range(500, STEPS, 500) if s > flushed]
    assert load_checkpoint(out / "checkpoint.pt")["loop"]["step"] == STEPS


def test_resume_refuses_a_corrupt_checkpoint_other_settings_or_nothing_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    short = ["train", "Pendulum-v1", "--steps", "250", "--learning-starts", "200", "--no-progress", "--eval-episodes", "1"]
    first = subprocess.run(ROBOSAC + short + ["--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr

    def refused(*extra: str) -> str:
        """Run the CLI in this process (each refusal comes before any training) and return its stderr."""
        capsys.readouterr()
        assert cli.main(short + list(extra)) == 2
        return capsys.readouterr().err

    err = refused("--out", str(out))
    assert "already holds a run" in err and "--resume" in err
    err = refused("--batch-size", "64", "--resume", str(out))
    assert "batch_size" in err and "checkpoint.pt" in err
    err = refused("--sac", "hidden=64,64", "--resume", str(out))
    assert "hidden" in err and "checkpoint.pt" in err
    # The entropy target alone may change on resume (lowered late in a run): it continues with it.
    capsys.readouterr()
    assert cli.main(["train", "Pendulum-v1", "--steps", "300", "--learning-starts", "200", "--no-progress", "--eval-episodes", "1",
                     "--sac", "target_entropy=-3", "--resume", str(out)]) == 0
    resumed = load_checkpoint(out / "checkpoint.pt")
    assert resumed["loop"]["step"] == 300 and resumed["agent"]["config"]["target_entropy"] == -3.0

    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    err = refused("--resume", "--out", str(out))
    assert str(ckpt) in err and "corrupt" in err

    ckpt.unlink()
    err = refused("--resume", str(out))
    assert "nothing to resume" in err and str(ckpt) in err
