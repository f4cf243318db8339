"""The `robosac` command: one sub-command per module, each exposing `register(subparsers)`.

A module's `register` adds its parser and sets `func` (called with the parsed args, returns an exit
code). Modules import lazily so `robosac --help` stays fast and a missing optional piece only breaks
its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "robosac.sac.train_cli",
    "robosac.runtime.eval_cli",
    "robosac.bench_cli",
    "sim.twin_cli",
    "robosac.hal.tools_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robosac", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("robosac: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
