"""The rendered overlays, one at a time (``tests/k8s/render.py``)."""

from __future__ import annotations

import pytest

from tests.k8s.render import OVERLAYS, Doc, render_overlay


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[Doc]]:
    return request.param, render_overlay(request.param)
