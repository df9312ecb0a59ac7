"""The CLI's policy-as-code commands: `mandate schema`, `mandate test`, `mandate diff` (authz/cli.py
wires them in); each prints what CI and a reviewer need and exits 0, 1 (findings) or 2 (usage)."""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("schema", "test")


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schema = commands.add_parser("schema", help="print the JSON Schema of a policy document (for editors)")
    schema.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    test = commands.add_parser("test", help="run the policy's YAML test cases (exit 0 pass, 1 failures, 2 errors)")
    add_policies_option(test)
    test.add_argument("--tests", metavar="DIR", help="the test cases (default: the policy directory's tests/)")
    test.add_argument("--coverage", action="store_true", help="list every rule and target no case exercised")
    test.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    test.add_argument("--verbose", "-v", action="store_true", help="print every case, passing ones too")


def add_policies_option(parser: argparse.ArgumentParser) -> None:
    """The policy directory, the same way for every command: `--policies DIR`, or a positional DIR."""
    parser.add_argument("directory", nargs="?", metavar="DIR", help="the policy directory (same as --policies)")
    parser.add_argument(
        "--policies", metavar="DIR", help="the policy directory (default: $MANDATE_POLICIES or policies)"
    )


def policies_of(args: argparse.Namespace) -> str | None:
    """The directory given once, or None (with the reason printed) when it was given twice differently."""
    import os

    if args.directory and args.policies and args.directory != args.policies:
        print(f"the policy directory was given twice: {args.directory} and --policies {args.policies}", file=sys.stderr)
        return None
    return args.directory or args.policies or os.environ.get("MANDATE_POLICIES", "policies")


def run(args: argparse.Namespace) -> int:
    if args.command == "schema":
        return _schema(args)
    if args.command == "test":
        from authz.workflow.run_tests import run_tests

        return run_tests(args)
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
