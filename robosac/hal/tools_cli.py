"""Operator tools for a servo bus: `robosac scan`, `set-id`, `set-baud`, `read-item`, `write-item`,
`jog`, `latency`, `ftdi-latency`.

Each command opens the port through robosac.hal (so the same SDK path as the robot runs) and turns
bus faults into one clear line on stderr and a nonzero exit code:
  2  port missing / permission denied / unusable
  1  no servo found, ID conflict, servo error, bad request
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from robosac.hal.bus import BusSettings, ServoBus, ServoInfo
from robosac.hal.control_table import BAUD_CODES, BAUD_TO_CODE, MODELS, model_by_name
from robosac.hal.faults import BusError, PortError
from robosac.hal.port import latency_timer_path

# Bauds `scan` tries when none is given, most common first (factory default 57600, then robosac's 1M).
SCAN_BAUDS: tuple[int, ...] = (57_600, 1_000_000, 115_200, 2_000_000, 3_000_000, 4_000_000, 9_600)

UDEV_RULE = (
    "# robosac: FTDI USB-serial adapters (U2D2 = FT232H) get a 1 ms latency timer on plug-in.\n"
    'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVERS=="ftdi_sio", ATTR{latency_timer}="1"\n'
)


class ToolError(Exception):
    """A request the tool refuses (exit code 1)."""


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except PortError as e:
            print(f"robosac {args.command}: error: {e}", file=sys.stderr)
            return 2
        except (BusError, ToolError, KeyError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"robosac {args.command}: error: {msg}", file=sys.stderr)
            return 1

    return wrapped


def _port_args(p: argparse.ArgumentParser, baud_default: int | None = 1_000_000) -> None:
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    p.add_argument(
        "--baud", type=int, default=baud_default,
        help=f"bits/s (default {baud_default})" if baud_default else "bits/s (default: try common rates)",
    )


# Tools are not real-time: size reply timeouts for an adapter still at the FTDI default latency
# timer (16 ms) so they work before `robosac ftdi-latency` has been run.
TOOL_SETTINGS = BusSettings(latency_ms=16.0)


def _bus(args: argparse.Namespace, baud: int | None = None) -> ServoBus:
    return ServoBus(args.port, baud or args.baud, settings=TOOL_SETTINGS).open()


def _need(bus: ServoBus, sid: int) -> ServoInfo:
    info = bus.ping(sid, tries=2)
    if info is None:
        raise ToolError(
            f"no servo answers at ID {sid} on {bus.port_path} @ {bus.baud} bps "
            "(check power and cable; run `robosac scan` to find IDs and baud)"
        )
    return info


# ---- scan ---------------------------------------------------------------------------------------


@_run
def cmd_scan(args: argparse.Namespace) -> int:
    bauds = [args.baud] if args.baud else list(SCAN_BAUDS)
    found_any = False
    rows: list[dict] = []
    for baud in bauds:
        bus = ServoBus(args.port, baud, settings=TOOL_SETTINGS).open()
        try:
            found, rc = bus.broadcast_scan()
        finally:
            bus.close()
        for info in found.values():
            rows.append({"baud": baud, "id": info.id, "model": info.model, "model_number": info.model_number,
                         "firmware": info.firmware})
        if found:
            found_any = True
            if rc != 0:
                print(f"warning: garbled replies at {baud} bps: two servos may share an ID "
                      "(connect them one at a time and use `robosac set-id`)", file=sys.stderr)
            if not args.all_bauds:
                break
    if not found_any:
        raise ToolError(f"no servos found on {args.port} at {', '.join(map(str, bauds))} bps "
                        "(check servo power, the cable and the adapter's TTL/RS485 setting)")
    if args.expect is not None and len(rows) < args.expect:
        # Two servos with one ID answer together: their replies collide or coincide, so fewer
        # IDs than servos is the tell (as is a garbled reply).
        print(f"warning: expected {args.expect} servos, found {len(rows)}: the missing ones are unpowered, "
              "at another baud (--all-bauds), or share an ID with another servo (connect one at a time "
              "and use `robosac set-id`)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'baud':>8}  {'id':>3}  {'model':<12} {'firmware':>8}")
        for r in rows:
            print(f"{r['baud']:>8}  {r['id']:>3}  {r['model']:<12} {r['firmware']:>8}")
    return 0


# ---- set-id / set-baud ----------------------------------------------------------------------------


@_run
def cmd_set_id(args: argparse.Namespace) -> int:
    if not 0 <= args.new_id <= 252:
        raise ToolError(f"new ID {args.new_id} out of range 0..252")
    bus = _bus(args)
    try:
        _need(bus, args.id)
        if args.new_id != args.id and bus.ping(args.new_id, tries=2) is not None:
            raise ToolError(f"ID conflict: ID {args.new_id} is already used on this bus; pick another "
                            "or disconnect that servo")
        bus.write_item(args.id, "torque_enable", 0)  # ID is EEPROM: torque must be off
        bus.write_item(args.id, "id", args.new_id)
        info = _need(bus, args.new_id)
        print(f"servo {args.id} is now ID {args.new_id} ({info.model}, firmware {info.firmware})")
    finally:
        bus.close()
    return 0


@_run
def cmd_set_baud(args: argparse.Namespace) -> int:
    if args.new_baud not in BAUD_TO_CODE:
        raise ToolError(f"baud {args.new_baud} not available; choose one of {sorted(BAUD_TO_CODE)}")
    bus = _bus(args)
    try:
        _need(bus, args.id)
        bus.write_item(args.id, "torque_enable", 0)
        bus.write_item(args.id, "baud_rate", BAUD_TO_CODE[args.new_baud])
    finally:
        bus.close()
    time.sleep(0.05)
    bus = _bus(args, baud=args.new_baud)
    try:
        info = bus.ping(args.id, tries=3)
    finally:
        bus.close()
    if info is None:
        raise ToolError(f"servo {args.id} does not answer at {args.new_baud} bps after the change")
    print(f"servo {args.id} now talks at {args.new_baud} bps")
    return 0


# ---- read-item / write-item -------------------------------------------------------------------------


def _item_help() -> str:
    names = sorted(n for n in MODELS["XM430-W350"].items if not n.startswith("indirect_")) + ["present_load (XL430)"]
    return "control-table item name, e.g. present_position; one of: " + ", ".join(names)


@_run
def cmd_read(args: argparse.Namespace) -> int:
    bus = _bus(args)
    try:
        _need(bus, args.id)
        value = bus.read_item(args.id, args.item)
    finally:
        bus.close()
    print(value)
    return 0


@_run
def cmd_write(args: argparse.Namespace) -> int:
    bus = _bus(args)
    try:
        info = _need(bus, args.id)
        item = model_by_name(info.model).item(args.item)
        if item.eeprom and bus.read_item(args.id, "torque_enable"):
            raise ToolError(f"{args.item} is in EEPROM and servo {args.id} has torque on; "
                            "write torque_enable 0 first")
        bus.write_item(args.id, args.item, args.value)
        back = bus.read_item(args.id, args.item)
    finally:
        bus.close()
    print(f"{args.item} = {back}")
    return 0


# ---- jog ----------------------------------------------------------------------------------------------


@_run
def cmd_jog(args: argparse.Namespace) -> int:
    from robosac.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        raise ToolError(str(e)) from None
    names = [s.name for s in cfg.servos]
    if args.joint not in names:
        raise ToolError(f"no joint {args.joint!r} in {args.config}; joints: {', '.join(names)}")
    sc = cfg.servo(args.joint)
    full = ServoBus.from_config(cfg, port=args.port)
    joint = [j for j in full.joints if j.name == args.joint]
    bus = ServoBus(full.port_path, full.baud, joint, full.settings).open()
    try:
        bus.configure()
        q0 = float(bus.read_state().position[0])
        target = args.to if args.to is not None else q0 + args.by
        lo, hi = sc.limits.min_rad, sc.limits.max_rad
        if not lo <= target <= hi:
            raise ToolError(f"target {target:.4f} rad outside {args.joint}'s limits [{lo}, {hi}] rad")
        speed = min(args.speed, sc.limits.max_velocity_rad_s)
        bus.enable_torque()
        dt = 0.02
        steps = max(1, int(math.ceil(abs(target - q0) / (speed * dt))))
        for k in range(1, steps + 1):
            t0 = time.monotonic()
            bus.cycle([q0 + (target - q0) * k / steps])
            time.sleep(max(0.0, dt - (time.monotonic() - t0)))
        deadline = time.monotonic() + args.settle
        state = bus.read_state()
        while time.monotonic() < deadline and abs(state.position[0] - target) > 0.02:
            time.sleep(dt)
            state = bus.cycle([target])
        print(json.dumps({"joint": args.joint, "id": sc.id, "from_rad": round(q0, 4), "target_rad": round(target, 4),
                          "reached_rad": round(float(state.position[0]), 4)}))
        if args.release:
            bus.disable_torque()
    finally:
        bus.close(torque_off=args.release)
    return 0


# ---- latency probe ----------------------------------------------------------------------------------------


def _stats_ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]  # noqa: E731
    return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1e3, 4), "p99_ms": round(p(0.99) * 1e3, 4),
            "min_ms": round(xs[0] * 1e3, 4), "max_ms": round(xs[-1] * 1e3, 4)}


@_run
def cmd_latency(args: argparse.Namespace) -> int:
    bus = _bus(args)
    try:
        ids = args.ids or sorted(bus.broadcast_scan()[0])
        if not ids:
            raise ToolError(f"no servos found on {args.port} at {args.baud} bps")
        out: dict = {"port": args.port, "baud": args.baud, "ids": ids}
        from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead

        ph, port = bus.packet_handler, bus.port_handler
        ping_t: list[float] = []
        misses = 0
        for k in range(args.n):
            t0 = time.perf_counter()
            _, rc, _ = ph.ping(port, ids[k % len(ids)])
            if rc != COMM_SUCCESS:
                misses += 1
                continue
            ping_t.append(time.perf_counter() - t0)
        # Ping: 10-byte instruction + 14-byte status packet.
        out["ping_rtt"] = _stats_ms(ping_t) if ping_t else None
        out["ping_misses"] = misses
        # Group read of present current..position (10 bytes), with no set-up on the servos.
        g = GroupSyncRead(port, ph, 126, 10)
        for sid in ids:
            g.addParam(sid)
        rt: list[float] = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            rc = g.txRxPacket()
            if rc == COMM_SUCCESS:
                rt.append(time.perf_counter() - t0)
        out["sync_read_10B_rtt"] = _stats_ms(rt) if rt else None
    finally:
        bus.close()
    print(json.dumps(out))
    return 0


# ---- FTDI latency timer ---------------------------------------------------------------------------------------


def _latency_file(port: str, sysfs_root: str) -> Path:
    if not os.path.exists(port):
        from robosac.hal.faults import PortNotFoundError

        raise PortNotFoundError(port)
    return Path(latency_timer_path(port, sysfs_root))


@_run
def cmd_ftdi_latency(args: argparse.Namespace) -> int:
    rule_path = Path(args.udev_out)
    rule_path.write_text(UDEV_RULE)
    print(f"udev rule written to {rule_path}; install it with:\n"
          f"  sudo cp {rule_path} /etc/udev/rules.d/ && sudo udevadm control --reload-rules && sudo udevadm trigger")
    f = _latency_file(args.port, args.sysfs_root)
    if not f.exists():
        raise ToolError(f"{args.port} is not an FTDI usb-serial device ({f} missing); "
                        "nothing to set (other adapters have no latency timer)")
    before = int(f.read_text().strip())
    if before == args.value:
        print(f"{f}: already {before} ms")
        return 0
    try:
        f.write_text(f"{args.value}\n")
    except PermissionError:
        from robosac.hal.faults import PortPermissionError

        raise PortPermissionError(
            str(f), f"writing the latency timer needs root: `echo {args.value} | sudo tee {f}`, "
            "or install the udev rule above"
        ) from None
    print(f"{f}: {before} ms -> {int(f.read_text().strip())} ms")
    return 0


# ---- registration ---------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="list servos (ID, model, firmware) on a port",
                       description="Broadcast-ping a port and list every servo's ID, model and firmware. "
                       "Without --baud, tries " + ", ".join(map(str, SCAN_BAUDS)) + " bps and stops at the first "
                       "rate with servos (use --all-bauds to try all).")
    _port_args(p, baud_default=None)
    p.add_argument("--all-bauds", action="store_true", help="keep scanning after the first baud with servos")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--expect", type=int, default=None, metavar="N",
                   help="number of servos on the bus; fewer found is reported (ID conflicts show up this way)")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("set-id", help="change one servo's ID (refuses an ID already in use)")
    _port_args(p)
    p.add_argument("--id", type=int, required=True, help="current ID")
    p.add_argument("--new-id", type=int, required=True, help="new ID (0..252)")
    p.set_defaults(func=cmd_set_id)

    p = sub.add_parser("set-baud", help="change one servo's baud rate")
    _port_args(p)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--new-baud", type=int, required=True, help=f"one of {sorted(BAUD_CODES.values())}")
    p.set_defaults(func=cmd_set_baud)

    p = sub.add_parser("read-item", help="read a control-table item by name (raw units)")
    _port_args(p)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("item", help=_item_help())
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("write-item", help="write a control-table item by name (raw units)")
    _port_args(p)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("item", help=_item_help())
    p.add_argument("value", type=int)
    p.set_defaults(func=cmd_write)

    p = sub.add_parser("jog", help="move one joint within its configured limits",
                       description="Configure one joint from a hardware config, then ramp it to a target at "
                       "a bounded speed. Targets outside the config's limits are refused.")
    p.add_argument("config", help="hardware config YAML (hardware_configs/...)")
    p.add_argument("--port", default=None, help="override the config's bus.port")
    p.add_argument("--joint", required=True, help="servo name from the config")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", type=float, help="target joint angle (rad)")
    g.add_argument("--by", type=float, help="relative move (rad)")
    p.add_argument("--speed", type=float, default=0.5, help="ramp speed (rad/s, capped at the joint's limit)")
    p.add_argument("--settle", type=float, default=1.0, help="time to wait for the joint to arrive (s)")
    p.add_argument("--release", action="store_true", help="torque off at the end (default: hold)")
    p.set_defaults(func=cmd_jog)

    p = sub.add_parser("latency", help="bus round-trip time statistics (JSON)")
    _port_args(p)
    p.add_argument("--ids", type=int, nargs="*", help="servo IDs (default: broadcast scan)")
    p.add_argument("-n", type=int, default=200, help="round trips per figure")
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("ftdi-latency", help="set an FTDI adapter's latency timer (default 1 ms) and write the udev rule")
    p.add_argument("--port", required=True, help="serial device of the adapter, e.g. /dev/ttyUSB0")
    p.add_argument("--value", type=int, default=1, choices=range(1, 256), metavar="MS", help="latency timer in ms (1..255)")
    p.add_argument("--udev-out", default="99-robosac-ftdi-latency.rules", help="where to write the udev rule")
    p.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ftdi_latency)
