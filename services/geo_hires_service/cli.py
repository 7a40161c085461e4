"""``geo-hires serve`` and ``geo-hires submit``: the service's commands, added as a CLI plugin.

Heavy imports (Ray Serve, FastAPI) happen inside the handlers, so other commands start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from geo_hires.errors import ConfigError, GeoHiresError
from geo_hires_service.limits import MAX_UPLOAD_BYTES

__all__ = ["add_commands", "cmd_serve", "cmd_submit"]


def add_commands(sub: Any) -> None:
    """Add ``serve`` and ``submit`` to the ``geo-hires`` sub-parsers."""
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (Ray Serve) on this machine",
        description="Start a local Ray with the offline settings and the geo_hires Serve "
        "application; Ctrl-C or SIGTERM stops both. Tokens: --token-file or $GEO_HIRES_TOKENS.",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    p.add_argument(
        "--data-dir", default="geo-hires-data", help="uploads, outputs and the default job store"
    )
    p.add_argument(
        "--db", help="job store URL: sqlite:///PATH (default in --data-dir) or postgresql://…"
    )
    p.add_argument("--token-file", help="bearer tokens, one per line; each token is a tenant")
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="DIR|s3://BUCKET/PREFIX/",
        help="a folder whose GeoTIFFs may be submitted by path, or a bucket prefix whose "
        "objects may be submitted by s3:// URI (repeatable)",
    )
    p.add_argument(
        "--runner-slots", type=int, default=1, help="jobs each runner runs at once (default 1)"
    )
    p.add_argument(
        "--runner-replicas",
        type=int,
        default=1,
        help="runner replicas sharing the queue through leases (more than 1 needs a PostgreSQL "
        "--db; default 1)",
    )
    p.add_argument(
        "--runner-replicas-per-node", type=int, help="at most this many runners on one Ray node"
    )
    p.add_argument(
        "--runner-cpus",
        type=float,
        default=0.0,
        help="CPUs each runner reserves; above 0 keeps runners off a head node without CPUs",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="a runner's lease on its job: a lost runner's job moves on after it (default 60)",
    )
    p.add_argument("--actors", type=int, default=1, help="scanner actors per job (default 1)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument(
        "--address", help="join this running Ray cluster (HOST:PORT) instead of starting one"
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=MAX_UPLOAD_BYTES // 2**20,
        help=f"largest upload in MiB (default {MAX_UPLOAD_BYTES // 2**20})",
    )
    p.add_argument(
        "--retain-days",
        type=float,
        default=7.0,
        help="days a finished job's files and record are kept (default 7)",
    )
    p.add_argument(
        "--tenant-quota-mb",
        type=int,
        default=100 * 1024,
        help="MiB of uploads and outputs each tenant may keep; 0 for no quota (default 102400)",
    )
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port of the local Ray node")
    p.add_argument("--log-dir", help="folder of the JSON logs (default: Ray's session logs)")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe JSON log lines written (default INFO; DEBUG names every unit)",
    )
    p.set_defaults(_handler=cmd_serve)

    q = sub.add_parser(
        "submit",
        help="send a scene to a geo_hires service and download the result",
        description="Upload SCENE, show progress while the job runs, write its GeoJSON.",
    )
    q.add_argument("scene", help="GeoTIFF to upload")
    q.add_argument("--server", required=True, help="service URL, e.g. http://127.0.0.1:8000")
    q.add_argument("--token-file", help="file with your token (else $GEO_HIRES_TOKEN)")
    q.add_argument("-o", "--output", help="GeoJSON to write (default: SCENE with .geojson)")
    q.add_argument("--score-threshold", type=float, help="minimum detection score")
    q.add_argument("--model", help="a shipped model name (GET /v1/models)")
    q.add_argument(
        "--timeout", type=float, default=24 * 3600, help="seconds to wait (default 1 day)"
    )
    q.set_defaults(_handler=cmd_submit)


#: The flags whose values reach :class:`ServeArgs` under another name.
_FLAGS = {"max_upload_bytes": "--max-upload-mb", "tenant_quota_bytes": "--tenant-quota-mb",
          "allow_roots": "--allow-root"}  # fmt: skip


def _serve_args(args: argparse.Namespace) -> dict[str, Any]:
    """The application's arguments; a value out of bounds is a one-line error naming its flag."""
    from pydantic import ValidationError

    try:
        return _build_serve_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        raise ConfigError(f"{flag}: {first['msg'].lower()}") from None


