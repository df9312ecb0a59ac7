"""The CLI's policy-as-code commands: `mandate schema`, `mandate test`, `mandate diff` (authz/cli.py
wires them in); each prints what CI and a reviewer need and exits 0, 1 (findings) or 2 (usage)."""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("schema",)


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schema = commands.add_parser("schema", help="print the JSON Schema of a policy document (for editors)")
    schema.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")


def run(args: argparse.Namespace) -> int:
    if args.command == "schema":
        return _schema(args)
    raise AssertionError(f"not a workflow command: {args.command}")


def _schema(args: argparse.Namespace) -> int:
    from authz.workflow.schema import schema_text

    text = schema_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
