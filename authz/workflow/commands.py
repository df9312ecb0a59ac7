"""The CLI's policy-as-code commands: `mandate schema`, `mandate test`, `mandate diff` (authz/cli.py
wires them in); each prints what CI and a reviewer need and exits 0, 1 (findings) or 2 (usage)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = ("schema", "test", "diff")


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schema = commands.add_parser("schema", help="print the JSON Schema of a policy document (for editors)")
    schema.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    test = commands.add_parser("test", help="run the policy's YAML test cases (exit 0 pass, 1 failures, 2 errors)")
    add_policies_option(test)
    test.add_argument("--tests", metavar="DIR", help="the test cases (default: the policy directory's tests/)")
    test.add_argument("--coverage", action="store_true", help="list every rule and target no case exercised")
    test.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    test.add_argument("--verbose", "-v", action="store_true", help="print every case, passing ones too")
    _add_diff_parser(commands)


def _add_diff_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    diff = commands.add_parser("diff", help="what a policy change grants and revokes (Markdown for a review)")
    diff.add_argument("old", metavar="OLD", help="the policy directory before the change")
    diff.add_argument("new", metavar="NEW", help="the policy directory after it")
    diff.add_argument("--format", choices=("markdown", "text", "json"), default="text", help="default %(default)s")
    diff.add_argument(
        "--requests",
        metavar="FILE",
        help="recorded requests (test cases, a folder of them, or audit lines): list the decisions that change",
    )
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when anything changed (as git diff does)")
    add_secrets_option(diff)


def add_policies_option(parser: argparse.ArgumentParser) -> None:
    """The policy directory, the same way for every command: `--policies DIR`, or a positional DIR."""
    parser.add_argument("directory", nargs="?", metavar="DIR", help="the policy directory (same as --policies)")
    parser.add_argument(
        "--policies", metavar="DIR", help="the policy directory (default: $MANDATE_POLICIES or policies)"
    )
    add_secrets_option(parser)


def add_secrets_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-secret-files",
        dest="read_secrets",
        action="store_false",
        help="do not open the {secret:PATH} files (CI without the Secrets): their paths are checked, not their content",
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
    if args.command == "diff":
        return _diff(args)
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


def _diff(args: argparse.Namespace) -> int:
    """0 (or 1 with --exit-code and a change); 2 when a set does not load or the requests cannot be read."""
    import orjson

    from authz.policy.compiler import compile_directory
    from authz.policy.loader import PolicyLoadError
    from authz.workflow.cases import CaseFileError
    from authz.workflow.diff import diff_facts, policy_facts
    from authz.workflow.diff_report import as_json, render
    from authz.workflow.replay import changed_decisions, recorded_requests

    try:
        old, new = (compile_directory(directory, args.read_secrets) for directory in (args.old, args.new))
        diff = diff_facts(policy_facts(args.old), policy_facts(args.new))
        requests = recorded_requests(Path(args.requests), old) if args.requests else None
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 2
    except CaseFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    if requests is not None:
        diff.decisions = changed_decisions(requests, old, new)
    names = f"{args.old} ({old.version})", f"{args.new} ({new.version})"
    if args.format == "json":
        print(orjson.dumps(as_json(diff, *names), option=orjson.OPT_INDENT_2).decode())
    else:
        count = None if requests is None else len(requests)
        sys.stdout.write(render(diff, *names, markdown=args.format == "markdown", requests=count))
    return 1 if args.exit_code and not diff.empty else 0
