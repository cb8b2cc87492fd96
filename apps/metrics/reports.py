"""Test reports read into a TestRun's counts: a JUnit XML file (pytest --junitxml, most CI tools) or a pytest-json
report (pytest-json-report's `summary`). A report that cannot be read is a ValueError saying why."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

COUNTS = ("passed", "failed", "errors", "skipped")


def parse_junit(text: str) -> dict[str, int]:
    """Counts from <testsuites>/<testsuite>: tests - failures - errors - skipped passed."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:  # a test report needs no entities; refuse them outright
        raise ValueError("a JUnit report with a DOCTYPE or ENTITY declaration is refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not JUnit XML: {exc}") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite") if root.tag == "testsuites" else None
    if suites is None:
        raise ValueError(f"not JUnit XML: the root element is <{root.tag}>, not <testsuites> or <testsuite>")
    totals = dict.fromkeys(COUNTS, 0)
    for suite in suites:
        try:
            tests, failures, errors = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors"))
            skipped = int(suite.get("skipped", suite.get("disabled", 0)))
        except ValueError:
            raise ValueError("not JUnit XML: a testsuite count is not a whole number") from None
        if min(tests, failures, errors, skipped) < 0 or failures + errors + skipped > tests:
            raise ValueError("inconsistent JUnit counts: failures + errors + skipped exceed tests")
        totals["passed"] += tests - failures - errors - skipped
        totals["failed"] += failures
        totals["errors"] += errors
        totals["skipped"] += skipped
    return totals


def parse_pytest_json(text: str) -> dict[str, int]:
    """Counts from pytest-json-report's {"summary": {"passed", "failed", "error", "skipped", ...}}."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a pytest JSON report: {exc}") from None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise ValueError('not a pytest JSON report: no "summary" object')
    found = {
        "passed": summary.get("passed", 0),
        "failed": summary.get("failed", 0),
        "errors": summary.get("error", summary.get("errors", 0)),
        "skipped": summary.get("skipped", 0),
    }
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in found.values()):
        raise ValueError("a pytest JSON summary count is not a whole number of 0 or more")
    return found


PARSERS = {"junit": parse_junit, "pytest-json": parse_pytest_json}
