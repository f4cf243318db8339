"""Plot benchmarks/results/claw_state_100k.json (training-episode returns, moving mean of 25
episodes, one line per seed) to claw_state_100k.png.

    .venv/bin/python benchmarks/plot_claw_100k.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    d = json.loads((RESULTS / "claw_state_100k.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 4))
    k = 25
    for seed, run in d["runs"].items():
        c = np.array(run["curve"])
        ax.plot(c[k - 1:, 0], np.convolve(c[:, 1], np.ones(k) / k, mode="valid"),
                label=f"seed {seed}: final success {run['eval_success_rate']:.2f}")
    ax.axvline(30_000, color="grey", ls="--", lw=1)
    ax.text(31_000, ax.get_ylim()[0] + 100, "30 000-step budget", fontsize=8)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"training-episode return (mean of {k})")
    ax.set_title("ClawValveTurn fixed, state, randomisation on, robosac --lr 1e-3")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "claw_state_100k.png", dpi=90)


if __name__ == "__main__":
    main()
