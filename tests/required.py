"""A pytest plugin: tests of the markers named in ``$GEO_HIRES_REQUIRE`` (comma separated)
must run, so ``make test`` (which sets ``GEO_HIRES_REQUIRE=browser,postgres``) fails instead
of skipping when a system program they drive is missing. Elsewhere they skip, saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def required_markers() -> set[str]:
    return {m.strip() for m in os.environ.get("GEO_HIRES_REQUIRE", "").split(",") if m.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    required = required_markers() & {m.name for m in item.iter_markers()}
    if not report.skipped or not required or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} needs {', '.join(sorted(required))} and must not skip here "
        f"(GEO_HIRES_REQUIRE={os.environ['GEO_HIRES_REQUIRE']}), but it skipped: {reason}. "
        "Install what it names: bash scripts/system_deps.sh (as root on Debian)"
    )
