"""The service's job store on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading

import pytest
from geo_hires_service.store import JobState, JobStore, QueueFullError

from tests.service.postgres import missing_reason, postgres_server


@pytest.fixture(scope="module")
def pg_url():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    base = request.getfixturevalue("pg_url")
    # a fresh database per test, so tests do not see each other's jobs
    import sqlalchemy as sa

    name = f"t{abs(hash(request.node.nodeid)) % 10**9}"
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return base.replace("/postgres?", f"/{name}?")


def _submit(store, tenant="alice", **kw):
    return store.submit(
        tenant=tenant, scene_path=f"/data/{tenant}.tif", scene_name="s.tif", options={}, **kw
    )


def test_jobs_are_private_idempotent_and_paged(url):
    store = JobStore(url)
    job, created = _submit(store, idempotency_key="k1")
    again, created2 = _submit(store, idempotency_key="k1")
    second, created4 = _submit(store, idempotency_key="k2")
    assert created4 and second.id != job.id  # another key is another job
    other, created3 = _submit(store, tenant="bob", idempotency_key="k1")
    assert created and not created2 and created3
    assert again.id == job.id != other.id and job.state is JobState.QUEUED
    assert store.get(job.id, tenant="bob") is None and store.get(job.id, tenant="alice") == job
    for _ in range(3):
        _submit(store)
    assert store.list_jobs("alice", state=JobState.SUCCEEDED) == []  # by state, in the store
    assert [j.id for j in store.list_jobs("alice", state=JobState.QUEUED)][-1] == job.id
    page1 = store.list_jobs("alice", limit=3)
    page2 = store.list_jobs("alice", limit=3, offset=3)
    assert len(page1) == 3 and len(page2) == 2
    ids = [j.id for j in page1 + page2]
    assert len(set(ids)) == 5 and other.id not in ids
    assert [j.created_at for j in page1 + page2] == sorted(
        (j.created_at for j in page1 + page2), reverse=True
    )
    store.close()


def test_lifecycle_and_cancel(url):
    store = JobStore(url)
    a, _ = _submit(store)
    b, _ = _submit(store)
    c, _ = _submit(store)
    assert store.cancel(c.id, tenant="bob") is None  # not bob's
    gone = store.cancel(c.id, tenant="alice")
    assert gone.state is JobState.CANCELLED and gone.finished_at is not None  # queued: at once
    first = store.claim("r1", lease_s=60)
    assert first.id == a.id and first.state is JobState.RUNNING and first.attempts == 1
    assert first.lease_owner == "r1" and first.lease_expires > first.started_at
    assert store.progress(a.id, "r1", done=3, total=7) and store.get(a.id).units_done == 3
    assert store.succeed(a.id, "r1", detections=12, output_bytes=500)
    assert not store.succeed(a.id, "r1", detections=99)  # finished jobs do not change
    done = store.get(a.id)
    assert (done.state, done.detections, done.units_total) == (JobState.SUCCEEDED, 12, 7)
    assert done.lease_owner is None and store.usage("alice") == 500
    second = store.claim("r1", lease_s=60)
    assert second.id == b.id and store.claim("r1", lease_s=60) is None  # c was cancelled
    asked = store.cancel(b.id, tenant="alice")
    assert asked.state is JobState.RUNNING and asked.cancel_requested  # the runner stops it
    assert store.cancelled(b.id, "r1") and store.get(b.id).state is JobState.CANCELLED
    assert store.get(b.id).finished_at is not None
    d, _ = _submit(store)
    store.claim("r1", lease_s=60)
    assert not store.fail(d.id, "r2", error="not mine")  # only the lease's owner records
    assert store.fail(d.id, "r1", error="boom") and store.get(d.id).error == "boom"
    assert store.get(d.id).finished_at is not None and done.finished_at is not None
    store.close()


def test_the_quota_is_checked_as_the_job_is_recorded_under_one_lock(url):
    """The room an upload takes is re-checked in the transaction that records it; on
    PostgreSQL that transaction first takes an advisory lock every submission takes, so
    ingress replicas in other processes cannot both take the last room."""
    import threading

    import sqlalchemy as sa
    from geo_hires_service.security import Rejected
    from geo_hires_service.store import SUBMIT_LOCK

    store = JobStore(url)
    _submit(store, scene_bytes=600, quota_bytes=1000)
    with pytest.raises(Rejected, match="exceed your storage quota of 1,000 bytes") as refused:
        _submit(store, scene_bytes=500, quota_bytes=1000)
    assert refused.value.status == 413 and store.usage("alice") == 600
    _submit(store, scene_bytes=400, quota_bytes=1000)  # exactly full is allowed
    _submit(store, "bob", scene_bytes=900, quota_bytes=1000)  # a quota is per tenant
    if url.startswith("postgresql"):
        other = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with other.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SUBMIT_LOCK})
            done = threading.Event()
            t = threading.Thread(target=lambda: (_submit(store, "carol"), done.set()))
            t.start()
            assert not done.wait(1.0)  # another process's submission holds the lock
        t.join(30)  # its transaction ended: the lock is free
        assert done.is_set()
        other.dispose()
    store.close()


def test_restart_leaves_a_job_whose_runner_still_lives_to_it(tmp_path):
    """SQLite: a successor replica's recover() must not requeue the job of a replica that is
    still draining (both would run it); a dead runner's job is requeued at once."""
    import subprocess
    import sys
    import time

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    a, _ = _submit(store)
    b, _ = _submit(store)
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        store.claim(f"runner@node/{living.pid}/aa", lease_s=2)
        store.claim(f"runner@node/{gone.pid}/bb", lease_s=2)
        assert store.recover() == 1
        assert store.get(a.id).state is JobState.RUNNING  # its runner lives: left to it
        assert store.get(b.id).state is JobState.QUEUED
        assert store.claim("r2", lease_s=60).id == b.id
        time.sleep(2.1)  # the living runner stopped renewing (hung): its lease expires
        taken = store.claim("r3", lease_s=60)
        assert taken.id == a.id and taken.attempts == 2
    finally:
        living.kill()
        living.wait()
        store.close()


