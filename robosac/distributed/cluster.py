"""`--cluster auto|local|ADDRESS`: which Ray cluster a run uses, with robosac's bind rules.

- ``local``: start a Ray instance in this process, advertising ``--bind`` (default 127.0.0.1, so no
  other computer can join it), no dashboard, and one ``robot:<name>`` resource per robot: the
  one-computer set-up (twins, or robots on this computer's USB ports).
- ``auto``: join the cluster already running on this computer (``ray start --head`` or
  ``ray start --address``; RAY_ADDRESS if set).
- ``HOST:PORT`` or ``ray://HOST:PORT``: join the cluster whose head is there.

Rules: a local head is started on a loopback address unless asked otherwise; any other ``--bind``
(0.0.0.0 included, which would advertise every interface) needs ``--allow-public-bind``. The
wildcard address is never a cluster to join. A process already connected to Ray (a notebook, a test)
keeps its connection.

How ``local`` stays on loopback: on Linux, Ray (2.60) replaces a node IP of 127.0.0.1 by the
computer's network address and then has its gRPC servers listen on every interface (measured with
``ss -ltn``). Ray's single-computer mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on
macOS and Windows) keeps the node IP 127.0.0.1 and makes every Ray server listen on 127.0.0.1
only; ``connect`` turns it on for a loopback head, and checks the result: if Ray still advertises
another address it shuts down and raises instead of running exposed. Ray >= 2.59 also turns token
authentication on for a head started by ``ray.init`` (older Ray: set ``RAY_AUTH_MODE=token``; it
must be in the environment before Ray is imported, so robosac does not set it itself).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from robosac.distributed import DistributedError, require_ray

__all__ = ["ClusterSpec", "parse_cluster", "connect", "CLUSTER_HELP"]

CLUSTER_HELP = "auto, local, HOST:PORT or ray://HOST:PORT"
LOOPBACK = "127.0.0.1"
NAMESPACE = "robosac"  # Ray namespace of every robosac actor, so a robot computer can find the learner by name


@dataclass(frozen=True)
class ClusterSpec:
    """A validated --cluster choice. mode: "local" | "auto" | "address"."""

    mode: str
    address: str | None = None  # for mode "address"
    bind: str = LOOPBACK  # mode "local": the node IP the head advertises ("0.0.0.0": Ray's default pick)


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def parse_cluster(value: str, *, bind: str = LOOPBACK, allow_public_bind: bool = False) -> ClusterSpec:
    """Validate ``--cluster`` / ``--bind`` / ``--allow-public-bind``; DistributedError says what is wrong."""
    value = (value or "").strip()
    if value == "local":
        try:
            ip = ipaddress.ip_address(bind)
        except ValueError:
            raise DistributedError(f"--bind: invalid value {bind!r}; allowed: an IP address of this computer "
                                   f"(default {LOOPBACK})") from None
        if not ip.is_loopback and not allow_public_bind:
            where = "every network interface" if ip.is_unspecified else f"the network at {bind}"
            raise DistributedError(
                f"--bind {bind}: refusing to start a Ray head reachable from {where} without --allow-public-bind. "
                "Anyone who can reach it can run code on this computer: only on a trusted network, "
                "with Ray token authentication on (README: Distributed training on Ray)")
        return ClusterSpec("local", None, str(ip))
    if bind != LOOPBACK:
        raise DistributedError(f"--bind applies to --cluster local only (a head started by this command), not --cluster {value}")
    if value == "auto":
        return ClusterSpec("auto")
    rest = value[len("ray://"):] if value.startswith("ray://") else value
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--cluster: invalid value {value!r}; allowed: {CLUSTER_HELP}")
    if _is_wildcard(host):
        raise DistributedError(
            f"--cluster {value}: {host} is the wildcard address, not a cluster to join. To start a head "
            "reachable from the network (trusted networks only) use --cluster local --bind 0.0.0.0 "
            "--allow-public-bind, or start it with `ray start --head` and pass its address")
    return ClusterSpec("address", value)


def connect(spec: ClusterSpec, *, num_cpus: int | None = None, resources: Mapping[str, float] | None = None,
            num_gpus: int | None = None) -> dict[str, Any]:
    """Connect this process to Ray as ``spec`` says; returns {"mode", "gcs_address", "node_ip"}.

    resources / num_cpus / num_gpus only shape a head started here (mode "local"): robots joining an
    existing cluster advertise their own ``robot:<name>`` resource with ``ray start --resources``."""
    loopback = spec.mode == "local" and ipaddress.ip_address(spec.bind).is_loopback
    ray = require_ray()
    if ray.is_initialized():
        mode = "existing"
    else:
        mode = spec.mode
        if loopback:
            _single_computer_mode()
        try:
            if spec.mode == "local":
                kwargs: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": dict(resources or {}),
                                          "include_dashboard": False, "namespace": NAMESPACE}
                if not _is_wildcard(spec.bind):
                    kwargs["_node_ip_address"] = spec.bind
                ray.init(**kwargs)
            else:
                ray.init(address="auto" if spec.mode == "auto" else spec.address, namespace=NAMESPACE)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = (" (start one with `ray start --head --node-ip-address 127.0.0.1`, or use --cluster local)"
                    if spec.mode == "auto" else "")
            raise DistributedError(f"--cluster {spec.address or spec.mode}: cannot connect to Ray{hint}: {exc}") from exc
    ctx = ray.get_runtime_context()
    node_ip = ray.util.get_node_ip_address()
    if loopback and mode == "local" and not ipaddress.ip_address(node_ip).is_loopback:
        ray.shutdown()
        raise DistributedError(f"--cluster local: this Ray ({ray.__version__}) advertises {node_ip}, not loopback; "
                               f"refusing to run reachable from the network. Pass --bind {node_ip} --allow-public-bind "
                               "to accept that (trusted networks only)")
    return {"mode": mode, "gcs_address": ctx.gcs_address, "node_ip": node_ip}


def _single_computer_mode() -> None:
    """Ray's loopback-only mode, for this process and the Ray processes it starts (see the module doc)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set: same effect
