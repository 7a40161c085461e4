"""A fast start: each path imports only what it needs (measured in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demo" / "airports.tif"
HEAVY = ("torch", "torchvision", "ultralytics", "geopandas", "pandas", "ray", "fastapi")


def _loaded(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    return set(json.loads(out.stdout.splitlines()[-1])) & set(HEAVY)


def test_the_command_line_parser_imports_nothing_heavy():
    assert _loaded("import geo_hires.cli as c; c._parser()") == set()


def test_the_api_names_load_on_first_use():
    assert _loaded("import geo_hires") == set()


def test_a_detection_imports_torch_but_no_pandas_torchvision_ultralytics_ray_or_fastapi():
    assert _loaded("import geo_hires.pipeline") == {"torch"}


def test_a_cascade_detection_with_the_default_model_never_imports_torchvision(tmp_path):
    """torchvision's Python package costs over a second of start (``torch._dynamo``, via
    ``roi_align``); the cascade's refiner (ultralytics, its NMS included) and the matching of
    its boxes to the scanner's run without it."""
    out = tmp_path / "demo.geojson"
    argv = ["detect", str(DEMO), "-o", str(out)]
    code = f"from geo_hires.cli import main\nassert main({argv!r}) == 0"
    loaded = _loaded(code)
    assert loaded >= {"torch", "ultralytics"} and "torchvision" not in loaded
    refined = [
        f for f in json.loads(out.read_text())["features"] if f["properties"]["level"] == "refine"
    ]
    assert len(refined) > 10
