"""`robosac train` and `robosac bench learner` as a user runs them, and a small Pendulum budget."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import pytest

from robosac.persist import load_checkpoint
from robosac.sac.train import TrainConfig, train

pytestmark = pytest.mark.compute  # tools/run_tests.py runs these at nice 19 beside the timing-sensitive tests

ROBOSAC = [sys.executable, "-m", "robosac.cli"]


def test_train_cli_writes_metrics_checkpoint_and_a_json_summary(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        ROBOSAC + ["train", "Pendulum-v1", "--steps", "400", "--learning-starts", "200", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 400 and summary["seed"] == 3
    assert summary["eval_episodes"] >= 10
    assert -2000 < summary["eval_return_mean"] <= 0  # Pendulum returns are never positive
    assert summary["updates_per_s"] > 0 and summary["updates"] == 201
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds[0] == "config" and kinds.count("episode") == 2 and kinds[-1] == "eval"
    assert load_checkpoint(out / "checkpoint.pt")["agent"]["updates"] == 201
    assert "step" in proc.stderr  # the progress bar


def test_train_cli_rejects_an_unknown_target(tmp_path):
    proc = subprocess.run(ROBOSAC + ["train", "NoSuchEnv-v9", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown target 'NoSuchEnv-v9'" in proc.stderr


def test_train_cli_rejects_an_env_sac_cannot_handle(tmp_path):
    proc = subprocess.run(ROBOSAC + ["train", "CartPole-v1", "--steps", "10", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "continuous 1-D Box" in proc.stderr


def test_bench_learner_reports_both_figures_and_its_settings():
    proc = subprocess.run(ROBOSAC + ["bench", "learner", "--seconds", "0.3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["state_updates_per_s"] > 0 and result["pixel_updates_per_s"] > 0
    assert result["settings"]["state"]["batch"] == 256 and result["settings"]["pixels"]["batch"] == 128
    assert result["settings"]["pixels"]["act"] == 9


def test_pendulum_small_budget_learns(tmp_path):
    """5 000 steps, batch 128, seed 0: a random or untrained policy scores about -1 200; learned swing-up > -400.

    Float results differ between CPUs and Pendulum at this budget is near the edge of convergence,
    so the budget was chosen on seeds 0/1/2 (AMD EPYC, 2 cores, 2026-12-01): -147 / -172 / -331,
    33 s each. (Batch 256 needs 6 000 steps, 79 s; a (64, 64) net had not learned by 4 000.)
    """
    cfg = TrainConfig(steps=5_000, seed=0, learning_starts=500, batch_size=128, eval_episodes=10)
    summary = train(lambda: gym.make("Pendulum-v1"), cfg, tmp_path, progress=False)
    assert summary["eval_return_mean"] >= -400, summary
