"""locust users of the geo_hires service (driven by ``bench/load.py``; see bench/README.md).

Each simulated user is one client of one tenant: it submits small scenes (uploads and paths
under an allowed root, some with an ``Idempotency-Key`` sent twice), polls its jobs, downloads
results (GeoJSON, checked byte for byte against the CLI's output for that scene, and now and
then the GeoPackage), cancels some jobs and removes some finished ones. ``429`` (queue or share
full) is the service pushing back and counts as answered, not failed; anything else ``>= 400``
is a failure. What every user submitted, saw finish and cancelled is written to ``$LOAD_LEDGER``
when the test stops, so the driver can check that no job was lost or duplicated.

Settings come from the JSON file ``$LOAD_PLAN`` names: tokens, scenes (path, bytes, options,
expected GeoJSON file).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task

PLAN: dict[str, Any] = json.loads(Path(os.environ["LOAD_PLAN"]).read_text())
SCENES = PLAN["scenes"]
EXPECTED = {s["name"]: Path(s["expected"]).read_bytes() for s in SCENES}
UPLOADS = {s["name"]: Path(s["path"]).read_bytes() for s in SCENES}
LEDGER: dict[str, Any] = {
    "submitted": {},
    "keys": {},
    "cancelled": [],
    "removed": [],
    "bad": [],
    "status": {},
}
LOCK = threading.Lock()
FINAL = ("succeeded", "failed", "cancelled")


def tenant_key(token: str) -> str:
    """Which tenant a job belongs to in the ledger (a digest: tokens share their prefix)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Client(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.token = random.choice(PLAN["tokens"])
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        self.jobs: dict[str, str] = {}  # id -> scene name, still to watch
        self.done: list[str] = []  # finished, result fetched or not

    def _accepted(self, resp: Any, scene: str, key: str | None) -> None:
        if resp.status_code == 429:
            resp.success()  # back-pressure, not an error
            return
        if resp.status_code != 202:
            resp.failure(f"{resp.status_code}: {resp.text[:200]}")
            return
        job = resp.json()
        with LOCK:
            first = LEDGER["keys"].setdefault(key, job["id"]) if key else job["id"]
            if first != job["id"]:
                LEDGER["bad"].append(f"key {key} gave {job['id']} after {first}")
            entry = {"scene": scene, "tenant": tenant_key(self.token)}
            LEDGER["submitted"].setdefault(job["id"], entry)
        self.jobs[job["id"]] = scene

    @task(3)
    def submit_upload(self) -> None:
        scene = random.choice(SCENES)
        key = uuid.uuid4().hex if random.random() < 0.3 else None
        for _ in range(2 if key else 1):  # a retried request with its key: still one job
            with self.client.post(
                "/v1/jobs",
                files={"scene": (scene["name"], UPLOADS[scene["name"]], "image/tiff")},
                data={"options": json.dumps(scene["options"])},
                headers={"Idempotency-Key": key} if key else {},
                name="POST /v1/jobs (upload)",
                catch_response=True,
            ) as resp:
                self._accepted(resp, scene["name"], key)

    @task(3)
    def submit_uri(self) -> None:
        scene = random.choice(SCENES)
        body = {"uri": scene["path"], "options": scene["options"]}
        with self.client.post(
            "/v1/jobs", json=body, name="POST /v1/jobs (uri)", catch_response=True
        ) as resp:
            self._accepted(resp, scene["name"], None)

    @task(12)
    def poll(self) -> None:
        if not self.jobs:
            return
        job_id = random.choice(list(self.jobs))
        with self.client.get(
            f"/v1/jobs/{job_id}", name="GET /v1/jobs/{id}", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                return
            job = resp.json()
        if job["state"] not in FINAL:
            return
        scene = self.jobs.pop(job_id)
        self.done.append(job_id)
        if job["state"] == "succeeded":
            self._download(job_id, scene)

    def _download(self, job_id: str, scene: str) -> None:
        with self.client.get(
            f"/v1/jobs/{job_id}/result", name="GET /v1/jobs/{id}/result", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}")
            elif resp.content != EXPECTED[scene]:
                resp.failure("result differs from the CLI's bytes")
                with LOCK:
                    LEDGER["bad"].append(f"{job_id}: result differs from the CLI's")
        if random.random() < 0.1:
            self.client.get(
                f"/v1/jobs/{job_id}/result?format=gpkg", name="GET /v1/jobs/{id}/result?gpkg"
            )

    @task(1)
    def cancel(self) -> None:
        if not self.jobs:
            return
        job_id = random.choice(list(self.jobs))
        with self.client.delete(
            f"/v1/jobs/{job_id}", name="DELETE /v1/jobs/{id} (cancel)", catch_response=True
        ) as resp:
            if resp.status_code in (202, 204):  # 204: it had finished, and is removed
                with LOCK:
                    LEDGER["cancelled" if resp.status_code == 202 else "removed"].append(job_id)
                self.jobs.pop(job_id, None)
                if resp.status_code == 202:
                    self.done.append(job_id)
            else:
                resp.failure(f"{resp.status_code}")

    @task(1)
    def remove(self) -> None:
        if not self.done:
            return
        job_id = self.done.pop(0)
        with self.client.delete(
            f"/v1/jobs/{job_id}", name="DELETE /v1/jobs/{id} (remove)", catch_response=True
        ) as resp:
            if resp.status_code == 204:
                with LOCK:
                    LEDGER["removed"].append(job_id)
            else:
                resp.failure(f"{resp.status_code}")

    @task(1)
    def listing(self) -> None:
        self.client.get("/v1/jobs?limit=20", name="GET /v1/jobs")


@events.request.add_listener
def _count(name: str, response: Any, **_kw: Any) -> None:
    """Status codes by endpoint (locust's own stats keep failures, not codes)."""
    code = str(getattr(response, "status_code", 0) or 0)
    with LOCK:
        by_code = LEDGER["status"].setdefault(name, {})
        by_code[code] = by_code.get(code, 0) + 1


@events.test_stop.add_listener
def _write_ledger(**_kw: Any) -> None:
    with LOCK:
        Path(os.environ["LOAD_LEDGER"]).write_text(json.dumps(LEDGER, indent=1))
