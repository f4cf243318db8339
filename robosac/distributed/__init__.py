"""Distributed training on Ray: robots on their own computers, one learner on the GPU workstation.

    robot computer (node advertising robot:<name>)        learner node (GPU if the cluster has one)
      CollectorActor: the runtime's Collector thread         LearnerActor: SAC updates from every
      (control loop, safety monitor, resets) + Outbox         robot's transitions, per-robot replay
      (bounded, drop-oldest) + a sender thread ------------>  chunks on disk, atomic checkpoints,
      + a weight-puller thread <---------------------------  versioned weights (latest_weights)

The control loop never calls Ray: it hands each transition to the Outbox and acts with the newest
weights the puller thread has fetched. See robosac/distributed/run.py for the driver (supervision,
restarts, the end of a run) and README "Distributed training on Ray" for the cluster set-up.

Ray is an optional dependency (``pip install 'robosac[distributed]'``); nothing here imports it at
module import time, so ``robosac --help`` and the single-process runtime work without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DistributedError", "RAY_REQUIREMENT", "missing_ray_message", "require_ray"]

RAY_REQUIREMENT = "ray>=2.9"
_MIN_RAY = (2, 9)


class DistributedError(RuntimeError):
    """Distributed mode cannot start or continue (no Ray, a bad cluster option, a robot fault)."""


def missing_ray_message(detail: str = "") -> str:
    """What to tell a user whose Python lacks Ray (or has one too old): the install command."""
    why = f" ({detail})" if detail else ""
    return (f"--cluster needs Ray ({RAY_REQUIREMENT}), which is not installed in this Python{why}; "
            "install it with: pip install 'robosac[distributed]'")


def require_ray() -> Any:
    """Import and return the ``ray`` module; DistributedError with the install command if missing or < 2.9."""
    try:
        import ray
    except ImportError as exc:
        raise DistributedError(missing_ray_message(str(exc))) from None
    try:
        version = tuple(int(x) for x in ray.__version__.split(".")[:2])
    except ValueError:  # a development build: trust it
        return ray
    if version < _MIN_RAY:
        raise DistributedError(missing_ray_message(f"found ray {ray.__version__}"))
    return ray
