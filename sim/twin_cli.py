"""`robosac twin CONFIG --physics none`: run the emulated servo chain described by a hardware config.

Prints ``serial: <path>`` (a stable symlink to the pty; open it with the SDK at the config's baud)
and ``control: <socket>`` (for `robosac fault`), flushes, and runs until SIGINT/SIGTERM, then
stops cleanly with exit status 0. ``--physics`` accepts only ``none`` for now (each servo tracks
its goal as a rate-limited first-order system); the MuJoCo twin adds ``mujoco``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

PHYSICS_CHOICES = ("none",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "twin",
        help="run an emulated servo chain (the robot's twin) on a pseudo-terminal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="hardware config YAML (e.g. hardware_configs/claw.yaml)")
    p.add_argument("--physics", default="none", help="what moves the joints: none (default; mujoco comes later)")
    p.add_argument("--firmware", type=int, default=46, help="firmware version every servo reports (default 46; <45 has no fast sync read)")
    p.add_argument("--pace", action="store_true", help="sleep bytes*10/baud per packet so wire time is realistic")
    p.add_argument("--usb-latency-ms", type=float, default=0.0, help="model a USB adapter's latency timer (FTDI default 16; 0 = off)")
    p.add_argument("--link", default=None, help="path for the serial symlink (default: a new temp dir)")
    p.set_defaults(func=run)
    # `robosac fault` lives in its own module but is registered with the twin (one CLI entry).
    from sim import fault_cli

    fault_cli.register(subparsers)


def run(args: argparse.Namespace) -> int:
    if args.physics not in PHYSICS_CHOICES:
        print(
            f"robosac twin: --physics {args.physics!r} is not available; choose from: {', '.join(PHYSICS_CHOICES)}",
            file=sys.stderr,
        )
        return 2
    from robosac.config import ConfigError, load_config

    from sim.dxl import ServoChain

    try:
        cfg = load_config(args.config)
    except (ConfigError, OSError) as e:
        print(f"robosac twin: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    chain = ServoChain.from_config(cfg, firmware=args.firmware, pace=args.pace, usb_latency_ms=args.usb_latency_ms, link=args.link)
    try:
        path = chain.start()
        print(f"serial: {path}", flush=True)
        print(f"control: {chain.control_path}", flush=True)
        print(f"servos: {' '.join(str(i) for i in chain.ids())} at {cfg.bus.baud} bps", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        chain.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print("robosac twin: stopped", file=sys.stderr, flush=True)
    return 0
