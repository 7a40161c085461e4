"""The job runner under leases, in this process (local executor): a runner whose lease is taken
stops and records nothing, a draining runner requeues its job, and the next runner resumes
it from the journal, each unit computed once, to the CLI's bytes (the runner's steps one at
a time: test_runner_steps.py)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from geo_hires_service.observe import log, metrics
from geo_hires_service.runner import JobFiles, JobRunner
from geo_hires_service.store import JobState, JobStore

from geo_hires.cli import main
from geo_hires.detect.executors import LocalExecutor
from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.service.test_store import Clock
from tests.waiting import wait_for

# the lightweight scanner: what is tested is the runner, whatever model a job names
OPTIONS = {"model": "aircraft_lsn", "block": 128, "score_threshold": 0.05}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "field.tif"
    write_synthetic(path, SynthSpec(width=1400, height=1100, seed=17, density=Density.DENSE))
    return path


@pytest.fixture(scope="module")
def expected(scene, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("cli") / "field.geojson"
    args = ["--model", "aircraft_lsn", "--block", "128", "--score-threshold", "0.05"]
    assert main(["detect", str(scene), "-o", str(out), *args]) == 0
    return out.read_bytes()


def _store_and_job(tmp_path: Path, scene: Path, clock=time.time) -> tuple[JobStore, str]:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    job, _ = store.submit(
        tenant="alice", scene_path=str(scene), scene_name=scene.name, options=OPTIONS
    )
    return store, job.id


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def _units(caplog, job_id: str) -> list[tuple[str, str]]:
    """(runner, unit) of every "unit done" line logged for the job."""
    return [
        (r.runner, r.unit)
        for r in caplog.records
        if r.getMessage() == "unit done" and getattr(r, "job", None) == job_id
    ]


def test_a_runner_whose_lease_is_taken_stops_and_records_nothing(tmp_path, scene, expected, caplog):
    caplog.set_level(logging.DEBUG, logger="ray.serve.geo_hires")
    clock = Clock(time.time())
    store, job_id = _store_and_job(tmp_path, scene, clock)
    a = JobRunner(store=store, data_dir=tmp_path, owner="A", lease_s=3600)  # no renewal due
    stalled = _in_thread(a.run_one)
    wait_for(lambda: store.get(job_id).units_done >= 2, timeout=120, every=0.02)
    clock.now += 3601  # to the store, A has been silent longer than its lease
    taken = store.claim("B", lease_s=30)  # B takes the job over
    assert taken.id == job_id and taken.attempts == 2
    stalled.join(60)  # A finds out at its next unit and stops
    assert not stalled.is_alive()
    now = store.get(job_id)
    assert now.state is JobState.RUNNING and now.lease_owner == "B"  # A wrote no outcome
    assert not JobFiles.of(tmp_path, now).geojson.exists()
    b = JobRunner(store=store, data_dir=tmp_path, owner="B", lease_s=30)
    done = b.run(taken)
    assert done.state is JobState.SUCCEEDED and done.attempts == 2
    assert JobFiles.of(tmp_path, done).geojson.read_bytes() == expected
    units = _units(caplog, job_id)
    keys = [u for _, u in units]
    assert len(keys) == done.units_total and len(set(keys)) == len(keys)  # each unit once
    assert {r for r, _ in units} == {"A", "B"}
    store.close()


def test_a_draining_runner_requeues_its_job_and_the_next_one_resumes(
    tmp_path, scene, expected, caplog
):
    caplog.set_level(logging.DEBUG, logger="ray.serve.geo_hires")
    store, job_id = _store_and_job(tmp_path, scene)
    a = JobRunner(store=store, data_dir=tmp_path, owner="A", lease_s=30)
    stop = threading.Event()
    serving = _in_thread(lambda: a.serve(stop, idle_s=0.05))
    wait_for(lambda: store.get(job_id).units_done >= 2, timeout=120, every=0.02)
    a.draining.set()  # what Serve's graceful shutdown does
    wait_for(lambda: store.get(job_id).state is JobState.QUEUED, timeout=60, every=0.02)
    assert a.run_one() is None  # a draining runner claims nothing
    stop.set()
    serving.join(30)
    back = store.get(job_id)
    assert back.lease_owner is None and back.attempts == 1
    assert 2 <= back.units_done < back.units_total
    b = JobRunner(store=store, data_dir=tmp_path, owner="B", lease_s=30)
    done = b.run_one()
    assert done.id == job_id and done.state is JobState.SUCCEEDED and done.attempts == 2
    assert JobFiles.of(tmp_path, done).geojson.read_bytes() == expected
    units = _units(caplog, job_id)
    by_a = [u for r, u in units if r == "A"]
    assert len(by_a) >= back.units_done  # what A journalled, B did not compute again
    keys = [u for _, u in units]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == done.units_total
    store.close()


class _Raising:
    """An executor whose units raise ``exc`` (a bug, a full disk…): the runner must fail the
    job, not die."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name):
        return getattr(LocalExecutor(), name)

    def run_units(self, *args, **kw):
        raise self.exc


