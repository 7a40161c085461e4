"""Run a PyQGIS script under the system python, headless, and return what it printed (JSON)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPTS = Path(__file__).parent / "qgis_scripts"


def require_qgis() -> None:
    """Fail (never skip in silence) when QGIS is missing: ``scripts/system_deps.sh`` installs it."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    if not shutil.which(SYSTEM_PYTHON) or probe.returncode != 0:
        pytest.fail("QGIS with its Python bindings is missing: run scripts/system_deps.sh")


def run_qgis(script: str, *args: str, timeout: float = 300) -> Any:
    require_qgis()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env |= {"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp"}
    done = subprocess.run([SYSTEM_PYTHON, str(SCRIPTS / script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    last = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert last, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(last[-1])
