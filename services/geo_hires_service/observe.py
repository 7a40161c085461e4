"""What an operator sees: Prometheus metrics through Ray Serve's metrics API, and log lines that
carry the job, the tenant and the request.

Metrics are ``ray.serve.metrics`` objects, so they are exported with Serve's own ``ray_serve_*``
metrics on every node's metrics port (Ray prefixes ``ray_`` to each name) and tagged with the
deployment, replica and application. Outside a Ray worker (tests under uvicorn) they record
nothing. Each process creates them once, on first use.

The logger lives under ``ray.serve``: in a replica, Serve's logging config (JSON encoding, the
replica's log file, the request id of the request being served) formats its lines; ``extra``
fields (``job``, ``tenant``, ``runner``…) become JSON keys. (``job_id`` is Ray's own key, hence
``job``.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from ray.serve.metrics import Counter, Gauge, Histogram

__all__ = ["DURATION_BUCKETS_S", "Metrics", "job_fields", "log", "metrics"]

log = logging.getLogger("ray.serve.geo_hires")

DURATION_BUCKETS_S = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0]


def _keys(*names: str) -> Any:
    """Tag keys (Ray's annotation says a 1-tuple; any tuple of names is meant)."""
    return names


class Metrics:
    """The service's metrics (see k8s/README.md for what each one means)."""

    def __init__(self) -> None:
        tenant = _keys("tenant")
        self.submitted = Counter(
            "geo_hires_jobs_submitted_total",
            description="jobs accepted (202), by tenant and source (upload or uri)",
            tag_keys=_keys("tenant", "source"),
        )
        self.finished = Counter(
            "geo_hires_jobs_finished_total",
            description="job attempts ended, by state (succeeded, failed, cancelled, requeued) "
            "and tenant",
            tag_keys=_keys("state", "tenant"),
        )
        self.jobs = Gauge(
            "geo_hires_jobs",
            description="jobs in the store, by state and tenant (every runner replica reports "
            "the same store: aggregate with max)",
            tag_keys=_keys("state", "tenant"),
        )
        self.queue_depth = Gauge(
            "geo_hires_queue_depth", description="jobs queued and not yet claimed by a runner"
        )
        self.duration = Histogram(
            "geo_hires_job_duration_seconds",
            description="from acceptance to the end of a job, by final state",
            boundaries=DURATION_BUCKETS_S,
            tag_keys=_keys("state"),
        )
        self.units = Counter(
            "geo_hires_units_total", description="work units computed", tag_keys=tenant
        )
        self.megapixels = Counter(
            "geo_hires_megapixels_total",
            description="scene megapixels of succeeded jobs (each level counted)",
            tag_keys=tenant,
        )
        self.units_per_s = Gauge(
            "geo_hires_units_per_second",
            description="units per second of the job a runner slot runs (this attempt)",
            tag_keys=_keys("slot"),
        )
        self.megapixels_per_s = Gauge(
            "geo_hires_megapixels_per_second",
            description="megapixels per second of the last job a runner slot finished",
            tag_keys=_keys("slot"),
        )
        self.upload_bytes = Counter(
            "geo_hires_upload_bytes_total", description="bytes of accepted uploads", tag_keys=tenant
        )
        self.errors = Counter(
            "geo_hires_errors_total",
            description="errors by type: http_<status> for refused requests, the error's class "
            "for failed jobs",
            tag_keys=_keys("type", "tenant"),
        )
        self._seen: set[tuple[str, str]] = set()

    def set_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Publish the store's jobs by (state, tenant); pairs gone from it drop to 0."""
        for state, tenant in self._seen - counts.keys():
            self.jobs.set(0, tags={"state": state, "tenant": tenant})
        for (state, tenant), n in counts.items():
            self.jobs.set(n, tags={"state": state, "tenant": tenant})
        self._seen = set(counts)
        queued = sum(n for (state, _), n in counts.items() if state == "queued")
        self.queue_depth.set(queued)


@functools.cache
def metrics() -> Metrics:
    """This process's metrics."""
    return Metrics()


def job_fields(job: Any, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about ``job``: its id, tenant and submitting request."""
    fields = {"job": job.id, "tenant": job.tenant}
    if getattr(job, "request_id", None):
        fields["request_id"] = job.request_id
    return {**fields, **more}
