"""Run the service's FastAPI app and a job runner in this process, on 127.0.0.1 (tests only)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import uvicorn
from geo_hires_service.runner import JobRunner
from geo_hires_service.schemas import ServiceConfig
from geo_hires_service.security import load_tokens
from geo_hires_service.store import FINISHED, JobStore
from geo_hires_service.web import create_app

from tests.waiting import wait_for

TOKENS = ("alice-token-0123456789", "bob-token-9876543210ab")
ALICE = {"Authorization": f"Bearer {TOKENS[0]}"}
BOB = {"Authorization": f"Bearer {TOKENS[1]}"}


def wait_job(
    url: str,
    job_id: str,
    until: tuple[str, ...] | Callable[[dict[str, Any]], bool] = FINISHED,
    *,
    headers: dict[str, str] = ALICE,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is in one of the ``until`` states (or the
    predicate holds on its JSON); fails the test after ``timeout`` seconds."""

    def done(job: dict[str, Any]) -> bool:
        return bool(until(job)) if callable(until) else job["state"] in until

    def get() -> dict[str, Any]:
        r = requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30)
        job: dict[str, Any] = r.json()
        return job

    return wait_for(get, done, timeout=timeout, every=0.1, what=f"job {job_id}")


def problem_status(resp: requests.Response) -> tuple[int, str]:
    """Status and body of a response; an error must be an RFC 9457 problem document."""
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json", resp.text
    return resp.status_code, resp.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_service(
    data_dir: Path,
    roots: tuple[Path, ...],
    *,
    run_jobs: bool = True,
    root_path: str = "",
    **limits: int,
) -> Iterator[str]:
    """Yield the base URL of a live service (API + one runner thread, local executor).

    ``run_jobs=False`` leaves jobs queued (queue-limit tests); ``root_path``: mounted under
    that prefix, as behind a proxy.
    """
    (data_dir / "tokens").write_text("\n".join(TOKENS) + "\n")
    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    config = ServiceConfig(
        data_dir=data_dir, tokens=load_tokens(data_dir / "tokens"), allow_roots=roots, **limits
    )
    port = free_port()
    app = create_app(config, store)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", root_path=root_path)
    )
    stop = threading.Event()
    runner = JobRunner(store=store, data_dir=data_dir)
    threads = [threading.Thread(target=server.run, daemon=True)]
    if run_jobs:
        threads.append(threading.Thread(target=runner.serve, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.should_exit = True
        for t in threads:
            t.join(60)
        store.close()


@contextlib.contextmanager
def serve_process(
    data_dir: Path,
    roots: tuple[Path, ...],
    *extra: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    local: bool = True,
    tokens: tuple[str, ...] = TOKENS,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``geo-hires serve`` as a real process (its own session: a crash test kills the group).

    ``local=False``: it joins the cluster its ``extra`` args name (``--address``).
    """
    import requests

    (data_dir / "tokens").write_text("\n".join(tokens) + "\n")
    port = port or free_port()
    cmd = [sys.executable, "-m", "geo_hires.cli", "serve", "--data-dir", str(data_dir)]
    cmd += ["--token-file", str(data_dir / "tokens"), "--port", str(port)]
    cmd += ["--num-cpus", "2"] if local else []
    for r in roots:
        cmd += ["--allow-root", str(r)]
    log = (data_dir / "serve.log").open("ab")
    proc = subprocess.Popen([*cmd, *extra], stdout=log, stderr=log, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"geo-hires serve exited: {(data_dir / 'serve.log').read_text()[-2000:]}"
                )
            try:
                if requests.get(f"{url}/v1/healthz", timeout=2).ok:
                    break
            except requests.RequestException:  # not listening yet, or still starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("geo-hires serve did not answer within 180 s")
            time.sleep(0.5)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
