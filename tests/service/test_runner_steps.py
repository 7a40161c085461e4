"""The runner's steps, one at a time: a failed job's one-line error, the heartbeat and the poll
loop with the store away, the progress callback, each way an attempt ends, and how an outcome
is recorded and logged (whole jobs under leases: test_runner.py)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import types

import pytest
from geo_hires_service.observe import log, metrics
from geo_hires_service.runner import JobRunner
from geo_hires_service.store import JobState, JobStore

from geo_hires.scene import SynthSpec, write_synthetic
from tests.service.test_runner import _in_thread, _Raising, _store_and_job
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes") / "small.tif"
    write_synthetic(path, SynthSpec(width=600, height=500, seed=18))
    return path


def test_a_failed_jobs_error_is_one_line_with_the_scenes_name_and_the_actors_own_error(tmp_path):
    from geo_hires_service.runner import one_line, unwrapped

    from geo_hires.errors import ConfigError, SceneReadError

    store, job_id = _store_and_job(tmp_path, tmp_path / "srv" / "jobs" / "abc" / "upload.tif")
    job = store.get(job_id)
    assert job is not None
    inner = ConfigError("levels: no level 'nope'")
    wrapped = RuntimeError("RayTaskError(ConfigError): traceback …")
    wrapped.cause = inner  # what Ray raises for an error on an actor
    assert unwrapped(wrapped) is inner
    odd = RuntimeError("no cause")
    odd.cause = "a string"
    assert unwrapped(odd) is odd and unwrapped(inner) is inner
    assert one_line(wrapped, job) == "levels: no level 'nope'"
    gdal = SceneReadError(
        f"{job.scene_path}: truncated or corrupt tile\n   at columns 0-255,\trows 3"
    )
    assert one_line(gdal, job) == "upload.tif: truncated or corrupt tile at columns 0-255, rows 3"
    assert one_line(ValueError("x" * 5000), job) == "x" * 1000
    store.close()


class _Away:
    """A store whose database is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    def _down(self, *_a, **_k):
        from sqlalchemy.exc import OperationalError

        self.calls += 1
        raise OperationalError("SELECT 1", {}, ConnectionError("connection refused"))

    renew = claim = _down


