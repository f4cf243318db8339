"""`robosac bench WHAT`: throughput figures as one JSON object on stdout.

Each benchmark lives beside the code it measures; this module only routes to it.
"""

from __future__ import annotations

import argparse
import importlib
import json

# name -> "module:function"; the function takes the parsed args and returns a JSON-able dict.
BENCHES: dict[str, str] = {
    "learner": "robosac.sac.bench:bench_learner",
    "bus": "robosac.hal.bench:bench_bus",
    "loop": "robosac.runtime.bench:bench_loop_cli",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput (prints one JSON object)")
    p.add_argument("what", choices=sorted(BENCHES), help="what to measure")
    p.add_argument("--seconds", type=float, default=5.0, help="time spent measuring each figure (s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    module, func = BENCHES[args.what].split(":")
    result = getattr(importlib.import_module(module), func)(args)
    print(json.dumps(result))
    return 0
