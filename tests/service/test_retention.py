"""Retention with a clock the test moves: finished jobs' files and records go after the
retention period, nothing else does, and folders a crash orphaned go too."""

from __future__ import annotations

import os
from pathlib import Path

from geo_hires_service.app import ServeArgs
from geo_hires_service.retention import DAY_S, sweep
from geo_hires_service.runner import JobFiles
from geo_hires_service.store import JobState, JobStore

from tests.service.test_store import Clock


def _job(store: JobStore, data: Path, name: str, *, upload: bool) -> str:
    """A job with its files on disk: an upload folder (or a scene by path) and outputs."""
    if upload:
        scene = data / "uploads" / f"u-{name}" / f"{name}.tif"
    else:
        scene = data.parent / "scenes" / f"{name}.tif"
    scene.parent.mkdir(parents=True, exist_ok=True)
    scene.write_bytes(b"II*\x00" + b"x" * 100)
    job, _ = store.submit(
        tenant="alice", scene_path=str(scene), scene_name=scene.name, options={},
        scene_bytes=104 if upload else 0,
    )  # fmt: skip
    out = JobFiles.of(data, job).geojson
    out.parent.mkdir(parents=True)
    out.write_text("{}")
    return job.id


def _finish(store: JobStore, job_id: str, state: JobState) -> None:
    assert store.claim("r", lease_s=60).id == job_id
    if state is JobState.SUCCEEDED:
        assert store.succeed(job_id, "r", detections=0, output_bytes=2)
    elif state is JobState.FAILED:
        assert store.fail(job_id, "r", error="x")
    elif state is JobState.CANCELLED:
        assert store.cancelled(job_id, "r")


def test_sweep_removes_what_finished_before_the_retention_period(tmp_path):
    data = tmp_path / "data"
    clock = Clock()
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    jobs = {}
    for name, state in (
        ("old_ok", JobState.SUCCEEDED),
        ("old_failed", JobState.FAILED),
        ("old_cancelled", JobState.CANCELLED),
    ):
        jobs[name] = _job(store, data, name, upload=name != "old_failed")
        _finish(store, jobs[name], state)
        clock.now += 1
    jobs["old_running"] = _job(store, data, "old_running", upload=True)
    assert store.claim("r", lease_s=30 * DAY_S).id == jobs["old_running"]
    clock.now += 2 * DAY_S
    jobs["recent"] = _job(store, data, "recent", upload=True)
    _finish(store, jobs["recent"], JobState.SUCCEEDED)
    jobs["old_queued"] = _job(store, data, "old_queued", upload=True)  # waits, whatever its age
    orphan = data / "uploads" / "never-a-job"  # a crash between the upload and its record
    orphan.mkdir()
    (orphan / "x.tif").write_bytes(b"II*\x00")
    stale = data / "jobs" / "0123456789abcdef0123456789abcdef"
    stale.mkdir(parents=True)
    old = clock.now - 8 * DAY_S
    for folder in (orphan, stale):
        os.utime(folder, (old, old))
    fresh_orphan = data / "uploads" / "arriving-now"  # an upload still on its way in
    fresh_orphan.mkdir()
    os.utime(fresh_orphan, (clock.now, clock.now))
    os.utime(data / "uploads" / "u-old_queued", (old, old))  # old, but its job still waits

    clock.now += 5 * DAY_S + 60  # the three old ones finished 7 days and a minute ago
    assert sweep(store, data, retain_s=7 * DAY_S) == 3
    for name in ("old_ok", "old_failed", "old_cancelled"):
        assert store.get(jobs[name]) is None
        assert not (data / "jobs" / jobs[name]).exists()
        assert not (data / "uploads" / f"u-{name}").exists()
    assert (tmp_path / "scenes" / "old_failed.tif").is_file()  # a scene by path is not ours
    for name in ("old_running", "old_queued", "recent"):
        assert store.get(jobs[name]) is not None, name
        assert (data / "jobs" / jobs[name]).is_dir()
        assert (data / "uploads" / f"u-{name}").is_dir()
    assert not orphan.exists() and not stale.exists() and fresh_orphan.exists()
    assert sweep(store, data, retain_s=7 * DAY_S) == 0
    clock.now += 2 * DAY_S
    assert sweep(store, data, retain_s=7 * DAY_S) == 1  # now "recent" has had its 7 days
    assert store.get(jobs["recent"]) is None
    store.close()


def test_retain_days_defaults_to_7_and_the_serve_flag_sets_it(tmp_path):
    from geo_hires_service.cli import _serve_args

    from geo_hires.cli import _parser
    from tests.service.harness import TOKENS

    assert ServeArgs(data_dir=str(tmp_path)).retain_days == 7.0
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    args = _parser().parse_args(
        ["serve", "--data-dir", str(tmp_path), "--token-file", str(tokens),
         "--retain-days", "2.5", "--tenant-quota-mb", "0"]
    )  # fmt: skip
    sargs = _serve_args(args)
    assert sargs["retain_days"] == 2.5 and sargs["tenant_quota_bytes"] is None
    assert ServeArgs(**sargs).service_config().retain_days == 2.5
