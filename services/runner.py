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
from typing import Any

from geo_hires.config import ReadConfig
from geo_hires.errors import GeoHiresError
from geo_hires.models.bundle import Detectors, load_bundle
from geo_hires.models.registry import ModelCard
from geo_hires.pipeline import DetectConfig, Executor, run_detect
from geo_hires.zoom import ZoomConfig
from services.store import Job, JobStore

__all__ = [
    "JobCancelled",
    "JobFiles",
    "JobRunner",
    "detect_config",
    "job_read_config",
    "scene_read_config",
]

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


def scene_read_config(max_scene_pixels: int = ReadConfig.max_scene_pixels) -> ReadConfig:
    """How the service opens every scene: the GTiff driver only, within a pixel budget, and a
    STAC item's asset only from the item's own folder."""
    return ReadConfig(driver="GTiff", max_scene_pixels=max_scene_pixels, stac_confine=True)


def job_read_config(base: ReadConfig, options: dict[str, Any]) -> ReadConfig:
    """``base`` with the job's band and STAC asset choice (validated at submit)."""
    bands = options.get("bands")
    return dataclasses.replace(
        base, bands=None if bands is None else tuple(bands), stac_asset=options.get("asset")
    )


def detect_config(options: dict[str, Any]) -> DetectConfig:
    """The library's config for a job's (already validated) options."""
    levels = options.get("levels")
    zoom = ZoomConfig(mode=options.get("zoom", "all"), budget=options.get("budget"))
    return DetectConfig(
        core=int(options.get("block", 1024)),
        score_threshold=options.get("score_threshold"),
        levels=tuple(levels) if levels else None,
        zoom=zoom,
    )


@dataclasses.dataclass(kw_only=True)
class JobRunner:
    """Runs queued jobs from ``store`` (see the module docstring)."""

    store: JobStore
    data_dir: Path
    executor: Executor | None = None
    read_config: ReadConfig = dataclasses.field(default_factory=scene_read_config)
    _models: dict[str, tuple[Detectors, ModelCard]] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _model(self, name: str) -> tuple[Detectors, ModelCard]:
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

        try:
            result = run_detect(
                job.scene_path,
                files.geojson,
                model=self._model(str(job.options.get("model", "aircraft_lsn"))),
                gpkg=files.gpkg,
                quicklook=files.quicklook,
                config=detect_config(job.options),
                read_config=job_read_config(self.read_config, job.options),
                executor=self.executor,
                resume=True,
                on_progress=on_progress,
                aoi=job.options.get("aoi"),
            )
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
