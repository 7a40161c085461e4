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
    first = store.claim()
    assert first.id == a.id and first.state is JobState.RUNNING and first.attempts == 1
    assert store.progress(a.id, done=3, total=7) and store.get(a.id).units_done == 3
    assert store.succeed(a.id, detections=12)
    assert not store.succeed(a.id, detections=99)  # finished jobs do not change
    done = store.get(a.id)
    assert (done.state, done.detections, done.units_total) == (JobState.SUCCEEDED, 12, 7)
    second = store.claim()
    assert second.id == b.id and store.claim() is None  # c was cancelled
    asked = store.cancel(b.id, tenant="alice")
    assert asked.state is JobState.RUNNING and asked.cancel_requested  # the runner stops it
    assert store.cancelled(b.id) and store.get(b.id).state is JobState.CANCELLED
    assert store.get(b.id).finished_at is not None
    d, _ = _submit(store)
    store.claim()
    assert store.fail(d.id, error="boom") and store.get(d.id).error == "boom"
    assert store.get(d.id).finished_at is not None and done.finished_at is not None
    store.close()


def test_restart_finds_every_job_and_requeues_running_ones(url):
    store = JobStore(url)
    a, _ = _submit(store)
    b, _ = _submit(store)
    c, _ = _submit(store)
    d, _ = _submit(store)
    for _ in range(3):
        store.claim()  # a, b and c run; d waits
    store.cancel(b.id, tenant="alice")  # running, cancel asked: cancelled after the restart
    store.cancel(c.id, tenant="alice")  # asked too late: it finished, and stays finished
    store.succeed(c.id, detections=1)
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
    again = reborn.claim()
    assert again.id == a.id and again.attempts == 2
    reborn.close()


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
        while (job := store.claim()) is not None:
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
