"""What an operator sees: Prometheus metrics through Ray Serve's metrics API, and log lines that
carry the job, the tenant and the request.

Metrics are ``ray.serve.metrics`` objects, so they are exported with Serve's own ``ray_serve_*``
metrics on every node's metrics port (Ray prefixes ``ray_`` to each name) and tagged with the
deployment, replica and application. Outside a Ray worker (tests under uvicorn) they record
nothing. Each process creates them once, on first use. Ray's agent drops a gauge's series when
it was not set within two report intervals, so gauges are set through :meth:`Metrics.set`,
which keeps their values, and :meth:`Metrics.republish` sets them again (the runner does, every
second).

The logger lives under ``ray.serve``: in a replica, Serve's logging config (JSON encoding, the
replica's log file, the request id of the request being served) formats its lines; ``extra``
fields (``job``, ``tenant``, ``runner``…) become JSON keys. (``job_id`` is Ray's own key, hence
``job``.)
"""

from __future__ import annotations

import functools
import logging
import threading
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
            description="jobs accepted, by tenant and source (upload, uri or ogc)",
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
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Gauge, float]] = {}
        self._lock = threading.Lock()

    def set(self, gauge: Gauge, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set a gauge and keep its value for :meth:`republish`."""
        key = (str(gauge.info["name"]), tuple(sorted((tags or {}).items())))
        with self._lock:
            self._values[key] = (gauge, float(value))
        gauge.set(float(value), tags=dict(tags or {}))

    def republish(self) -> None:
        """Set every gauge to its last value again (keeps its series alive in Ray's agent)."""
        with self._lock:
            values = list(self._values.items())
        for (_name, tags), (gauge, value) in values:
            gauge.set(value, tags=dict(tags))

    def set_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Publish the store's jobs by (state, tenant); pairs gone from it drop to 0."""
        name = str(self.jobs.info["name"])
        with self._lock:
            known = [dict(tags) for (n, tags) in self._values if n == name]
        for tags in known:
            if (tags["state"], tags["tenant"]) not in counts:
                self.set(self.jobs, 0, tags)
        for (state, tenant), n in counts.items():
            self.set(self.jobs, n, {"state": state, "tenant": tenant})
        queued = sum(n for (state, _), n in counts.items() if state == "queued")
        self.set(self.queue_depth, queued)


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
