"""The Ray Serve application: a FastAPI ingress and a job runner, built from one set of args.

``build`` is the application builder named by the Serve config's ``import_path``
(``geo_hires_service.app:build``), so ``serve run`` of the shipped ``serve_config.yaml``,
``serve deploy`` and ``geo-hires serve`` start the same thing.

Why the runner is a Serve deployment and not a detached actor: Serve starts, health-checks,
restarts and shuts it down with the ingress, and a KubeRay ``RayService`` manages both from one
``serveConfigV2``. The runner polls the durable store, so it needs no handle from the ingress.
With PostgreSQL it runs as ``runner_replicas`` replicas (at most ``runner_replicas_per_node`` on
a node) that share the queue through leases; with SQLite as one, which requeues the jobs that
were running when it starts (:meth:`JobStore.recover`). Either way a requeued or taken-over job
resumes from its journal. Serve's graceful shutdown (SIGTERM, a scale-down, an upgrade) drains
a runner: it stops claiming, and its running jobs stop at the next unit and go back to the
queue. Jobs run on :class:`geo_hires.detect.ray_executor.RayExecutor` actors of the cluster.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from geo_hires.errors import ConfigError
from geo_hires_service.limits import MAX_UPLOAD_BYTES
from geo_hires_service.observe import log, metrics
from geo_hires_service.retention import DAY_S, sweep
from geo_hires_service.runner import JobRunner, runner_id
from geo_hires_service.schemas import ServiceConfig, scene_read_config
from geo_hires_service.security import load_tokens, parse_root
from geo_hires_service.store import JobStore
from geo_hires_service.web import create_app

__all__ = ["ServeArgs", "build"]


class ServeArgs(BaseModel):
    """Arguments of the application (the ``args`` of the Serve config; no secrets here).

    Tokens come from ``token_file`` or, without one, the ``GEO_HIRES_TOKENS`` environment
    variable of the replicas (a Kubernetes Secret), never from the config itself. So does a
    database URL with a password in it: without ``db``, the file ``$GEO_HIRES_DB_FILE`` names
    (on Kubernetes, the mounted Secret ``geo-hires-db``), else ``$GEO_HIRES_DB``.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(description="uploads, outputs and (by default) the SQLite store")
    db: str | None = Field(default=None, description="sqlite:///PATH or postgresql://…")
    token_file: str | None = None
    allow_roots: list[str] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=MAX_UPLOAD_BYTES, gt=0)
    max_scene_pixels: int = Field(default=50_000_000_000, gt=0)
    max_active: int = Field(default=200, gt=0)
    max_active_per_tenant: int = Field(default=50, gt=0)
    runner_slots: int = Field(default=1, ge=1, description="jobs run at once")
    actors: int = Field(default=1, ge=1, description="scanner actors per running job")
    actor_cpus: float = Field(default=1.0, gt=0)
    actor_gpus: float = Field(default=0.0, ge=0)
    runner_replicas: int = Field(default=1, ge=1, description="runner replicas (PostgreSQL only)")
    runner_replicas_per_node: int | None = Field(default=None, ge=1)
    runner_cpus: float = Field(
        default=0.0, ge=0, description="CPUs each runner replica reserves (0: anywhere)"
    )
    lease_seconds: float = Field(default=60.0, ge=2, description="a runner's lease on its job")
    drain_seconds: float = Field(
        default=60.0, ge=0, description="how long a stopping runner waits for its jobs' units"
    )
    retain_days: float = Field(default=7.0, gt=0, description="days finished jobs are kept")
    tenant_quota_bytes: int | None = Field(
        default=100 * 1024**3, gt=0, description="uploads + outputs per tenant (null: none)"
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_dir: str | None = Field(default=None, description="Serve's log folder (default Ray's)")

    def db_url(self, env: Mapping[str, str] | None = None) -> str:
        env = os.environ if env is None else env
        if self.db:
            return self.db
        if env.get("GEO_HIRES_DB_FILE"):
            path = Path(env["GEO_HIRES_DB_FILE"])
            try:
                url = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the database URL file {path}: {exc}") from exc
            if not url:
                raise ConfigError(f"{path} (GEO_HIRES_DB_FILE) is empty; put the URL in it")
            return url
        return env.get("GEO_HIRES_DB", "").strip() or f"sqlite:///{Path(self.data_dir) / 'jobs.db'}"

    def service_config(self) -> ServiceConfig:
        return ServiceConfig(
            data_dir=Path(self.data_dir),
            tokens=load_tokens(self.token_file),
            allow_roots=tuple(parse_root(r) for r in self.allow_roots),
            max_upload_bytes=self.max_upload_bytes,
            max_scene_pixels=self.max_scene_pixels,
            max_active=self.max_active,
            max_active_per_tenant=self.max_active_per_tenant,
            tenant_quota_bytes=self.tenant_quota_bytes,
            retain_days=self.retain_days,
        )

    def logging_config(self) -> dict[str, Any]:
        """Serve's logging config of both deployments: JSON lines."""
        extra = {"logs_dir": self.log_dir} if self.log_dir else {}
        return {"encoding": "JSON", "log_level": self.log_level, **extra}

    def check_store(self, url: str) -> None:
        """Refuse several runners on SQLite, which serves one (PostgreSQL serves any number)."""
        if self.runner_replicas > 1 and url.startswith("sqlite"):
            raise ConfigError(
                f"runner_replicas {self.runner_replicas} needs a PostgreSQL store: a SQLite "
                "store serves one runner; give --db postgresql://… or one runner replica"
            )


class IngressReplica:
    """Records and answers; reads the store, never runs a scene.

    The FastAPI app is built in the replica (``__serve_build_asgi_app__``), after the store is
    opened there: an engine does not travel between processes. The class stays plain (the
    deployment wraps it below), so it can be built and tested in one process.
    """

    def __init__(self, args: dict[str, Any], runner: Any = None) -> None:
        a = ServeArgs.model_validate(args)
        Path(a.data_dir).mkdir(parents=True, exist_ok=True)
        self.config, self.store = a.service_config(), JobStore(a.db_url())
        self.runner = runner  # keeps the runner in this application

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.config, self.store, request_ids=False)  # Serve's proxy does them


