"""The job runner: takes queued jobs from the store and runs them with the library, off the
request path.

One runner owns a number of slots (jobs at once); each slot claims the oldest claimable job
under a lease (:mod:`.leases`), renews the lease on a heartbeat thread while the job runs,
runs :func:`geo_hires.pipeline.run_detect` on the configured executor with ``resume=True`` (so
a job taken over from a lost runner, or requeued by a draining one, continues from its
journal), records progress after every unit, and stops within one unit when the job's cancel
flag is set, its lease is lost or the runner drains. Outputs go to the job's folder in the
data dir; the GeoJSON is written under the scene's own file name, so its provenance equals what
``geo-hires detect`` writes for the same scene.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from geo_hires.config import ReadConfig
from geo_hires.detect.executors import Executor, LocalExecutor
from geo_hires.detect.options import DetectOptions
from geo_hires.errors import GeoHiresError
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline import Outputs, run_detect
from geo_hires_service.observe import job_fields, log, metrics
from geo_hires_service.problems import disk_full
from geo_hires_service.schemas import scene_read_config
from geo_hires_service.store import Job, JobStore

__all__ = ["JobFiles", "JobRunner", "Stop", "runner_id"]


class Stop(Exception):
    """Raised from the progress callback to stop a job: ``cancelled``, ``drain`` or ``lease``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def runner_id(node: str | None = None) -> str:
    """A lease owner unique to this process: ``runner@<node or host>/<pid>/<random>``."""
    return f"runner@{node or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class JobFiles:
    """Where a job's files live: ``DATA/jobs/<id>/`` (upload, outputs, journal)."""

    root: Path
    scene_name: str

    @classmethod
    def of(cls, data_dir: str | Path, job: Job) -> JobFiles:
        return cls(Path(data_dir) / "jobs" / job.id, job.scene_name)

    @property
    def stem(self) -> str:
        return Path(self.scene_name).stem

    @property
    def geojson(self) -> Path:
        return self.root / "out" / f"{self.stem}.geojson"

    @property
    def gpkg(self) -> Path:
        return self.root / "out" / f"{self.stem}.gpkg"

    @property
    def quicklook(self) -> Path:
        return self.root / "out" / f"{self.stem}.png"

    @property
    def stac(self) -> Path:
        """The result's STAC item (its counts are in the job's status)."""
        return self.root / "out" / f"{self.stem}.stac.json"

    @property
    def coverage(self) -> Path:
        """Where the job looked, in WGS84 (the second OGC API Features collection)."""
        return self.root / "out" / f"{self.stem}.coverage.geojson"

    def size(self) -> int:
        """Bytes under the job's folder (what its outputs cost the tenant's quota)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


class Heartbeat:
    """Renews a job's lease every quarter lease on a thread; ``lost`` is set once it is not
    this runner's any more (taken over, finished elsewhere) or could not be renewed in time."""

    def __init__(self, store: JobStore, job_id: str, owner: str, lease_s: float) -> None:
        self.store, self.job_id, self.owner, self.lease_s = store, job_id, owner, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        valid_until = time.monotonic() + self.lease_s
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.store.renew(self.job_id, self.owner, lease_s=self.lease_s):
                    self.lost.set()
                    return
                valid_until = time.monotonic() + self.lease_s
            except SQLAlchemyError as exc:  # the database is away: keep trying until expiry
                log.warning("cannot renew the lease of job %s: %s", self.job_id, exc)
                if time.monotonic() > valid_until - self.lease_s / 4:
                    self.lost.set()
                    return


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an attempt ended: ``succeeded``, ``failed``, ``cancelled``, ``drain`` or ``lease``."""

    state: str
    detections: int = 0
    error: str | None = None
    error_type: str | None = None
    megapixels: float = 0.0
    seconds: float = 0.0


def unwrapped(exc: BaseException) -> BaseException:
    """The error itself: one raised on a Ray actor arrives wrapped in a ``RayTaskError``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def one_line(exc: BaseException, job: Job) -> str:
    """A failed job's error for its client: the library's message on one line, with the
    scene's name for its server path."""
    text = " ".join(str(unwrapped(exc)).split()).replace(job.scene_path, job.scene_name)
    return text[:1000]


