"""Run the service's FastAPI app and a job runner in this process, on 127.0.0.1 (tests only)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from services.api import ServiceConfig, create_app
from services.runner import JobRunner
from services.security import load_tokens
from services.store import JobStore

TOKENS = ("alice-token-0123456789", "bob-token-9876543210ab")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_service(
    data_dir: Path, roots: tuple[Path, ...], *, run_jobs: bool = True, **limits: int
) -> Iterator[str]:
    """Yield the base URL of a live service (API + one runner thread, local executor).

    ``run_jobs=False`` leaves jobs queued (queue-limit tests).
    """
    (data_dir / "tokens").write_text("\n".join(TOKENS) + "\n")
    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    config = ServiceConfig(
        data_dir=data_dir, tokens=load_tokens(data_dir / "tokens"), allow_roots=roots, **limits
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, store), host="127.0.0.1", port=port, log_level="warning")
    )
    stop = threading.Event()
    runner = JobRunner(store=store, data_dir=data_dir)
    threads = [threading.Thread(target=server.run, daemon=True)]
    if run_jobs:
        threads.append(threading.Thread(target=runner.serve, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.should_exit = True
        for t in threads:
            t.join(60)
        store.close()
