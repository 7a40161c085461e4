"""Under ``make test`` a browser or PostgreSQL test that would skip fails instead, and the
viewer's browser test is one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_needs_chromium.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.browser\n"
        "@pytest.mark.skipif(True, reason='chromium is not installed')\n"
        "def test_viewer():\n    pass\n\n"
        "@pytest.mark.browser\n"
        "def test_imports():\n    pytest.importorskip('no_such_module_here')\n\n"
        "def test_plain():\n    pytest.skip('not required')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GEO_HIRES_REQUIRE"}
    if require is not None:
        env["GEO_HIRES_REQUIRE"] = require
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.required", "-o", "markers=browser"]
    cmd += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_required_markers_turn_skips_into_failures(tmp_path):
    free = _run(tmp_path, None)
    assert free.returncode == 0 and "3 skipped" in free.stdout, free.stdout
    strict = _run(tmp_path, "browser,postgres")
    assert strict.returncode == 1, strict.stdout
    assert "1 failed, 1 skipped, 1 error" in strict.stdout, strict.stdout  # setup: an error
    assert "chromium is not installed" in strict.stdout
    assert "bash scripts/system_deps.sh" in strict.stdout


def test_make_test_requires_the_browser_and_postgres_tests():
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "GEO_HIRES_REQUIRE=browser,postgres" in test_recipe
    viewer = (ROOT / "tests" / "service" / "test_viewer.py").read_text()
    assert "@pytest.mark.browser\n" in viewer  # the map test is covered by the rule
    pytest.importorskip("playwright", reason="playwright is in the dev extra")
