"""Shared fixtures: bundled fixtures, the shared data folder, and synthetic GeoTIFF factories."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

FIXTURES = Path(__file__).parent / "data"


def shared_data() -> Path | None:
    """``$GEO_HIRES_SHARED_DATA`` or ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("GEO_HIRES_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((p for p in candidates if (p / "README.md").is_file()), None)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip(
            "shared data folder not found (set GEO_HIRES_SHARED_DATA or use ../shared/data)"
        )
    return path


WriteTif = Callable[..., Path]


@pytest.fixture
def write_tif(tmp_path: Path) -> WriteTif:
    """Write a small GeoTIFF from an array ``(bands, H, W)``; keyword args go to the profile."""

    def write(name: str, data: np.ndarray, **profile: Any) -> Path:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        base: dict[str, Any] = {
            "driver": "GTiff",
            "count": data.shape[0],
            "height": data.shape[1],
            "width": data.shape[2],
            "dtype": data.dtype.name,
            "crs": "EPSG:32633",
            "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000),
        }
        base.update(profile)
        colorinterp = base.pop("colorinterp", None)
        path = tmp_path / name
        with rasterio.open(path, "w", **base) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
        return path

    return write


_SLOW_MODULES = ("test_runtime.py", "test_train_detect.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutation testing (``make mutate``) run the quick tests first.

    mutmut stops a mutant's run at the first failing test, so a mutant that a quick test kills
    should not first wait for a Ray cluster or a training run. Normal runs keep file order.
    """
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    items.sort(key=lambda item: item.nodeid.split("::")[0].endswith(_SLOW_MODULES))
