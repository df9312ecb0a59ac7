"""`mandate test`'s command: load the set and the cases, decide each, print what failed and why."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from authz.explain import render_text
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError
from authz.workflow.cases import CaseFileError, Outcome, case_files, coverable, exercised, read_cases, run_case
from authz.workflow.commands import policies_of
from authz.workflow.junit import write_junit


def run_tests(args: argparse.Namespace) -> int:
    """0: every case passed; 1: some failed; 2: the policies or the cases could not be read."""
    directory = policies_of(args)
    if directory is None:
        return 2
    started = time.perf_counter()
    try:
        policy = compile_directory(directory, args.read_secrets)
        cases = [case for path in case_files(Path(args.tests or Path(directory, "tests"))) for case in read_cases(path)]
        if not cases:
            raise CaseFileError(f"{args.tests or Path(directory, 'tests')}: no test cases")
        outcomes = [run_case(policy, case) for case in cases]
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} policy error(s): no test ran", file=sys.stderr)
        return 2
    except CaseFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    for outcome in outcomes:
        _print(outcome, args.verbose)
    failed = sum(not outcome.passed for outcome in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed (policy {policy.version})")
    if args.coverage:
        _print_coverage(coverable(policy), outcomes)
    if args.junit:
        write_junit(Path(args.junit), outcomes, time.perf_counter() - started)
    return 1 if failed else 0


def _print(outcome: Outcome, verbose: bool) -> None:
    """A failing case with what differs and the whole explanation: the rule that decided, each hop."""
    if outcome.passed:
        if verbose:
            print(f"ok    {outcome.case.where}: {outcome.case.name}")
        return
    print(f"FAIL  {outcome.case.where}: {outcome.case.name}")
    for mismatch in outcome.mismatches:
        print(f"      {mismatch}")
    for line in render_text(outcome.report).splitlines():
        print(f"      | {line}")


def _print_coverage(labels: list[str], outcomes: list[Outcome]) -> None:
    seen = {label for outcome in outcomes for label in exercised(outcome.report)}
    missed = [label for label in labels if label not in seen]
    print(f"coverage: {len(labels) - len(missed)} of {len(labels)} rules and targets exercised")
    for label in missed:
        print(f"  not exercised: {label}")