def _build_serve_args(args: argparse.Namespace) -> dict[str, Any]:
    from geo_hires_service.app import ServeArgs
    from geo_hires_service.security import parse_root

    def resolved(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    return ServeArgs(
        data_dir=str(Path(args.data_dir).resolve()),
        db=args.db,
        token_file=resolved(args.token_file),
        allow_roots=[str(parse_root(r)) for r in args.allow_root],
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        runner_slots=args.runner_slots,
        runner_replicas=args.runner_replicas,
        runner_replicas_per_node=args.runner_replicas_per_node,
        runner_cpus=args.runner_cpus,
        lease_seconds=args.lease_seconds,
        actors=args.actors,
        retain_days=args.retain_days,
        tenant_quota_bytes=args.tenant_quota_mb * 1024 * 1024 or None,
        log_dir=resolved(args.log_dir),
        log_level=args.log_level,
    ).model_dump()


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run the service until Ctrl-C/SIGTERM; drain the runners, stop Serve and Ray on the way
    out (a runner's running job goes back to the queue and resumes at the next start)."""
    import ray
    from ray import serve

    from geo_hires.detect.ray_local import ensure_ray
    from geo_hires_service.app import build
    from geo_hires_service.security import load_tokens

    load_tokens(args.token_file)  # no token, no service: refuse before starting anything
    sargs = _serve_args(args)
    build(sargs)  # a bad combination is refused before Ray starts
    stop = threading.Event()
    ensure_ray(args.address, num_cpus=args.num_cpus, metrics_port=args.metrics_port)
    # SIGTERM drains the service (the CLI's own handler would stop it mid-request)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port}, proxy_location="HeadOnly")
        with _quiet_serve_restart():
            serve.run(build(sargs), name="geo_hires", route_prefix="/", blocking=False)
        where = f"http://{args.host}:{args.port}/v1"
        out.write(f"geo_hires service on {where} (data in {sargs['data_dir']})\n")
        out.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):  # waits for the runners to drain
            serve.delete("geo_hires")
        # no serve.shutdown(): on a cluster it stopped Serve for every other application, and
        # locally it killed its controller mid-call (a raylet error line at every stop); the
        # local cluster's shutdown ends Serve with it
        ray.shutdown()
    out.write("geo_hires service stopped\n")
    return 0


@contextlib.contextmanager
def _quiet_serve_restart() -> Iterator[None]:
    """Without Serve's "New http_options/controller_options will not be applied" at every
    start: ``serve.run`` says so of the options ``serve.start`` just applied."""

    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Connecting to existing Serve app")

    serve_log = logging.getLogger("ray.serve")
    serve_log.addFilter(drop)
    try:
        yield
    finally:
        serve_log.removeFilter(drop)


def _token(path: str | None) -> str:
    import os

    from geo_hires_service.security import read_token_file

    tokens = read_token_file(path) if path else []
    token = tokens[0] if tokens else os.environ.get("GEO_HIRES_TOKEN")
    if not token:
        raise ConfigError("no token: give --token-file FILE or set GEO_HIRES_TOKEN")
    return token


class ServiceError(GeoHiresError, RuntimeError):
    """The service answered with an error (its problem detail is the message)."""


def _check(resp: Any, what: str) -> Any:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text[:200]
        raise ServiceError(f"{what}: HTTP {resp.status_code}: {detail}")
    return resp


def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    """Upload, poll with a progress bar, download the GeoJSON."""
    import requests
    from tqdm import tqdm

    from geo_hires.export.vector import atomic_write, check_kind

    scene = Path(args.scene)
    if not scene.is_file():
        raise ConfigError(f"scene not found: {scene}")
    output = Path(args.output or scene.with_suffix(".geojson"))
    check_kind("-o", output, (".geojson", ".json"))
    if not output.parent.is_dir():  # found now, not after the whole job has run
        raise ConfigError(f"-o {output}: folder {output.parent} does not exist; create it")
    base = args.server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"--server {args.server}: give a URL, e.g. http://{base}")
    headers = {"Authorization": f"Bearer {_token(args.token_file)}"}
    options = {
        k: v
        for k, v in (("score_threshold", args.score_threshold), ("model", args.model))
        if v is not None
    }
    try:
        job = _upload(requests, f"{base}/v1/jobs", scene, options, headers, args.timeout)
        job = _poll(requests, base, job["id"], headers, args.timeout, tqdm)
        if job["state"] != "succeeded":
            raise ServiceError(f"job {job['id']} {job['state']}: {job.get('error') or 'no result'}")
        res = _check(
            requests.get(f"{base}/v1/jobs/{job['id']}/result", headers=headers, timeout=600),
            "result",
        )
        atomic_write(output, lambda tmp: tmp.write_bytes(res.content))
    except requests.ConnectionError as exc:
        raise ServiceError(f"cannot reach {base}: is the service running?") from exc
    except requests.Timeout as exc:
        raise ServiceError(f"{base} did not answer in time ({exc}); try again later") from exc
    out.write(f"{scene.name}: job {job['id']}, {job['detections']} detections -> {output}\n")
    return 0


def _upload(
    requests: Any,
    url: str,
    scene: Path,
    options: dict[str, Any],
    headers: dict[str, str],
    timeout: float,
) -> dict[str, Any]:
    """POST the scene; a ``429`` (the queue, or the uploads the service takes at once, is full)
    is sent again after its ``Retry-After``, until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with scene.open("rb") as fh:
            resp = requests.post(
                url, files={"scene": (scene.name, fh, "image/tiff")},
                data={"options": json.dumps(options)}, headers=headers, timeout=600,
            )  # fmt: skip
        wait = float(resp.headers.get("Retry-After", 10)) if resp.status_code == 429 else None
        if wait is None or time.monotonic() + wait > deadline:
            return dict(_check(resp, "submit").json())
        time.sleep(wait)


def _poll(
    requests: Any, base: str, job_id: str, headers: dict[str, str], timeout: float, tqdm: Any
) -> Any:
    deadline = time.monotonic() + timeout
    with tqdm(total=None, unit="unit", desc=job_id[:8], disable=not sys.stderr.isatty()) as bar:
        while True:
            job = _check(
                requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=60), "status"
            ).json()
            bar.total = job["progress"]["units_total"] or None
            bar.n = job["progress"]["units_done"]
            bar.refresh()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(0.5)