def test_restart_finds_every_job_and_requeues_running_ones(url):
    store = JobStore(url)
    a, _ = _submit(store)
    b, _ = _submit(store)
    c, _ = _submit(store)
    d, _ = _submit(store)
    for _ in range(3):
        store.claim("r1", lease_s=3600)  # a, b and c run; d waits
    store.cancel(b.id, tenant="alice")  # running, cancel asked: cancelled after the restart
    store.cancel(c.id, tenant="alice")  # asked too late: it finished, and stays finished
    store.succeed(c.id, "r1", detections=1)
    store.close()
    reborn = JobStore(url)
    assert reborn.recover() == 1
    states = {j.id: j.state for j in reborn.list_jobs("alice")}
    assert states == {
        a.id: JobState.QUEUED,
        b.id: JobState.CANCELLED,
        c.id: JobState.SUCCEEDED,
        d.id: JobState.QUEUED,
    }
    assert reborn.get(b.id).finished_at is not None
    again = reborn.claim("r2", lease_s=60)  # no lease to wait for: requeued by recover()
    assert again.id == a.id and again.attempts == 2
    reborn.close()
    for attempts, state in ((3, JobState.QUEUED), (3, JobState.FAILED)):  # a job that kills
        reborn = JobStore(url)  # the service each time it runs: failed, not a loop
        reborn.recover()
        now = reborn.get(a.id)
        assert now.state is state, now
        if state is JobState.QUEUED:
            assert reborn.claim("r3", lease_s=60).attempts == attempts
        reborn.close()
    assert "the service stopped 3 times while the job ran" in now.error


def test_limits_refuse_with_a_retry_hint(url):
    store = JobStore(url)
    _submit(store, max_active_per_tenant=2)
    _submit(store, max_active_per_tenant=2)
    with pytest.raises(QueueFullError, match="limit 2") as err:
        _submit(store, max_active_per_tenant=2)
    assert err.value.retry_after_s > 0
    _submit(store, tenant="bob", max_active=3)
    with pytest.raises(QueueFullError, match="3 jobs queued or running"):
        _submit(store, tenant="carol", max_active=3)
    store.close()


