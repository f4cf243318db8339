"""The `robosac` command: one sub-command per module, each exposing `register(subparsers)`.

A module's `register` adds its parser and sets `func` (called with the parsed args, returns an exit
code). `robosac CMD` imports CMD's module alone, so a command that needs no torch starts at once and a
missing optional piece only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# The module that registers each command, in the order `--help` lists them. `robosac CMD` imports
# CMD's module only: torch (~1.5 s here) is imported by the commands that run it, when they run
# it, so `robosac fault status`, `robosac twin` or a bad `--sac` value do not wait for it.
COMMANDS: dict[str, str] = {
    "train": "robosac.sac.train_cli",
    "eval": "robosac.runtime.eval_cli",
    "bench": "robosac.bench_cli",
    "twin": "sim.twin_cli",
    "fault": "sim.twin_cli",
    **{name: "robosac.hal.tools_cli"
       for name in ("scan", "set-id", "set-baud", "read-item", "write-item", "jog", "latency", "ftdi-latency")},
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` only (its module alone is imported), or for every command."""
    parser = argparse.ArgumentParser(prog="robosac", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    for name in dict.fromkeys(modules):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    # SIGTERM (kill, systemd, docker stop) ends a command the way Ctrl-C does, through its cleanup;
    # on the hardware backend the safety monitor takes both signals over as an e-stop while the robot is open.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("robosac: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
