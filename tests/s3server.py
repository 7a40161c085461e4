"""A real S3 server on loopback for the tests and benchmarks: moto in server mode.

``python -m tests.s3server`` serves the WSGI application ``moto_server`` serves (moto's
``DomainDispatcherApplication``) on 127.0.0.1 with an ephemeral port it prints, wrapped in a
counter of the requests and body bytes it sends: ``GET /_counts`` answers them as JSON (and
``?reset=1`` starts afresh). ``_counts`` can never be a bucket (no underscores in bucket names).
:class:`S3Server` starts it in its own process, so the code under test talks to it over real
HTTP (GDAL's curl, boto3), exactly as to a remote endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Counting:
    """WSGI middleware: every request's method, path, status and bytes sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/_counts":
            with self.lock:
                body = json.dumps(self.log).encode()
                if "reset=1" in environ.get("QUERY_STRING", ""):
                    self.log = []
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return self._counted(environ, start_response)

    def _counted(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        entry = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING", ""),
            "range": environ.get("HTTP_RANGE"),
            "status": 0,
            "bytes": 0,
        }

        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            entry["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        sent = 0
        result = self.app(environ, start)
        try:
            for chunk in result:
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            entry["bytes"] = sent
            with self.lock:
                self.log.append(entry)


APRON_ITEM: dict[str, Any] = {
    "type": "Feature", "stac_version": "1.0.0", "id": "apron", "collection": "demo",
    "geometry": None, "properties": {"datetime": "2026-05-01T00:00:00Z"}, "links": [],
    "assets": {"visual": {"href": "./apron.tif", "type": "image/tiff; application=geotiff"}},
}  # fmt: skip
"""A STAC item whose asset is ``apron.tif`` beside it (put both under one prefix)."""


def _serve() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    app = Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    print(server.server_port, flush=True)
    server.serve_forever()


class S3Server:
    """``python -m tests.s3server`` in its own process; ``env`` is what a client needs."""

    def __init__(self, log: Path, *, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": _pythonpath(), **(extra_env or {})}
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.s3server"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"the S3 server did not start; see {log}")
        self.port = int(line)
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def env(self, *, credentials: bool = True) -> dict[str, str]:
        """The standard AWS settings of a client of this server (and nothing from ~/.aws)."""
        env = {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_HTTPS": "NO",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
            "AWS_CONFIG_FILE": "/nonexistent/config",
        }
        if credentials:
            env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        return env

    def client(self, **keys: str) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=keys.get("key", "testing"),
            aws_secret_access_key=keys.get("secret", "testing"),
        )

    def counts(self, *, reset: bool = False) -> list[dict[str, Any]]:
        """The requests served since the last reset (their method, path, range, bytes)."""
        url = f"{self.url}/_counts" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            return list(json.loads(resp.read()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _pythonpath() -> str:
    parts = [str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(p for p in parts if p)


@contextlib.contextmanager
def s3_server(log: Path, **kw: Any) -> Iterator[S3Server]:
    server = S3Server(log, **kw)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    _serve()