def test_the_runner_succeeds_fails_and_cancels_jobs_in_the_store(tmp_path, scene, caplog):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    data = tmp_path / "data"
    runner = JobRunner(store=store, data_dir=data, owner="R")
    assert runner.run_one() is None  # nothing queued

    def submit(path, **options):
        job, _ = store.submit(tenant="t", scene_path=str(path), scene_name="mine.tif",
                              options={**OPTIONS, "block": 256, **options})  # fmt: skip
        return job

    ok = submit(scene, score_threshold=0.2)
    with caplog.at_level(logging.INFO, logger=log.name):
        done = runner.run_one()
    assert done is not None and done.id == ok.id and done.state is JobState.SUCCEEDED
    files = JobFiles.of(data, done)
    assert files.geojson == data / "jobs" / ok.id / "out" / "mine.geojson"
    assert [p.name for p in (files.gpkg, files.quicklook, files.stac, files.coverage)] == [
        "mine.gpkg", "mine.png", "mine.stac.json", "mine.coverage.geojson"]  # fmt: skip
    assert all(p.is_file() for p in (files.gpkg, files.quicklook, files.stac, files.coverage))
    assert done.detections == len(json.loads(files.geojson.read_text())["features"]) > 0
    assert done.units_done == done.units_total > 0 and done.output_bytes == files.size() > 0
    rate = metrics()._values[("geo_hires_megapixels_per_second", (("slot", "0"),))][1]
    assert 0.01 < rate < 1000  # this job's megapixels over its seconds
    assert list(runner._models) == ["aircraft_lsn"]  # the job ran on the runner's own copy
    model = runner._model("aircraft_lsn")
    assert model.name == "aircraft_lsn" and runner._model("aircraft_lsn") is model  # loaded once
    started = [r for r in caplog.records if r.getMessage() == "job started"]
    assert [(r.job, r.runner, r.attempt) for r in started] == [(ok.id, "R", 1)]
    # a library error fails the job with the scene's name, never the server's path
    submit(tmp_path / "gone.tif")
    failed = runner.run_one()
    assert failed is not None and failed.state is JobState.FAILED and failed.error
    assert "mine.tif" in failed.error and str(tmp_path) not in failed.error
    # a bug fails the job, not the runner
    submit(scene)
    broken = JobRunner(
        store=store, data_dir=data, owner="R", executor=_Raising(ValueError("a bug"))
    )
    with caplog.at_level(logging.ERROR, logger=log.name):
        crashed = broken.run_one()
    assert crashed is not None and crashed.state is JobState.FAILED
    assert crashed.error == "internal error (ValueError); see the service log"
    logged = [r for r in caplog.records if getattr(r, "job", None) == crashed.id]
    assert [r.getMessage() for r in logged] == ["job crashed"] and logged[0].exc_info  # traceback
    assert logged[0].runner == "R"
    # a cancel asked for while the job runs stops it at its first progress report
    asked = submit(scene)
    running = store.claim("R", lease_s=60)
    assert running is not None and running.id == asked.id
    store.cancel(asked.id, tenant="t")
    stopped = runner.run(running)
    assert stopped is not None and stopped.state is JobState.CANCELLED
    assert stopped.units_done == 0 < stopped.units_total  # the report was recorded
    assert not JobFiles.of(data, stopped).geojson.exists()
    assert stopped.output_bytes == JobFiles.of(data, stopped).size() > 0  # its journal
    assert crashed.output_bytes == JobFiles.of(data, crashed).size() > 0
    store.close()


def test_the_runner_renews_its_lease_while_a_job_runs(tmp_path, scene, expected):
    from geo_hires_service.runner import Stop

    store, job_id = _store_and_job(tmp_path, scene)
    a = JobRunner(store=store, data_dir=tmp_path, owner="A", lease_s=0.8)  # a beat every 0.2 s
    running = _in_thread(a.run_one)
    expiries: list[float] = []
    while running.is_alive():
        job = store.get(job_id)
        if job.state is JobState.RUNNING and job.lease_expires is not None:
            expiries.append(job.lease_expires)
        time.sleep(0.02)
    done = store.get(job_id)
    assert done.state is JobState.SUCCEEDED and done.lease_owner is None
    assert len(set(expiries)) >= 2 and expiries == sorted(expiries)  # renewed, never shortened
    assert JobFiles.of(tmp_path, done).geojson.read_bytes() == expected
    assert str(Stop("drain")) == Stop("drain").reason == "drain"
    store.close()
