"""The Serve application in this process: what ``build`` asks Serve for, the one-runner rule of
a SQLite store, and the runner deployment's housekeeping, drain and health check (its
``__init__`` needs a Ray replica and is covered by the ``geo-hires serve`` tests)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import ray
from geo_hires_service import app as app_module
from geo_hires_service.app import IngressReplica, RunnerReplica, ServeArgs, build
from geo_hires_service.observe import log, metrics
from geo_hires_service.retention import DAY_S
from geo_hires_service.store import JobState, JobStore

from geo_hires.errors import ConfigError
from tests.service.harness import TOKENS
from tests.service.test_store import Clock
from tests.waiting import wait_for


def _deployments(application):
    """(ingress, runner) deployments of a built application."""
    ingress = application._bound_deployment
    return ingress, ingress.init_args[1]._bound_deployment


def test_build_asks_serve_for_the_runners_replicas_cpus_drain_time_and_json_logs(tmp_path):
    args = {"data_dir": str(tmp_path), "db": "postgresql://db/jobs", "runner_replicas": 3,
            "runner_replicas_per_node": 2, "runner_cpus": 0.5, "drain_seconds": 40,
            "log_level": "DEBUG", "log_dir": str(tmp_path / "logs")}  # fmt: skip
    ingress, runner = _deployments(build(args))
    assert (ingress.name, runner.name) == ("ingress", "runner")
    assert runner.num_replicas == 3 and runner.ray_actor_options["num_cpus"] == 0.5
    assert runner._deployment_config.graceful_shutdown_timeout_s == 55  # drain + 15 s
    assert runner._replica_config.max_replicas_per_node == 2
    for d in (ingress, runner):
        logging_config = d.logging_config
        assert (logging_config["encoding"], logging_config["log_level"]) == ("JSON", "DEBUG")
        assert logging_config["logs_dir"] == str(tmp_path / "logs")
    assert ingress.init_args[0] == args and runner.init_args == (args,)
    ingress, runner = _deployments(build({"data_dir": str(tmp_path)}))
    assert runner.num_replicas == 1 and runner.ray_actor_options["num_cpus"] == 0.0
    assert runner._deployment_config.graceful_shutdown_timeout_s == 75  # 60 s + 15 s
    assert runner._replica_config.max_replicas_per_node is None
    assert ServeArgs(data_dir="d").logging_config() == {"encoding": "JSON", "log_level": "INFO"}


def test_several_runners_need_a_postgresql_store(tmp_path):
    many = ServeArgs(data_dir=str(tmp_path), runner_replicas=2)
    message = (
        "runner_replicas 2 needs a PostgreSQL store: a SQLite store serves one runner; "
        "give --db postgresql://… or one runner replica"
    )
    with pytest.raises(ConfigError) as refused:
        many.check_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert str(refused.value) == message
    with pytest.raises(ConfigError, match="needs a PostgreSQL store"):
        build({"data_dir": str(tmp_path), "runner_replicas": 2})  # before anything starts
    with pytest.raises(ConfigError, match="needs a PostgreSQL store"):
        RunnerReplica({"data_dir": str(tmp_path), "runner_replicas": 2})  # a replica too
    many.check_store("postgresql://db/jobs")
    ServeArgs(data_dir=str(tmp_path)).check_store("sqlite:///one.db")


def test_the_ingress_opens_its_data_dir_and_store_in_the_replica(tmp_path):
    data, tokens = tmp_path / "new" / "data", tmp_path / "tokens"
    tokens.write_text(f"{TOKENS[0]}\n")
    ingress = IngressReplica({"data_dir": str(data), "token_file": str(tokens)}, runner="bound")
    assert data.is_dir() and ingress.runner == "bound"
    assert ingress.config.data_dir == data and not ingress.store.shared
    assert (data / "jobs.db").is_file()  # the default store, in the data dir
    web = ingress.__serve_build_asgi_app__()
    assert web.state.config is ingress.config and web.state.store is ingress.store
    layers = [m.cls.__name__ for m in web.user_middleware]
    assert "RequestIds" not in layers and "Private" in layers  # ids: Serve's proxy gives them
    again = IngressReplica({"data_dir": str(data), "token_file": str(tokens)})
    assert again.config.data_dir == data  # a replica restarted on the same data dir
    again.store.close()
    ingress.store.close()


class _Store(JobStore):
    """A job store whose first ``counts`` fails (the database away for a moment)."""

    fail_counts = 1

    def counts(self) -> dict[tuple[str, str], int]:
        if self.fail_counts:
            self.fail_counts -= 1
            raise RuntimeError("database away")
        return super().counts()


def _runner(tmp_path: Path, store: JobStore, **args) -> object:
    """The runner deployment's object without its Ray-only ``__init__``."""
    r = object.__new__(RunnerReplica)
    r.args, r.store = ServeArgs(data_dir=str(tmp_path), **args), store
    r.stop, r.draining, r.runners = threading.Event(), threading.Event(), []
    return r


