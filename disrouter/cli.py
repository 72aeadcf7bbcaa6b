"""The `disrouter` command: one subcommand per concept, each registered by its own module.

A module adds its subcommands through `register(subparsers)`; the parser it adds must set
`func` (called with the parsed args, returns an exit code). Registration modules are imported
lazily by name so `disrouter ask` never pays for importing the evaluation stack.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that contribute subcommands. Each exposes `register(subparsers) -> None`.
COMMAND_MODULES = [
    "disrouter.stack.commands",  # up, down, status, models
    "disrouter.client.commands",  # ask
    "disrouter.topology.commands",  # validate, topics, render
    "disrouter.evaluation.commands",  # eval
    "disrouter.training.commands",  # train
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disrouter",
        description="Distributed self-routing LLM agents on Ray Serve over Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that concept has no commands yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from disrouter.actors.logs import configure_logging

    configure_logging()  # logs go to stderr, so stdout carries a command's result alone
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `disrouter … | head`: the reader left early, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
