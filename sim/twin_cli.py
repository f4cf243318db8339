"""`robosac twin CONFIG`: run the robot's twin: the emulated servo chain described by a hardware
config, moved by MuJoCo physics in real time, with the robot's camera served over HTTP.

Prints ``serial: <path>`` (a stable symlink to the pty; open it with the SDK at the config's baud),
``control: <socket>`` (for `robosac fault`) and, with ``--physics mujoco`` (the default),
``camera: <url>`` for each served camera (open it with cv2.VideoCapture) and ``state: <url>`` (the
simulator's ground truth as JSON). Runs until SIGINT/SIGTERM, then stops cleanly with exit status 0.
The real-time factor and physics overruns are reported on stderr every --report-s seconds and at
exit (``twin stats: {json}``).

Domain randomisation (``--physics mujoco``): on by default. One draw of
`DomainRandomization.typical()` (without its observation latency: the twin's latency is the real
serial path's, ``--usb-latency-ms``) is made at start from ``--seed`` (default 0) and printed as
``randomization: {json}`` (also under "randomization" in the state JSON); the twin is then one fixed
robot for its whole life. It cannot re-draw per episode as the sim backend does: the twin serves a
servo bus and a camera and knows nothing of episodes. ``--no-randomize`` runs the MJCF's nominal model.

``--physics none``: no simulator; each servo tracks its goal as a rate-limited first-order system.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robosac.config import RobotConfig
    from sim.mujoco_sim import MujocoSim
    from sim.randomization import DomainRandomization

PHYSICS_CHOICES = ("mujoco", "none")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "twin",
        help="run an emulated servo chain (the robot's twin) on a pseudo-terminal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="hardware config YAML (e.g. hardware_configs/claw.yaml)")
    p.add_argument("--physics", default="mujoco", help="what moves the joints: mujoco (default: the MJCF model in real time) or none (first-order joints, no camera)")
    p.add_argument("--camera", action="append", default=None, metavar="NAME", help="MJCF camera to serve (repeatable; default: the config's sim.camera)")
    p.add_argument("--camera-size", default=None, metavar="WxH", help="frame size in px (default: the config's camera width x height, else 128x128)")
    p.add_argument("--camera-fps", type=float, default=None, help="frames per second (default: the config's camera fps, else 30)")
    p.add_argument("--http-port", type=int, default=0, help="port for the camera server on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--report-s", type=float, default=5.0, help="print the real-time factor and overruns every this many seconds (0 = only at exit)")
    p.add_argument("--firmware", type=int, default=46, help="firmware version every servo reports (default 46; <45 has no fast sync read)")
    p.add_argument("--pace", action="store_true", help="sleep bytes*10/baud per packet so wire time is realistic")
    p.add_argument("--usb-latency-ms", type=float, default=0.0, help="model a USB adapter's latency timer (FTDI default 16; 0 = off)")
    p.add_argument("--link", default=None, help="path for the serial symlink (default: a new temp dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of the domain randomisation drawn at start (default 0)")
    p.add_argument("--no-randomize", dest="randomize", action="store_false",
                   help="run the MJCF's nominal model (default: one draw of DomainRandomization.typical())")
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
    if args.physics == "mujoco":
        return _run_mujoco(args, cfg)
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    chain = ServoChain.from_config(cfg, firmware=args.firmware, pace=args.pace, usb_latency_ms=args.usb_latency_ms, link=args.link)
    try:
        scheduling = _servo_priority()
        path = chain.start()
        print(f"serial: {path}", flush=True)
        print(f"scheduling: {scheduling}", flush=True)
        print(f"control: {chain.control_path}", flush=True)
        print(f"servos: {' '.join(str(i) for i in chain.ids())} at {cfg.bus.baud} bps", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        chain.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"twin stats: {json.dumps({'servo_limit_violations': chain.stats()['limit_violations']})}", file=sys.stderr, flush=True)
    print("robosac twin: stopped", file=sys.stderr, flush=True)
    return 0


# Real servos answer on their own processors; the twin shares the host's, so its serial emulator
# and physics clock run under SCHED_FIFO (where permitted) so that a learner or Ray's processes
# cannot delay a status packet: measured without it (2 cores, 4 Ray robots, each with its twin,
# and a learner), every robot stopped in warm-up, its servos silent for 5 reads in a row. Below a
# control loop's 49-50, so the twin never delays the loop it stands in for the hardware of (at
# 60: p99 jitter 3.2 ms and 19 overruns with 4 robots).
SERVO_PRIORITY = 40


def _servo_priority() -> str:
    """SCHED_FIFO for the calling thread (the twin's main thread, which only waits for a signal)
    and the threads it starts after this call (the serial emulator and the physics clock; the
    camera renderers and the HTTP server, started before, stay normal threads)."""
    from robosac.runtime.collector import try_realtime

    return try_realtime(SERVO_PRIORITY)


def _run_mujoco(args: argparse.Namespace, cfg) -> int:
    """The MuJoCo twin: physics thread + servo chain bound to it + camera streamer(s) + HTTP."""
    import os

    # Headless rendering; Mesa's software rasteriser on one thread, so rendering a camera never
    # takes every core from the physics clock and the serial emulator (set before mujoco loads).
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "1")
    # Hand the GIL over every 0.5 ms (default 5 ms): the emulator thread must answer a status
    # packet well inside the SDK's timeout while the physics and camera threads are busy.
    sys.setswitchinterval(0.0005)
    import time

    from sim.camera_server import CameraStreamer, MjpegServer
    from sim.dxl import ServoChain
    from sim.realtime import RealtimeTwin

    try:
        sim = make_sim(cfg, seed=args.seed, randomize=args.randomize)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"robosac twin: {e}", file=sys.stderr)
        return 2
    cams = args.camera or ([cfg.sim.camera] if cfg.sim and cfg.sim.camera else [])
    if args.camera_size:
        try:
            w, h = (int(x) for x in args.camera_size.lower().split("x"))
        except ValueError:
            print(f"robosac twin: --camera-size {args.camera_size!r}: expected WxH, e.g. 128x128", file=sys.stderr)
            return 2
    else:
        w, h = (cfg.camera.width, cfg.camera.height) if cfg.camera else (128, 128)
    fps = args.camera_fps or (cfg.camera.fps if cfg.camera else 30.0)
    for c in cams:
        try:
            sim.model.camera(c)
        except KeyError:
            names = [sim.model.camera(i).name for i in range(sim.model.ncam)]
            print(f"robosac twin: camera {c!r} is not in {sim.model_path}; cameras: {', '.join(names)}", file=sys.stderr)
            return 2

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    twin = RealtimeTwin(sim)
    chain = ServoChain.from_config(
        cfg, joints=twin.joint_models(), firmware=args.firmware, pace=args.pace, usb_latency_ms=args.usb_latency_ms, link=args.link
    )
    drawn = sim.sample.as_dict() if args.randomize else None
    server = MjpegServer(port=args.http_port, state=lambda: {**twin.ground_truth(), "randomization": drawn,
                                                             "cameras": {s.camera: s.stats().as_dict() for s in streamers},
                                                             "servo_limit_violations": chain.stats()["limit_violations"]})
    streamers = [CameraStreamer(sim, twin.lock, c, w, h, fps, server.add_stream(c)) for c in cams]
    twin.scene_observers += [s.publish_scene for s in streamers]
    started: list = []
    try:
        # Renderers first (GL start-up takes a while), then the clock, so start-up is no overrun.
        for st in streamers:
            st.start()
            started.append(st)
        server.start()
        scheduling = _servo_priority()
        path = chain.start()
        twin.start()
        print(f"serial: {path}", flush=True)
        print(f"scheduling: {scheduling}", flush=True)
        print(f"control: {chain.control_path}", flush=True)
        print(f"servos: {' '.join(str(i) for i in chain.ids())} at {cfg.bus.baud} bps", flush=True)
        print(f"randomization: {json.dumps(drawn)}", flush=True)
        for c in cams:
            print(f"camera: {server.url(c)}", flush=True)
        print(f"state: {server.state_url()}", flush=True)
        next_report = time.monotonic() + args.report_s if args.report_s > 0 else float("inf")
        while not stop.wait(0.2):
            if time.monotonic() >= next_report:
                next_report += args.report_s
                print(_report(twin.stats(window=True), streamers), file=sys.stderr, flush=True)
        # Figures as of the stop request: tearing down is not the physics clock's fault.
        final_clock = twin.stats()
        final_cams = {s.camera: s.stats().as_dict() for s in streamers}
        final_violations = chain.stats()["limit_violations"]
    finally:
        chain.stop()
        for st in started:
            st.stop()
        server.stop()
        twin.stop()
        for s, h in old.items():
            signal.signal(s, h)
    # Goals outside the config's limits that reached a servo: the host's safety monitor should
    # make this {} on every run (the twin audits it independently of the host).
    final = {"clock": final_clock.as_dict(), "cameras": final_cams, "servo_limit_violations": final_violations}
    print(_report(final_clock, streamers), file=sys.stderr)
    print(f"twin stats: {json.dumps(final)}", file=sys.stderr, flush=True)
    sim.close()
    print("robosac twin: stopped", file=sys.stderr, flush=True)
    return 0


def twin_randomization() -> "DomainRandomization":
    """What the twin draws by default: `DomainRandomization.typical()` without observation latency
    (the twin's servos answer with the state now; its latency is the emulated serial path's)."""
    from dataclasses import replace

    from sim.randomization import DomainRandomization

    return replace(DomainRandomization.typical(), observation_latency_s=(0.0, 0.0))


def make_sim(cfg: "RobotConfig", *, seed: int | None, randomize: bool) -> "MujocoSim":
    """The twin's simulation: `twin_randomization()` drawn once from `seed` (randomize=False: the
    nominal model). What was drawn is `sim.sample`."""
    from sim.mujoco_sim import MujocoSim

    # Servos power up with torque off: the robot starts limp, as on the bench.
    return MujocoSim(cfg, torque=False, seed=seed, randomization=twin_randomization() if randomize else None)


def _report(st, streamers) -> str:
    cams = "; ".join(f"camera {s.camera} {s.stats().fps:.1f} fps, {s.stats().late} late" for s in streamers)
    return (
        f"twin: real-time factor {st.rtf:.4f} (last window {st.rtf_recent:.4f}); sim {st.sim_time_s:.1f} s / wall "
        f"{st.wall_time_s:.1f} s; overruns {st.overruns}, dropped {st.dropped_s:.3f} s, worst lag {1000 * st.max_lag_s:.1f} ms"
        + (f"; {cams}" if cams else "")
    )