def test_housekeeping_publishes_counts_sweeps_and_outlives_a_failure(tmp_path, monkeypatch, caplog):
    clock = Clock(time.time())
    store = _Store(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    old, _ = store.submit(tenant="a", scene_path="/s/old.tif", scene_name="old.tif", options={})
    assert store.claim("r", lease_s=60) is not None and store.cancelled(old.id, "r")
    clock.now += 2 * DAY_S
    kept, _ = store.submit(tenant="a", scene_path="/s/kept.tif", scene_name="kept.tif", options={})
    assert store.claim("r", lease_s=60) is not None and store.cancelled(kept.id, "r")
    clock.now += 1 * DAY_S  # old finished three days ago, kept one
    store.submit(tenant="a", scene_path="/s/new.tif", scene_name="new.tif", options={})
    monkeypatch.setattr(app_module, "COUNTS_EVERY_S", 2)
    monkeypatch.setattr(app_module, "SWEEP_EVERY_S", 2)
    r = _runner(tmp_path, store, retain_days=2.0)
    with caplog.at_level(logging.ERROR, logger=log.name):
        t = threading.Thread(target=r._housekeeping, daemon=True)
        t.start()
        # tick 0 failed, tick 2 ran
        wait_for(
            lambda: store.get(old.id) is None and not store.fail_counts, timeout=30, every=0.02
        )
        r.stop.set()
        t.join(5)
    assert not t.is_alive()
    assert [rec.getMessage() for rec in caplog.records] == ["housekeeping failed"]
    published = {k: v for (k, v) in metrics()._values.items()}
    assert published[("geo_hires_queue_depth", ())][1] == 1.0
    assert published[("geo_hires_jobs", (("state", "queued"), ("tenant", "a")))][1] == 1.0
    assert [j.id for j in store.finished_before(clock.now)] == [kept.id]  # within 2 days
    assert store.counts() == {(JobState.QUEUED.value, "a"): 1, (JobState.CANCELLED.value, "a"): 1}
    store.close()


def test_stopping_drains_the_slots_within_the_drain_time_once(tmp_path, caplog):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    r = _runner(tmp_path, store, drain_seconds=0.2)
    RunnerReplica.__del__(object.__new__(RunnerReplica))  # never started: nothing
    saw_drain: list[bool] = []

    def slot() -> None:
        r.stop.wait()
        saw_drain.append(r.draining.is_set())

    stuck = threading.Event()
    r.threads = [
        threading.Thread(target=slot, daemon=True),
        threading.Thread(target=stuck.wait, daemon=True),
    ]
    r.runners = [type("R", (), {"owner": "runner@n/1/a"})()]
    for t in r.threads:
        t.start()
    r.check_health()  # both alive
    with caplog.at_level(logging.INFO, logger=log.name):
        start = time.monotonic()
        r.__del__()
        took = time.monotonic() - start
        r.__del__()  # drained already: returns at once
    assert saw_drain == [True] and r.stop.is_set()
    assert 0.2 <= took < 0.95  # waited for the stuck slot only until the drain time ran out
    stopped = [rec for rec in caplog.records if rec.getMessage() == "runner stopped"]
    assert len(stopped) == 1 and stopped[0].runners == ["runner@n/1/a"]
    with pytest.raises(RuntimeError, match="a job slot thread died"):
        r.check_health()  # the first slot has ended
    stuck.set()
    store.close()


@pytest.mark.ray
def test_the_runner_replica_requeues_starts_its_slots_and_drains(ray_local, tmp_path, caplog):
    from geo_hires_service.runner import JobRunner

    from geo_hires.detect.ray_executor import RayExecutor

    db = tmp_path / "jobs.db"
    store = JobStore(f"sqlite:///{db}")
    gone = str(tmp_path / "gone.tif")  # fails at once when a slot runs it: no actor starts
    job, _ = store.submit(tenant="a", scene_path=gone, scene_name="gone.tif", options={})
    assert store.claim("a-runner-that-died", lease_s=3600) is not None
    args = {"data_dir": str(tmp_path), "db": f"sqlite:///{db}", "runner_slots": 2,
            "actors": 3, "actor_cpus": 0.5, "actor_gpus": 0.25, "lease_seconds": 7,
            "max_scene_pixels": 1234, "drain_seconds": 5}  # fmt: skip
    with caplog.at_level(logging.INFO, logger=log.name):
        r = RunnerReplica(args)
        try:
            # run again
            wait_for(lambda: store.get(job.id).state is JobState.FAILED, timeout=60, every=0.02)
            assert store.get(job.id).attempts == 2
            assert len(r.threads) == 3 and all(t.is_alive() for t in r.threads)
            r.check_health()
        finally:
            r.__del__()
    assert not any(t.is_alive() for t in r.threads)
    slots: list[JobRunner] = r.runners
    assert [s.slot for s in slots] == ["0", "1"] and len({s.owner for s in slots}) == 2
    node = ray.get_runtime_context().get_node_id()
    assert all(s.owner.startswith(f"runner@{node}/") for s in slots)
    for s in slots:
        assert s.lease_s == 7 and s.draining is r.draining and s.store is r.store
        assert s.data_dir == tmp_path and s.read_config.max_scene_pixels == 1234
        assert isinstance(s.executor, RayExecutor)
        c = s.executor.config
        assert (c.address, c.actors, c.num_cpus, c.num_gpus) == ("auto", 3, 0.5, 0.25)
    messages = [rec.getMessage() for rec in caplog.records]
    assert "requeued 1 jobs that were running when the service stopped" in messages
    started = [rec for rec in caplog.records if rec.getMessage() == "runner started"]
    assert started[0].runners == [s.owner for s in slots]
    store.close()


def test_head_is_answered_without_a_body_whatever_the_app_sends():
    """HEAD reached the app as GET; the body's stripping was untested (clients drop it)."""
    import asyncio

    from geo_hires_service.web import HeadAsGet

    seen_method: list[str] = []

    async def app(scope, receive, send):
        seen_method.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "HEAD", "path": "/"}
    asyncio.run(HeadAsGet(app)(scope, receive, send))
    assert seen_method == ["GET"] and [m["type"] for m in sent] == [
        "http.response.start", "http.response.body", "http.response.body"]  # fmt: skip
    assert all(m.get("body", b"") == b"" for m in sent[1:]) and sent[2].get("more_body") is None
    sent.clear()
    asyncio.run(HeadAsGet(app)({**scope, "method": "GET"}, receive, send))
    assert sent[1]["body"] == b"hello"  # a GET is as it was


def test_head_of_a_file_does_not_read_it(tmp_path, monkeypatch):
    """A HEAD of a result (a gigapixel scene's: hundreds of MB) read the whole file to send
    nothing; its headers still say the GET's length."""
    import asyncio

    from geo_hires_service.web import HeadAsGet
    from starlette.responses import FileResponse

    path = tmp_path / "r.geojson"
    path.write_bytes(b"x" * 100_000)

    def no_reading(self):
        raise AssertionError("the file was opened for a HEAD")

    monkeypatch.setattr(FileResponse, "_open_file", no_reading)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "HEAD",
        "path": "/",
        "headers": [],
        "asgi": {"spec_version": "2.4"},
    }
    asyncio.run(HeadAsGet(FileResponse(path))(scope, receive, send))
    assert (b"content-length", b"100000") in sent[0]["headers"]
    assert [m["type"] for m in sent[1:]] == ["http.response.body"] and not sent[1]["body"]
