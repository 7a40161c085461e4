"""Start or join Ray without ever touching the network.

A local start needs three things nobody should have to remember: ``HOME`` pointing at a folder
that holds ``ray_bootstrap_config.yaml`` (otherwise Ray's dashboard process probes cloud
metadata addresses), usage stats off, and every port on 127.0.0.1. :func:`ensure_ray` sets them
for the Ray processes it starts (they inherit the environment at start) and restores the
caller's environment afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from geo_hires.errors import ExecutorError, option

RAY_TMP = "/tmp/ghray"
"""Where local Ray sessions live (``$GEO_HIRES_RAY_TMP`` wins); a short path, because Ray's
socket paths inside it must fit in 107 bytes."""

__all__ = ["OFFLINE_ENV", "RAY_TMP", "ensure_ray", "offline_env", "offline_home", "prune_sessions"]

OFFLINE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}


def offline_home() -> Path:
    """A folder with a local-provider ``ray_bootstrap_config.yaml`` (``$RAY_LOCAL_HOME`` wins)."""
    home = Path(
        os.environ.get("RAY_LOCAL_HOME") or Path(tempfile.gettempdir()) / "geo-hires-ray-home"
    )
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "ray_bootstrap_config.yaml"
    if not cfg.exists():
        cfg.write_text("provider:\n  type: local\n")
    return home


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def offline_env() -> contextlib.AbstractContextManager[None]:
    """The environment a Ray start needs to stay offline, set for a ``with`` block.

    For starts that do not go through :func:`ensure_ray` (``ray.cluster_utils.Cluster`` in
    tests, ``serve``): processes started inside inherit it; the caller's is restored after.
    """
    return _loopback(_env({**OFFLINE_ENV, "HOME": str(offline_home())}))


@contextlib.contextmanager
def _loopback(inner: contextlib.AbstractContextManager[None]) -> Iterator[None]:
    """``inner``, with Ray's "single-machine cluster" switch off in this process too: Ray reads
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import, so in a process that imported Ray
    before (a host application, a test session) a start would take the machine's network
    address and every Ray process would listen on all interfaces."""
    constants = sys.modules.get("ray._private.ray_constants")
    old = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    with inner:
        if constants is not None:
            setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 (a module)
        try:
            yield
        finally:
            if constants is not None:
                setattr(constants, "ENABLE_RAY_CLUSTER", old)  # noqa: B010


def _check_reachable(address: str) -> None:
    """Fail at once when nothing answers at ``HOST:PORT`` (``ray://`` too): ``ray.init`` retries
    an unreachable head for minutes before it gives up."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form ray.init judges itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {option('--address', address)} "
            f"({exc.strerror or exc}); start it, check the address, or leave "
            f"{option('--address')} out to run a local one"
        ) from exc


def ensure_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int = 512,
    metrics_port: int | None = None,
) -> None:
    """Join ``address`` (``"auto"`` or ``HOST:PORT``), or start a local offline cluster.

    ``metrics_port``: where the local node serves its Prometheus metrics (on 127.0.0.1, like
    every port of a local start; default: a free port Ray picks).
    Does nothing when Ray is already initialised in this process (tests share one cluster).
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        _check_reachable(address)
        try:
            with _own_sigterm():
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # what ray.init raises
            raise ExecutorError(
                f"cannot join the Ray cluster at {option('--address', address)} ({exc}); start it, "
                f"or leave {option('--address')} out to run a local one"
            ) from exc
        return
    temp_dir = os.environ.get("GEO_HIRES_RAY_TMP", RAY_TMP)
    prune_sessions(Path(temp_dir))
    with offline_env(), _own_sigterm():
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,  # not Ray's "Started a local Ray instance" per run
            object_store_memory=object_store_mb * 1024 * 1024,
            _temp_dir=temp_dir,
            _node_ip_address="127.0.0.1",
            _metrics_export_port=metrics_port,
        )


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """Keep the process's SIGTERM handler over a local start: Ray's driver installs one of its
    own that prints a C++ stack and aborts, where the CLI stops the run as Ctrl-C does."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and before is not None:
            signal.signal(signal.SIGTERM, before)


_SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_(\d+)")
"""A Ray session folder's name: ``session_<date>_<time>_<microseconds>_<pid>``."""


def prune_sessions(temp_dir: Path) -> list[Path]:
    """Remove the session folders of local Rays whose starting process has ended; return them.

    Ray keeps every session's logs and sockets after shutdown (a folder named
    ``session_<time>_<pid>``, the pid of the process that started it): a machine running a
    batch a minute gathered hundreds. A session whose process still runs, or a folder whose
    name is not Ray's, is left, as is the one ``session_latest`` points to. The pids are this
    machine's: containers of other pid namespaces sharing one folder should each have their
    own (``$GEO_HIRES_RAY_TMP``).
    """
    latest = temp_dir / "session_latest"
    current = latest.resolve().name if latest.is_symlink() else None
    gone = []
    for folder in temp_dir.glob("session_*"):
        named = _SESSION.fullmatch(folder.name)  # Ray's own names only: never another folder
        if not named or folder.name == current or _alive(int(named.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        gone.append(folder)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