@dataclasses.dataclass(frozen=True)
class _Keyed:
    """The executor, noting the key of each unit result before the loop journals it (so the
    progress callback that follows can name the unit it reports)."""

    inner: Executor
    note: Callable[[str], None]

    def __getattr__(self, name: str) -> Any:  # device, config: what run_detect asks of it
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def run_units(self, *args: Any, on_result: Callable[[Any], None], **kw: Any) -> None:
        def noted(result: Any) -> None:
            self.note(result.key)
            on_result(result)

        self.inner.run_units(*args, on_result=noted, **kw)


@dataclasses.dataclass(kw_only=True)
class JobRunner:
    """Runs claimable jobs from ``store`` (see the module docstring)."""

    store: JobStore
    data_dir: Path
    executor: Executor | None = None
    read_config: ReadConfig = dataclasses.field(default_factory=scene_read_config)
    owner: str = dataclasses.field(default_factory=runner_id)
    lease_s: float = 60.0
    slot: str = "0"
    draining: threading.Event = dataclasses.field(default_factory=threading.Event)
    _models: dict[str, Bundle] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _model(self, name: str) -> Bundle:
        with self._lock:
            if name not in self._models:
                self._models[name] = load_bundle(name)
            return self._models[name]

    def run_one(self) -> Job | None:
        """Claim and run one job; ``None`` when none is claimable or the runner drains."""
        if self.draining.is_set():
            return None
        job = self.store.claim(self.owner, lease_s=self.lease_s)
        return None if job is None else self.run(job)

    def run(self, job: Job) -> Job | None:
        """Run a job this runner has claimed, and record how it ended; the job as it now is."""
        log.info("job started", extra=job_fields(job, runner=self.owner, attempt=job.attempts))
        with Heartbeat(self.store, job.id, self.owner, self.lease_s) as beat:
            outcome = self._attempt(job, beat)
        self._record(job, outcome)
        return self.store.get(job.id)

    def _progress(self, job: Job, beat: Heartbeat, keyed: list[str]) -> Callable[[int, int], None]:
        """The progress callback: records units, names each one in the log, and stops the run
        when the job is cancelled, the lease lost or the runner draining.

        A step with a newly noted key is a unit this runner computed (``unit done``); a step
        without one is units taken from the journal at a level's start (``units resumed``),
        so the log tells which units this attempt ran and which an earlier one had."""
        start, at = time.monotonic(), {"done": -1, "keys": len(keyed), "ran": 0}

        def on_progress(done: int, total: int) -> None:
            new = done - max(at["done"], 0)
            if new > 0 and at["done"] >= 0 and len(keyed) > at["keys"]:  # computed here
                at["ran"] += new
                metrics().units.inc(new, tags={"tenant": job.tenant})
                rate = at["ran"] / max(time.monotonic() - start, 1e-6)
                metrics().set(metrics().units_per_s, rate, {"slot": self.slot})
                fields = job_fields(job, unit=keyed[-1], runner=self.owner, units_done=done)
                log.debug("unit done", extra=fields)
            elif new > 0:  # the journal's, at the start or at a level's start
                log.info("units resumed", extra=job_fields(job, units=new, runner=self.owner))
            at["done"], at["keys"] = max(done, at["done"]), len(keyed)
            if beat.lost.is_set() or not self.store.progress(
                job.id, self.owner, done=done, total=total
            ):
                raise Stop("lease")
            now = self.store.get(job.id)
            if now is None or now.cancel_requested:
                raise Stop("cancelled")
            if self.draining.is_set():
                raise Stop("drain")

        return on_progress

    def _attempt(self, job: Job, beat: Heartbeat) -> Outcome:
        """Run the job; how it ended. Everything it does is inside: stored options a newer
        release refuses, or a disk too full for the job's folder, fail this job alone (outside,
        they would stop the runner's slot, and the job come back first after every restart)."""
        keys: list[str] = []
        try:
            files = JobFiles.of(self.data_dir, job)
            files.geojson.parent.mkdir(parents=True, exist_ok=True)
            options = DetectOptions.from_mapping(job.options)
            outputs = Outputs(files=(files.geojson, files.gpkg, files.stac),
                              quicklook=files.quicklook, coverage=files.coverage)  # fmt: skip
            result = run_detect(
                job.scene_path, outputs, options, bundle=self._model(options.model),
                read_config=self.read_config,
                executor=_Keyed(self.executor or LocalExecutor(), keys.append),
                resume=True, on_progress=self._progress(job, beat, keys),
            )  # fmt: skip
        except Stop as stop:
            return Outcome(state=stop.reason)
        except GeoHiresError as exc:  # the client sees the scene's name, not server paths
            kind = type(unwrapped(exc)).__name__
            return Outcome(state="failed", error=one_line(exc, job), error_type=kind)
        except OSError as exc:
            if not disk_full(exc):
                return self._crashed(job, exc)
            disk = "the service's disk is full; retry later or ask its operator for room"
            return Outcome(state="failed", error=disk, error_type="DiskFull")
        except Exception as exc:  # a bug must fail the job, never the runner
            return self._crashed(job, exc)
        return Outcome(
            state="succeeded", detections=len(result.detections),
            megapixels=result.megapixels, seconds=result.seconds,
        )  # fmt: skip

    def _crashed(self, job: Job, exc: Exception) -> Outcome:
        log.exception("job crashed", extra=job_fields(job, runner=self.owner))
        return Outcome(
            state="failed",
            error=f"internal error ({type(exc).__name__}); see the service log",
            error_type="internal",
        )

    def _record(self, job: Job, out: Outcome) -> None:
        """Write the outcome (only while the lease is ours), count it and log it. A cancel
        asked while the job's last steps ran is honoured: the client was told it would be."""
        now = self.store.get(job.id) if out.state in ("succeeded", "failed") else None
        if now is not None and now.cancel_requested:
            out = Outcome(state="cancelled")
        size = JobFiles.of(self.data_dir, job).size()
        store, owner = self.store, self.owner
        if out.state == "succeeded":
            ok = store.succeed(job.id, owner, detections=out.detections, output_bytes=size)
        elif out.state == "failed":
            ok = store.fail(job.id, owner, error=out.error or "failed", output_bytes=size)
        elif out.state == "cancelled":
            ok = store.cancelled(job.id, owner, output_bytes=size)
        elif out.state == "drain":
            ok = store.release(job.id, owner)
        else:
            ok = False
        fields = job_fields(job, runner=owner, state=out.state, attempt=job.attempts)
        if not ok:
            log.warning("job's lease was lost; its new runner finishes it", extra=fields)
            return
        self._observe(job, out, fields)

    def _observe(self, job: Job, out: Outcome, fields: dict[str, Any]) -> None:
        m, tenant = metrics(), {"tenant": job.tenant}
        state = "requeued" if out.state == "drain" else out.state
        m.finished.inc(tags={"state": state, **tenant})
        if state == "requeued":
            log.info("job requeued (runner draining)", extra=fields)
            return
        done = self.store.get(job.id)
        if done is not None and done.finished_at is not None:
            m.duration.observe(done.finished_at - done.created_at, tags={"state": state})
        if state == "succeeded":
            if out.megapixels > 0:  # a Ray counter refuses 0
                m.megapixels.inc(out.megapixels, tags=tenant)
            rate = out.megapixels / max(out.seconds, 1e-6)
            m.set(m.megapixels_per_s, rate, {"slot": self.slot})
            log.info("job succeeded", extra={**fields, "detections": out.detections})
        elif state == "failed":
            m.errors.inc(tags={"type": out.error_type or "internal", **tenant})
            log.info("job failed", extra={**fields, "error": out.error})
        else:
            log.info("job cancelled", extra=fields)

    def serve(self, stop: threading.Event, *, idle_s: float = 0.25) -> None:
        """Run jobs until ``stop`` is set, waiting ``idle_s`` between polls of an empty queue."""
        while not stop.is_set():
            try:
                ran = self.run_one()
            except SQLAlchemyError as exc:  # the store is away: wait, then poll again
                log.warning("job store unavailable: %s", exc)
                ran = None
            if ran is None:
                stop.wait(idle_s)
