"""JUnit XML for `mandate test --junit FILE`: the report CI systems show per test case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from authz.workflow.cases import Outcome


def write_junit(path: Path, outcomes: list[Outcome], seconds: float) -> None:
    failures = sum(not outcome.passed for outcome in outcomes)
    suites = ET.Element("testsuites", tests=str(len(outcomes)), failures=str(failures), time=f"{seconds:.3f}")
    suite = ET.SubElement(
        suites, "testsuite", name="mandate test", tests=str(len(outcomes)), failures=str(failures), errors="0"
    )
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", name=outcome.case.name, classname=outcome.case.file)
        case.set("file", outcome.case.file)
        case.set("line", str(outcome.case.line))
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(outcome.mismatches))
            failure.text = f"{outcome.case.where}\n" + "\n".join(outcome.mismatches)
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
