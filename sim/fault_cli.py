"""`robosac fault`: inject faults into a running `robosac twin` from the command line.

The twin prints ``serial: PATH`` and ``control: SOCKET``; pass either with --port (the socket is
``control.sock`` next to the serial link) or --control. Examples::

    robosac fault --port /tmp/robosac-twin-x/serial drop-replies 3 --count 2
    robosac fault --port ... corrupt-crc 3
    robosac fault --port ... delay-replies 3 --seconds 0.2 --count 1
    robosac fault --port ... hw-error 3 overload          # or a number: 0x20; several: overload,overheating
    robosac fault --port ... silence 3 / unsilence 3
    robosac fault --port ... jam 2 --seconds 1.0                # joint 2 held where it is for 1 s
    robosac fault --port ... jam 2 / unjam 2                    # held until unjam (or clear)
    robosac fault --port ... unplug / replug / clear / status

jam: the servo keeps answering but its joint does not move (a finger caught on something); Present
Position shows it standing still, and with torque on the servo pushes against the jam (in the MuJoCo
twin its current rises toward stall / Current Limit). It ends after --seconds (0 or none: until
`unjam ID` or `clear`). `status` lists jammed servos under "jammed" ({id: seconds left or null}).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fault",
        help="inject a fault into a running twin's servo chain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the twin's serial path (as printed by `robosac twin`)")
    where.add_argument("--control", help="the twin's control socket path")
    sub = p.add_subparsers(dest="fault", required=True, metavar="FAULT")
    for name, helptext in (
        ("drop-replies", "the servo executes but its next replies are lost"),
        ("corrupt-crc", "the servo's next replies fail the CRC check"),
    ):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("id", type=int)
        q.add_argument("--count", type=int, default=1)
    q = sub.add_parser("delay-replies", help="the servo's next replies come late")
    q.add_argument("id", type=int)
    q.add_argument("--seconds", type=float, required=True)
    q.add_argument("--count", type=int, default=1)
    q = sub.add_parser("hw-error", help="raise hardware error bits (Shutdown bits turn torque off)")
    q.add_argument("id", type=int)
    q.add_argument("bits", help="names (input_voltage, overheating, encoder, electrical_shock, overload), comma-separated, or a number")
    q.add_argument("--persistent", action="store_true", help="raise it again after every reboot (a servo that cannot recover)")
    for name, helptext in (("silence", "the servo stops hearing and answering"), ("unsilence", "undo silence")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("id", type=int)
    q = sub.add_parser("jam", help="hold the servo's joint where it is (it ignores Goal Position; the servo still answers)")
    q.add_argument("id", type=int)
    q.add_argument("--seconds", type=float, default=None, help="the jam ends by itself after this long (default / 0: until unjam or clear)")
    q = sub.add_parser("unjam", help="free a jammed joint")
    q.add_argument("id", type=int)
    for name, helptext in (
        ("unplug", "close the pty: the port vanishes"),
        ("replug", "open a new pty behind the same port path"),
        ("clear", "cancel pending packet faults, unsilence and unjam all"),
        ("status", "print byte/packet counters and fault counts as JSON"),
    ):
        sub.add_parser(name, help=helptext)
    p.set_defaults(func=run)


def _message(args: argparse.Namespace) -> dict:
    f = args.fault
    if f in ("drop-replies", "corrupt-crc"):
        return {"cmd": f.replace("-", "_"), "id": args.id, "n": args.count}
    if f == "delay-replies":
        return {"cmd": "delay_replies", "id": args.id, "seconds": args.seconds, "n": args.count}
    if f == "hw-error":
        return {"cmd": "raise_hardware_error", "id": args.id, "bits": args.bits, "persistent": args.persistent}
    if f in ("silence", "unsilence", "unjam"):
        return {"cmd": f, "id": args.id}
    if f == "jam":
        return {"cmd": "jam", "id": args.id, "seconds": args.seconds}
    return {"cmd": f}


def run(args: argparse.Namespace) -> int:
    from sim.dxl.chain import send_control

    control = args.control or os.path.join(os.path.dirname(os.path.abspath(args.port)), "control.sock")
    if not os.path.exists(control):
        print(f"robosac fault: no control socket at {control} (is `robosac twin` running?)", file=sys.stderr)
        return 2
    try:
        reply = send_control(control, _message(args))
    except OSError as e:
        print(f"robosac fault: cannot reach the twin at {control}: {e}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"robosac fault: {reply.get('error')}", file=sys.stderr)
        return 1
    extra = {k: v for k, v in reply.items() if k != "ok"}
    print(json.dumps(extra, indent=2) if extra else "ok")
    return 0