class _GoesAway(_Away):
    """A store that renews ``ok`` times, then is unreachable."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def renew(self, *_a, **_k):
        if self.ok:
            self.ok -= 1
            return True
        return self._down()


def test_the_heartbeat_renews_the_lease_and_gives_up_only_when_the_store_stays_away(
    tmp_path, scene, caplog
):
    from geo_hires_service.runner import Heartbeat

    store, job_id = _store_and_job(tmp_path, scene)
    assert store.claim("R", lease_s=1.2) is not None
    with Heartbeat(store, job_id, "R", 1.2) as beat:
        time.sleep(3.0)  # 2.5 leases: the job would be claimable by now without renewals
        assert store.claim("other", lease_s=1.2) is None and not beat.lost.is_set()
    with Heartbeat(store, "not-this-runners", "R", 0.4) as beat:  # renew says no: lost at once
        assert beat.lost.wait(5)
    away = _Away()
    with caplog.at_level(logging.WARNING, logger=log.name), Heartbeat(away, job_id, "R", 3.0) as b:
        wait_for(lambda: away.calls >= 1, timeout=10, every=0.02)  # a renewal failed at 0.75 s
        time.sleep(0.3)
        assert not b.lost.is_set()  # it gives up only at 2.25 s, a beat before the lease ends
        assert b.lost.wait(10)
    assert any("cannot renew the lease" in r.getMessage() for r in caplog.records)
    store.close()


def test_serve_waits_between_polls_while_the_store_is_away_and_stops_when_told(tmp_path, caplog):
    away = _Away()
    runner = JobRunner(store=away, data_dir=tmp_path, owner="R")  # type: ignore[arg-type]
    stop = threading.Event()
    with caplog.at_level(logging.WARNING, logger=log.name):
        start = time.monotonic()
        t = _in_thread(lambda: runner.serve(stop, idle_s=0.1))
        wait_for(lambda: away.calls >= 4, timeout=30, every=0.02)  # it keeps polling
        elapsed = time.monotonic() - start
        stop.set()
        t.join(5)
    assert not t.is_alive() and elapsed >= 0.3  # 0.1 s between polls, not a busy loop
    assert any("job store unavailable: " in r.getMessage() and "refused" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_progress_names_each_computed_unit_and_publishes_this_attempts_rate(
    tmp_path, monkeypatch, caplog
):
    from geo_hires_service import runner as runner_module
    from geo_hires_service.runner import Heartbeat, Stop

    caplog.set_level(logging.DEBUG, logger=log.name)
    store, job_id = _store_and_job(tmp_path, tmp_path / "s.tif")
    job = store.claim("R", lease_s=60)
    now = [1000.0]
    # the runner module's clock only (time.monotonic itself serves every thread)
    monkeypatch.setattr(runner_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    runner = JobRunner(store=store, data_dir=tmp_path, owner="R", slot="7")
    beat = Heartbeat(store, job_id, "R", 60)  # not started: only its `lost` flag is read
    keyed: list[str] = []
    computed: list[int] = []  # what the units-computed counter is told
    monkeypatch.setattr(metrics().units, "inc", lambda n, tags: computed.append(n))
    on_progress = runner._progress(job, beat, keyed)
    rate = ("geo_hires_units_per_second", (("slot", "7"),))

    def step(done: int, at: float) -> None:
        now[0] = 1000.0 + at
        on_progress(done, 10)

    step(2, 0.0)  # resumed with 2 units journalled: nothing computed yet
    keyed.append("u3")
    step(3, 0.5)
    assert metrics()._values[rate][1] == 2.0  # 1 unit in 0.5 s
    step(3, 0.7)  # no new unit: nothing logged, the rate stands
    step(5, 1.0)  # a level starts with 2 units the journal holds: resumed, not computed
    assert metrics()._values[rate][1] == 2.0
    keyed.extend(["u6", "u6"])  # a retried unit is noted twice, counted once
    step(6, 2.0)
    assert metrics()._values[rate][1] == 1.0  # this attempt computed 2 units in 2 s
    done = [(r.unit, r.units_done) for r in caplog.records if r.getMessage() == "unit done"]
    assert done == [("u3", 3), ("u6", 6)] and store.get(job_id).units_done == 6
    resumed = [r.units for r in caplog.records if r.getMessage() == "units resumed"]
    assert resumed == [2, 2] and computed == [1, 1]
    for flag, reason in ((runner.draining, "drain"), (beat.lost, "lease")):
        flag.set()
        with pytest.raises(Stop) as stop:
            step(7, 2.5)
        assert stop.value.reason == reason
        flag.clear()
    store.cancel(job_id, tenant="alice")
    with pytest.raises(Stop) as stop:
        step(7, 2.5)
    assert stop.value.reason == "cancelled"
    store.close()


def test_each_way_an_attempt_ends_is_its_outcome(tmp_path, scene, caplog):
    import errno

    from geo_hires_service.runner import Heartbeat
    from geo_hires_service.schemas import scene_read_config

    def attempt(executor=None, read_config=None, path=scene, options=None, data_dir=tmp_path):
        folder = tmp_path / f"try{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        store, job_id = _store_and_job(folder, path)
        if options is not None:  # as a release that knew other options stored them
            store.close()
            with sqlite3.connect(folder / "jobs.db") as db:
                db.execute("UPDATE jobs SET options = ?", (json.dumps(options),))
            store = JobStore(f"sqlite:///{folder / 'jobs.db'}")
        job = store.claim("R", lease_s=60)
        runner = JobRunner(store=store, data_dir=data_dir, owner="R", executor=executor)
        if read_config is not None:
            runner.read_config = read_config
        with caplog.at_level(logging.ERROR, logger=log.name):
            out = runner._attempt(job, Heartbeat(store, job_id, "R", 60))
        store.close()
        return out

    full = attempt(_Raising(OSError(errno.ENOSPC, "No space left on device")))
    assert (full.state, full.error_type) == ("failed", "DiskFull")
    assert full.error == "the service's disk is full; retry later or ask its operator for room"
    denied = attempt(_Raising(PermissionError(errno.EACCES, "Permission denied")))
    assert (denied.state, denied.error_type) == ("failed", "internal")
    assert denied.error == "internal error (PermissionError); see the service log"
    gone = attempt(path=tmp_path / "gone.tif")
    assert (gone.state, gone.error_type) == ("failed", "SceneNotFoundError")
    small = attempt(read_config=scene_read_config(1000))  # the runner's own read limits
    assert (small.state, small.error_type) == ("failed", "SceneTooLargeError")
    assert "the budget of 1,000" in small.error
    stale = attempt(options={"model": "aircraft_lsn", "tiles": 3})  # the job fails, not the slot
    assert (stale.state, stale.error_type) == ("failed", "ConfigError")
    assert "unknown detect option 'tiles'" in stale.error
    (tmp_path / "a-file").write_text("")
    no_room = attempt(data_dir=tmp_path / "a-file")  # its folder cannot be made
    assert (no_room.state, no_room.error_type) == ("failed", "internal")


def test_an_outcome_is_written_only_under_the_lease_and_logged_with_the_job(tmp_path, caplog):
    from geo_hires_service.runner import Outcome

    caplog.set_level(logging.INFO, logger=log.name)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    runner = JobRunner(store=store, data_dir=tmp_path, owner="R", slot="5")

    def record(out: Outcome, owner: str = "R"):
        job, _ = store.submit(tenant="t", scene_path="/s/a.tif", scene_name="a.tif", options={})
        claimed = store.claim(owner, lease_s=60)
        assert claimed is not None and claimed.id == job.id
        caplog.clear()
        runner._record(claimed, out)
        (line,) = [r for r in caplog.records if getattr(r, "job", None) == job.id]
        assert (line.runner, line.state, line.attempt) == ("R", out.state, 1)
        return store.get(job.id), line

    ok, line = record(Outcome(state="succeeded", detections=3, megapixels=2.0, seconds=0.5))
    assert (ok.state, ok.detections, line.getMessage(), line.detections) == (
        JobState.SUCCEEDED, 3, "job succeeded", 3)  # fmt: skip
    assert metrics()._values[("geo_hires_megapixels_per_second", (("slot", "5"),))][1] == 4.0
    bad, line = record(Outcome(state="failed", error="boom", error_type="X"))
    assert (bad.state, bad.error, line.getMessage(), line.error) == (
        JobState.FAILED, "boom", "job failed", "boom")  # fmt: skip
    off, line = record(Outcome(state="cancelled"))
    assert (off.state, line.getMessage()) == (JobState.CANCELLED, "job cancelled")
    back, line = record(Outcome(state="drain"))
    assert (back.state, back.lease_owner, line.getMessage()) == (
        JobState.QUEUED, None, "job requeued (runner draining)")  # fmt: skip
    store.cancel(back.id, tenant="t")  # out of the queue
    # a cancel asked while a job's last steps ran is honoured, whatever the attempt's end
    for end in (Outcome(state="succeeded", detections=3), Outcome(state="failed", error="x")):
        job, _ = store.submit(tenant="t", scene_path="/s/a.tif", scene_name="a.tif", options={})
        claimed = store.claim("R", lease_s=60)
        assert claimed is not None and store.cancel(job.id, tenant="t").cancel_requested
        runner._record(claimed, end)
        assert store.get(job.id).state is JobState.CANCELLED
    lost = "job's lease was lost; its new runner finishes it"
    # the lease lost while running, or a job another runner holds now: nothing is written
    for out, holder in ((Outcome(state="lease"), "R"), (Outcome(state="succeeded"), "S")):
        kept, line = record(out, owner=holder)
        assert kept.state is JobState.RUNNING and line.getMessage() == lost
    store.close()


def test_a_lease_renewed_before_the_store_went_away_is_given_up_a_beat_before_it_ends():
    from geo_hires_service.runner import Heartbeat

    store = _GoesAway(ok=2)
    start = time.monotonic()
    with Heartbeat(store, "job", "R", 6.0) as beat:  # a beat every 1.5 s: renewed at 1.5 and 3
        assert beat.lost.wait(30)
        lost_after = time.monotonic() - start
    # valid until 9 s: given up at the first beat past 9 - 1.5 s, the one at 7.5 s (not at
    # once, not at the last beat before 9 - 1.2 s, not after the lease ran out)
    assert 6.8 < lost_after < 8.6 and store.calls >= 3


def test_the_keyed_executor_notes_each_unit_and_is_otherwise_the_executor_it_wraps():
    import copy

    from geo_hires_service.runner import _Keyed

    from geo_hires.detect.ray_executor import RayConfig, RayExecutor

    inner = RayExecutor(config=RayConfig(actors=3))
    keyed = _Keyed(inner=inner, note=print)
    assert keyed.config is inner.config and keyed.actors == []  # what run_detect may ask
    with pytest.raises(AttributeError, match="no_such_setting"):
        _ = keyed.no_such_setting
    assert copy.copy(keyed).inner is inner  # no endless lookup of `inner` while rebuilt
