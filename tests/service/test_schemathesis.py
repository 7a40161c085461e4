"""Schemathesis over the live app's OpenAPI: whatever it sends, the service never answers 5xx,
and every answer it gets is one the definition lists (clients and validators read it)."""

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
    undocumented: set[tuple[str, int]] = set()
    now: dict[str, object] = {}  # the operation under test (the check runs in its loop turn)
    with running_service(data, (root,)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            name = f"{operation.method.upper()} {operation.path}"
            tried.append(name)
            now.update(name=name, documented=set(operation.definition.raw["responses"]))

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
            def check(case):
                for headers in ({"Authorization": f"Bearer {TOKENS[0]}"}, {}):
                    response = case.call(headers=headers, timeout=30)
                    calls.append(response.status_code)
                    assert response.status_code < 500, (case.path, response.text)
                    if str(response.status_code) not in now["documented"]:
                        undocumented.add((now["name"], response.status_code))

            check()
    assert len(calls) > 100 and set(calls) & {400, 401, 404, 415, 422}
    assert not undocumented  # the API definition lists every answer a client can get
    assert {"POST /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}"} <= set(tried)
    ogc = {"POST /processes/{process_id}/execution", "GET /jobs/{job_id}/results",
           "DELETE /jobs/{job_id}", "GET /collections/{collection_id}/items"}  # fmt: skip
    assert ogc <= set(tried)