INGRESS_ONGOING = 64
"""Requests one ingress replica serves at once (Serve's default, 5, let five slow uploads hold
every slot: health checks and status calls waited behind them); uploads have their own, lower
limit (``uploads.MAX_UPLOADS``), so the rest always get a slot."""

Ingress = serve.deployment(
    name="ingress",
    num_replicas=1,
    max_ongoing_requests=INGRESS_ONGOING,
    ray_actor_options={"num_cpus": 0},
)(serve.ingress()(IngressReplica))


COUNTS_EVERY_S, SWEEP_EVERY_S = 15, 600
"""How often a runner publishes the store's job counts, and sweeps expired jobs."""


class RunnerReplica:
    """Runs queued jobs on Ray actors, ``runner_slots`` at a time, until Serve stops it; keeps
    the job gauges current and sweeps expired jobs (the ``runner`` deployment below)."""

    def __init__(self, args: dict[str, Any]) -> None:
        import ray

        from geo_hires.detect.ray_executor import RayConfig, RayExecutor

        a = ServeArgs.model_validate(args)
        url = a.db_url()
        a.check_store(url)
        self.args, self.store = a, JobStore(url)
        if not self.store.shared:
            requeued = self.store.recover()
            if requeued:
                log.warning("requeued %d jobs that were running when the service stopped", requeued)
        ray_cfg = RayConfig(
            address="auto", actors=a.actors, num_cpus=a.actor_cpus, num_gpus=a.actor_gpus
        )
        node = ray.get_runtime_context().get_node_id()
        self.stop, self.draining = threading.Event(), threading.Event()
        self.runners = [
            JobRunner(
                store=self.store,
                data_dir=Path(a.data_dir),
                executor=RayExecutor(config=ray_cfg),
                read_config=scene_read_config(a.max_scene_pixels),
                owner=runner_id(node),
                lease_s=a.lease_seconds,
                slot=str(i),
                draining=self.draining,
            )
            for i in range(a.runner_slots)
        ]
        self.threads = [
            threading.Thread(target=r.serve, args=(self.stop,), name=f"job-slot-{i}", daemon=True)
            for i, r in enumerate(self.runners)
        ]
        self.threads.append(threading.Thread(target=self._housekeeping, daemon=True))
        for t in self.threads:
            t.start()
        log.info("runner started", extra={"runners": [r.owner for r in self.runners]})

    def _housekeeping(self) -> None:
        """Every second: the gauges again; every 15 s: the store's counts; every 10 min: a
        retention sweep. Never ends before the runner does (the store may be away a while)."""
        for tick in itertools.count():
            try:
                if tick % COUNTS_EVERY_S == 0:
                    metrics().set_counts(self.store.counts())
                if tick % SWEEP_EVERY_S == 0:
                    data = Path(self.args.data_dir)
                    sweep(self.store, data, retain_s=self.args.retain_days * DAY_S)
                metrics().republish()
            except Exception:
                log.exception("housekeeping failed")
            if self.stop.wait(1.0):
                return

    def __del__(self) -> None:
        """Serve's graceful shutdown: stop claiming, let each running job stop at its next
        unit and go back to the queue (its journal keeps what is done), within
        ``drain_seconds``."""
        if not hasattr(self, "threads") or self.draining.is_set():
            return  # never started, or drained already
        self.draining.set()
        self.stop.set()
        deadline = time.monotonic() + self.args.drain_seconds
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        log.info("runner stopped", extra={"runners": [r.owner for r in self.runners]})

    def check_health(self) -> None:
        """Serve's health check: a dead slot thread makes the replica restart."""
        if not all(t.is_alive() for t in self.threads):
            raise RuntimeError("a job slot thread died")


Runner = serve.deployment(name="runner", num_replicas=1, ray_actor_options={"num_cpus": 0})(
    RunnerReplica
)


def build(args: dict[str, Any]) -> Application:
    """The application builder (``import_path: geo_hires_service.app:build``).

    The runner is bound into the ingress so that both belong to one application (Serve
    deploys, upgrades and deletes them together); the ingress never calls it.
    """
    a = ServeArgs.model_validate(args)  # refuse a bad config before anything starts
    a.check_store(a.db_url())
    runner_opts: dict[str, Any] = {
        "num_replicas": a.runner_replicas,
        "ray_actor_options": {"num_cpus": a.runner_cpus},
        "graceful_shutdown_timeout_s": a.drain_seconds + 15,
        "logging_config": a.logging_config(),
    }
    if a.runner_replicas_per_node is not None:
        runner_opts["max_replicas_per_node"] = a.runner_replicas_per_node
    runner = Runner.options(**runner_opts).bind(args)
    ingress = Ingress.options(logging_config=a.logging_config())
    return ingress.bind(args, runner)
