"""Schemathesis over the live app's OpenAPI: whatever it sends, the service never answers 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from geo_hires.scene import SynthSpec, write_synthetic  # noqa: E402
from tests.service.harness import TOKENS, running_service  # noqa: E402


def test_generated_requests_never_get_a_server_error(tmp_path):
    root = tmp_path / "scenes"
    root.mkdir()
    write_synthetic(root / "s.tif", SynthSpec(width=300, height=200, seed=1))
    data = tmp_path / "data"
    data.mkdir()
    tried: list[str] = []
    calls: list[int] = []
    with running_service(data, (root,)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            tried.append(f"{operation.method.upper()} {operation.path}")

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case):
                for headers in ({"Authorization": f"Bearer {TOKENS[0]}"}, {}):
                    response = case.call(headers=headers, timeout=30)
                    calls.append(response.status_code)
                    assert response.status_code < 500, (case.path, response.text)

            check()
    assert len(calls) > 100 and set(calls) & {400, 401, 404, 415, 422}
    assert {"POST /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}"} <= set(tried)
    ogc = {"POST /processes/{process_id}/execution", "GET /jobs/{job_id}/results",
           "DELETE /jobs/{job_id}", "GET /collections/{collection_id}/items"}  # fmt: skip
    assert ogc <= set(tried)
