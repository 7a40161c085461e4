"""The Ray Serve application: a FastAPI ingress and a job runner, built from one set of args.

``build`` is the application builder named by the Serve config's ``import_path``
(``geo_hires_service.app:build``), so ``serve run`` of the shipped ``serve_config.yaml``,
``serve deploy`` and ``geo-hires serve`` start the same thing.

Why the runner is a Serve deployment (one replica) and not a detached actor: Serve starts,
health-checks, restarts and shuts it down with the ingress, and a KubeRay ``RayService``
manages both from one ``serveConfigV2``. The runner polls the durable store, so it needs no
handle from the ingress, and a restarted runner finds every job where the store left it
(:meth:`JobStore.recover` requeues the ones that were running; their journal resumes them).
Jobs run on :class:`geo_hires.detect.ray_executor.RayExecutor` actors of the same cluster.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from geo_hires.errors import ConfigError
from geo_hires_service.runner import JobRunner
from geo_hires_service.schemas import ServiceConfig, scene_read_config
from geo_hires_service.security import load_tokens, parse_root
from geo_hires_service.store import JobStore
from geo_hires_service.web import create_app

__all__ = ["ServeArgs", "build"]

log = logging.getLogger("geo_hires.service")


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
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_scene_pixels: int = Field(default=50_000_000_000, gt=0)
    max_active: int = Field(default=200, gt=0)
    max_active_per_tenant: int = Field(default=50, gt=0)
    runner_slots: int = Field(default=1, ge=1, description="jobs run at once")
    actors: int = Field(default=1, ge=1, description="scanner actors per running job")
    actor_cpus: float = Field(default=1.0, gt=0)
    actor_gpus: float = Field(default=0.0, ge=0)

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
        )


@serve.deployment(name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """Records and answers; reads the store, never runs a scene.

    The FastAPI app is built in the replica (``__serve_build_asgi_app__``), after the store is
    opened there: an engine does not travel between processes.
    """

    def __init__(self, args: dict[str, Any], runner: Any = None) -> None:
        a = ServeArgs.model_validate(args)
        Path(a.data_dir).mkdir(parents=True, exist_ok=True)
        self.config, self.store = a.service_config(), JobStore(a.db_url())
        self.runner = runner  # keeps the runner in this application

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.config, self.store)


@serve.deployment(name="runner", num_replicas=1, ray_actor_options={"num_cpus": 0})
class Runner:
    """Runs queued jobs on Ray actors, ``runner_slots`` at a time, until Serve stops it."""

    def __init__(self, args: dict[str, Any]) -> None:
        from geo_hires.detect.ray_executor import RayConfig, RayExecutor

        a = ServeArgs.model_validate(args)
        self.store = JobStore(a.db_url())
        requeued = self.store.recover()
        if requeued:
            log.warning("requeued %d jobs that were running when the service stopped", requeued)
        ray_cfg = RayConfig(
            address="auto", actors=a.actors, num_cpus=a.actor_cpus, num_gpus=a.actor_gpus
        )
        self.stop = threading.Event()
        self.runners = [
            JobRunner(
                store=self.store,
                data_dir=Path(a.data_dir),
                executor=RayExecutor(config=ray_cfg),
                read_config=scene_read_config(a.max_scene_pixels),
            )
            for _ in range(a.runner_slots)
        ]
        self.threads = [
            threading.Thread(target=r.serve, args=(self.stop,), name=f"job-slot-{i}", daemon=True)
            for i, r in enumerate(self.runners)
        ]
        for t in self.threads:
            t.start()

    def __del__(self) -> None:
        self.stop.set()

    def check_health(self) -> None:
        """Serve's health check: a dead slot thread makes the replica restart."""
        if not all(t.is_alive() for t in self.threads):
            raise RuntimeError("a job slot thread died")


def build(args: dict[str, Any]) -> Application:
    """The application builder (``import_path: geo_hires_service.app:build``).

    The runner is bound into the ingress so that both belong to one application (Serve
    deploys, upgrades and deletes them together); the ingress never calls it.
    """
    ServeArgs.model_validate(args)  # refuse a bad config before anything starts
    return Ingress.bind(args, Runner.bind(args))  # type: ignore[attr-defined]
