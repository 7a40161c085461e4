"""What the service keeps, and for how long: finished jobs' files and records go after the
retention period (``--retain-days``); ``DELETE`` on a finished job removes them at once.

A job owns two folders of the data dir: ``jobs/<id>/`` (outputs, journal) and, for an upload,
``uploads/<random>/`` (the scene). The record goes first, so a client never sees a job whose
files are half gone; folders a crash left without a record (an upload that never became a job,
a job removed just before its folder) go once they are older than the retention period.
Several runner replicas may sweep at once: each record is removed by exactly one of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from geo_hires_service.observe import job_fields, log
from geo_hires_service.runner import JobFiles
from geo_hires_service.store import Job, JobStore

__all__ = ["remove_files", "sweep", "upload_folder"]

DAY_S = 86400.0


def upload_folder(scene_path: str | Path, data_dir: Path) -> Path | None:
    """The folder of an upload under ``data_dir/uploads`` (``None`` for a scene by path)."""
    folder = Path(scene_path).resolve().parent
    return folder if folder.parent == (data_dir / "uploads").resolve() else None


def remove_files(job: Job, data_dir: Path) -> None:
    """Remove a job's folders (its outputs and its upload; a scene by path is never touched)."""
    shutil.rmtree(JobFiles.of(data_dir, job).root, ignore_errors=True)
    upload = upload_folder(job.scene_path, data_dir)
    if upload is not None:
        shutil.rmtree(upload, ignore_errors=True)


def sweep(store: JobStore, data_dir: Path, *, retain_s: float) -> int:
    """Remove jobs that finished more than ``retain_s`` ago, then orphaned folders as old;
    returns how many jobs this call removed."""
    cutoff = store.clock() - retain_s
    removed = 0
    while batch := store.finished_before(cutoff):
        gone = [job for job in batch if store.delete(job.id, before=cutoff)]
        for job in gone:
            remove_files(job, data_dir)
            log.info("job expired", extra=job_fields(job))
        removed += len(gone)
        if not gone:  # another replica is sweeping the same jobs
            break
    _orphans(store, data_dir, cutoff)
    return removed


def _orphans(store: JobStore, data_dir: Path, cutoff: float) -> None:
    for folder in _older(data_dir / "uploads", cutoff):
        if not store.refers_to(f"{folder.resolve()}/"):
            shutil.rmtree(folder, ignore_errors=True)
    for folder in _older(data_dir / "jobs", cutoff):
        if store.get(folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)


def _older(parent: Path, cutoff: float) -> list[Path]:
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir() if p.is_dir() and p.stat().st_mtime < cutoff]