def test_concurrent_runners_never_claim_one_job_twice(url):
    stores = [JobStore(url) for _ in range(4)]
    ids = {_submit(stores[0])[0].id for _ in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def runner(store):
        while (job := store.claim(f"r{id(store)}", lease_s=60)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=runner, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)  # each exactly once
    for s in stores:
        s.close()


class Clock:
    """A clock the test moves (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_expired_lease_moves_the_job_to_another_runner(url):
    clock = Clock()
    store = JobStore(url, clock=clock)
    a, _ = _submit(store)
    assert store.claim("A", lease_s=30).id == a.id
    assert store.claim("B", lease_s=30) is None  # A holds it
    clock.now += 20
    assert store.renew(a.id, "A", lease_s=30)  # until +50
    assert not store.renew(a.id, "B", lease_s=30)
    clock.now += 29
    assert store.claim("B", lease_s=30) is None  # renewed: still A's
    clock.now += 2  # A's node died: no renewal since
    taken = store.claim("B", lease_s=30)
    assert taken.id == a.id and taken.lease_owner == "B" and taken.attempts == 2
    assert taken.started_at == clock.now
    # A, back from a stall, can no longer write anything about the job
    assert not store.progress(a.id, "A", done=9, total=9)
    assert not store.succeed(a.id, "A", detections=1)
    assert not store.renew(a.id, "A", lease_s=30) and not store.release(a.id, "A")
    assert store.progress(a.id, "B", done=2, total=9) and store.get(a.id).units_done == 2
    assert store.succeed(a.id, "B", detections=5)
    assert store.get(a.id).detections == 5
    store.close()


def test_what_clients_send_beyond_the_columns_is_a_miss_or_dropped_never_a_database_error(url):
    store = JobStore(url)
    job, _ = store.submit(tenant="alice", scene_path="/d/x.tif", scene_name="n" * 300 + ".tif",
                          options={}, request_id="r" * 250)  # fmt: skip
    got = store.get(job.id)
    assert got.request_id is None and got.scene_name == ("n" * 300)[:255]
    assert store.submit(tenant="alice", scene_path="/d/x.tif", scene_name="x.tif", options={},
                        request_id="ok-1")[0].request_id == "ok-1"  # fmt: skip
    for bad in ("a\x00b", job.id.upper(), job.id + "0", "", "../" + job.id):
        assert store.get(bad) is None and store.cancel(bad, tenant="alice") is None, bad
    store.close()


def test_a_cancel_is_not_lost_to_a_runner_draining_in_the_middle_of_it(url, monkeypatch):
    store = JobStore(url)
    job, _ = _submit(store)
    store.claim("r1", lease_s=60)
    update, calls = store._update, []

    def racing(job_id, *where, **values):
        changed = update(job_id, *where, **values)
        if values.get("lease_owner", "") is None:  # the release itself
            return changed
        calls.append(changed)
        if len(calls) == 1:  # between the queued and the running update: the runner drains
            assert store.release(job.id, "r1")
        return changed

    monkeypatch.setattr(store, "_update", racing)
    assert store.cancel(job.id, tenant="alice").state is JobState.CANCELLED
    assert calls[:2] == [False, False]  # neither update saw the job in its state at first
    store.close()


def test_expired_leases_of_cancelled_and_doomed_jobs_are_not_retried(url):
    clock = Clock()
    store = JobStore(url, clock=clock)
    doomed, _ = _submit(store)
    clock.now += 1
    stopped, _ = _submit(store)
    for attempt in range(1, store.max_attempts + 1):
        assert store.claim(f"r{attempt}", lease_s=10).id == doomed.id
        clock.now += 11  # its runner dies every time
    assert store.claim("r9", lease_s=10).id == stopped.id
    store.cancel(stopped.id, tenant="alice")
    clock.now += 11  # died with a cancel asked
    assert store.claim("r10", lease_s=10) is None
    failed, cancelled = store.get(doomed.id), store.get(stopped.id)
    assert failed.state is JobState.FAILED and "lost 3 times" in failed.error
    assert failed.attempts == 3 and failed.lease_owner is None
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at == clock.now
    store.close()


def test_a_released_job_is_queued_again_for_any_runner(url):
    store = JobStore(url)
    a, _ = _submit(store)
    store.claim("A", lease_s=60)
    assert store.progress(a.id, "A", done=4, total=10)
    assert store.release(a.id, "A")
    back = store.get(a.id)
    assert back.state is JobState.QUEUED and back.lease_owner is None and back.units_done == 4
    again = store.claim("B", lease_s=60)
    assert again.id == a.id and again.attempts == 2
    store.close()


def test_retention_queries_and_usage(url):
    clock = Clock()
    store = JobStore(url, clock=clock)
    old, _ = _submit(store, scene_bytes=1000)
    store.claim("r", lease_s=60)
    store.succeed(old.id, "r", detections=0, output_bytes=234)
    clock.now += 100
    new, _ = _submit(store, scene_bytes=10)
    assert store.usage("alice") == 1244 and store.usage("bob") == 0
    assert store.counts() == {("succeeded", "alice"): 1, ("queued", "alice"): 1}
    assert [j.id for j in store.finished_before(clock.now - 50)] == [old.id]
    assert store.finished_before(clock.now - 150) == []
    assert not store.delete(new.id)  # not finished
    assert not store.delete(old.id, tenant="bob")
    assert not store.delete(old.id, before=clock.now - 150)  # not old enough
    assert store.delete(old.id, before=clock.now - 50) and not store.delete(old.id)
    assert store.get(old.id) is None and store.usage("alice") == 10
    assert store.refers_to("/data/") and not store.refers_to("/data/alice.tif/")
    store.close()


def test_a_store_of_the_previous_release_gains_the_new_columns(tmp_path):
    import sqlalchemy as sa

    j1 = "0123456789abcdef0123456789abcdef"  # a job id as every release made them
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as c:  # the jobs table as the first release made it
        c.execute(sa.text(
            "CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, tenant VARCHAR(64), "
            "idempotency_key VARCHAR(200), state VARCHAR(16), scene_path TEXT, "
            "scene_name VARCHAR(255), options TEXT, units_done INTEGER, units_total INTEGER, "
            "detections INTEGER, error TEXT, cancel_requested BOOLEAN, attempts INTEGER, "
            "created_at FLOAT, started_at FLOAT, finished_at FLOAT)"
        ))  # fmt: skip
        c.execute(sa.text(
            f"INSERT INTO jobs VALUES ('{j1}', 'alice', NULL, 'running', '/s.tif', 's.tif', "
            "'{}', 1, 4, NULL, NULL, 0, 1, 1.0, 2.0, NULL)"
        ))  # fmt: skip
    engine.dispose()
    store = JobStore(f"sqlite:///{path}")
    job = store.get(j1)
    assert job.lease_owner is None and job.scene_bytes == 0 and store.usage("alice") == 0
    assert store.recover() == 1 and store.claim("r", lease_s=5).id == j1
    store.close()
