"""The job runner: takes queued jobs from the store and runs them with the library, off the
request path.

One runner owns a number of slots (jobs at once); each slot claims the oldest queued job, runs
:func:`geo_hires.pipeline.run_detect` on the configured executor with ``resume=True`` (so a job
requeued after a crash continues from its journal), records progress after every unit, and
stops within one unit when the job's cancel flag is set. Outputs go to the job's folder in the
data dir; the GeoJSON is written under the scene's own file name, so its provenance equals what
``geo-hires detect`` writes for the same scene.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from geo_hires.config import ReadConfig
from geo_hires.detect.executors import Executor
from geo_hires.detect.options import DetectOptions
from geo_hires.errors import GeoHiresError
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline import Outputs, run_detect
from geo_hires_service.schemas import scene_read_config
from geo_hires_service.store import Job, JobStore

__all__ = ["JobCancelled", "JobFiles", "JobRunner"]

log = logging.getLogger("geo_hires.service")


class JobCancelled(Exception):
    """Raised from the progress callback to stop a job whose cancel was requested."""


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


@dataclasses.dataclass(kw_only=True)
class JobRunner:
    """Runs queued jobs from ``store`` (see the module docstring)."""

    store: JobStore
    data_dir: Path
    executor: Executor | None = None
    read_config: ReadConfig = dataclasses.field(default_factory=scene_read_config)
    _models: dict[str, Bundle] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _model(self, name: str) -> Bundle:
        with self._lock:
            if name not in self._models:
                self._models[name] = load_bundle(name)
            return self._models[name]

    def run_one(self) -> Job | None:
        """Claim and run the oldest queued job; ``None`` when the queue is empty."""
        job = self.store.claim()
        if job is None:
            return None
        self._execute(job)
        return self.store.get(job.id)

    def _execute(self, job: Job) -> None:
        files = JobFiles.of(self.data_dir, job)
        files.geojson.parent.mkdir(parents=True, exist_ok=True)

        def on_progress(done: int, total: int) -> None:
            self.store.progress(job.id, done=done, total=total)
            now = self.store.get(job.id)
            if now is None or now.cancel_requested:
                raise JobCancelled(job.id)

        options = DetectOptions.from_mapping(job.options)
        outputs = Outputs(files=(files.geojson, files.gpkg, files.stac), quicklook=files.quicklook,
                          coverage=files.coverage)  # fmt: skip
        try:
            result = run_detect(
                job.scene_path, outputs, options, bundle=self._model(options.model),
                read_config=self.read_config, executor=self.executor, resume=True,
                on_progress=on_progress,
            )  # fmt: skip
        except JobCancelled:
            self.store.cancelled(job.id)
            log.info("job %s cancelled", job.id)
        except GeoHiresError as exc:  # the client sees the scene's name, not server paths
            self.store.fail(job.id, error=str(exc).replace(job.scene_path, job.scene_name))
            log.info("job %s failed: %s", job.id, exc)
        except Exception as exc:  # a bug must fail the job, never the runner
            self.store.fail(job.id, error=f"internal error ({type(exc).__name__}); see the log")
            log.exception("job %s crashed", job.id)
        else:
            self.store.succeed(job.id, detections=len(result.detections))

    def serve(self, stop: threading.Event, *, idle_s: float = 0.25) -> None:
        """Run jobs until ``stop`` is set, waiting ``idle_s`` between polls of an empty queue."""
        while not stop.is_set():
            if self.run_one() is None:
                stop.wait(idle_s)
