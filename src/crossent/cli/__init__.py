"""The ``crossent`` command: ``crossent demo``, ``crossent bench``, ``crossent check``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
they are imported only when chosen, so ``crossent --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": (
        "crossent.cli.demo",
        "train a softmax classifier on scikit-learn's digits and show what CE does",
    ),
    "bench": ("crossent.cli.bench", "time crossent against its peers and the memory/compute floor"),
    "check": (
        "crossent.cli.check",
        "verify every available backend against the reference on this machine",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossent", description="The cross-entropy loss family: demo, bench, check."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)
        parser.print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"crossent {name}", description=help_text)
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(rest)) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
