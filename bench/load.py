"""The service under load: locust users submitting, polling, downloading and cancelling for
minutes against a real ``geo-hires serve`` on 127.0.0.1.

``--users`` simulated clients (``bench/locustfile.py``) of ``--tenants`` tenants submit small
synthetic scenes (uploads and paths, some with an ``Idempotency-Key`` sent twice), poll their
jobs, download results (checked byte for byte against ``geo-hires detect``), cancel some and
remove some finished ones, for ``--minutes``. Then every accepted job is waited for, and the
store is checked: no job lost (every accepted id is in the store, finished, or was removed by its
client), none duplicated (no job the users did not get, one job per idempotency key, every job
run once). Reported: p50/p99 per endpoint (locust's stats), throughput, status codes (5xx must
be 0), jobs by state, and the resident memory of the service's processes (the ``geo-hires
serve`` driver, Serve's proxy and controller, the ingress and runner replicas, the scanner
actors, Ray's own) at the start of the load, every 30 s, and at its end.

    python bench/load.py --users 24 --minutes 5 --out bench/results/load.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geo_hires.cli import main as cli  # noqa: E402
from geo_hires.scene import Density, SynthSpec, write_synthetic  # noqa: E402
from tests.service.harness import serve_process  # noqa: E402

OPTIONS = {"block": 256, "score_threshold": 0.1}
SIZES = [(512, 384, 1), (640, 480, 2), (768, 512, 3)]
FINAL = ("succeeded", "failed", "cancelled")


def _scenes(work: Path) -> list[dict[str, Any]]:
    """Small scenes and the CLI's GeoJSON of each (what every result must equal)."""
    folder = work / "scenes"
    folder.mkdir()
    scenes = []
    for w, h, seed in SIZES:
        path = folder / f"s{seed}.tif"
        write_synthetic(path, SynthSpec(width=w, height=h, seed=seed, density=Density.DENSE))
        out = work / f"s{seed}.geojson"
        flags = [
            "--block",
            str(OPTIONS["block"]),
            "--score-threshold",
            str(OPTIONS["score_threshold"]),
        ]
        assert cli(["detect", str(path), "-o", str(out), *flags]) == 0
        scenes.append(
            {"name": path.name, "path": str(path), "options": OPTIONS, "expected": str(out)}
        )
    return scenes


def _group(p: psutil.Process) -> str:
    """Which part of the service a process is, by its command line (Ray titles its workers)."""
    cmd = " ".join(p.cmdline())
    for key, name in (
        ("ServeReplica:geo_hires:ingress", "ingress replica"),
        ("ServeReplica:geo_hires:runner", "runner replica"),
        ("ProxyActor", "serve proxy"),
        ("ServeController", "serve controller"),
        ("ScannerActor", "scanner actors"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs"),
        ("geo_hires.cli serve", "serve driver"),
    ):
        if key in cmd:
            return name
    return "other ray"


def rss(pid: int) -> dict[str, float]:
    """Resident MB of the service's processes, by part."""
    out: dict[str, float] = {}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            name, mb = _group(p), p.memory_info().rss / 2**20
        except psutil.Error:
            continue
        out[name] = round(out.get(name, 0.0) + mb, 1)
    out["total"] = round(sum(v for k, v in out.items()), 1)
    return out


def _locust(url: str, plan: Path, ledger: Path, work: Path, users: int, minutes: float) -> None:
    env = {**os.environ, "LOAD_PLAN": str(plan), "LOAD_LEDGER": str(ledger)}
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py")]
    span = f"{round(minutes * 60)}s"
    cmd += ["--headless", "-u", str(users), "-r", str(max(1, users // 10)), "-t", span]
    cmd += ["--host", url, "--csv", str(work / "locust"), "--only-summary", "--stop-timeout", "30"]
    done = subprocess.run(cmd, env=env, check=False, cwd=work, timeout=minutes * 60 + 300,
                          capture_output=True, text=True)  # fmt: skip
    if not ledger.is_file():  # locust never ran a user: its own words, not a missing file
        raise SystemExit(f"locust did not run: {done.stderr.strip()[-2000:]}")


def _endpoints(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = list(csv.DictReader((work / "locust_stats.csv").open()))
    per = {}
    total = {}
    for r in rows:
        stats = {
            "requests": int(r["Request Count"]),
            "failures": int(r["Failure Count"]),
            "p50_ms": float(r["50%"]),
            "p99_ms": float(r["99%"]),
            "mean_ms": round(float(r["Average Response Time"]), 1),
            "requests_per_s": round(float(r["Requests/s"]), 2),
        }
        if r["Name"] == "Aggregated":
            total = stats
        else:
            per[r["Name"]] = stats
    return per, total


def _settle(url: str, token: str, ids: list[str], timeout: float = 900) -> dict[str, dict]:
    """Every accepted job as it ends (waits for the queue to drain)."""
    auth = {"Authorization": f"Bearer {token}"}
    jobs: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    todo = list(ids)
    while todo and time.monotonic() < deadline:
        still = []
        for job_id in todo:
            r = requests.get(f"{url}/v1/jobs/{job_id}", headers=auth, timeout=60)
            if r.status_code == 404 or r.json()["state"] not in FINAL:
                still.append(job_id)
            else:
                jobs[job_id] = r.json()
        todo = still
        if todo:
            time.sleep(2)
    return jobs


def tenant_key(token: str) -> str:
    """The ledger's tenant of a job: ``bench/locustfile.py``'s ``tenant_key`` (not imported:
    importing locust monkey-patches this process's sockets with gevent)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _check(ledger: dict, data: Path, warm_id: str, tokens: list[str], url: str) -> dict[str, Any]:
    from geo_hires_service.security import load_tokens
    from geo_hires_service.store import JobStore

    submitted, removed = ledger["submitted"], set(ledger["removed"])
    tenants = load_tokens(env={"GEO_HIRES_TOKENS": ",".join(tokens)})
    by_tenant: dict[str, list[str]] = {}
    for job_id, info in submitted.items():
        by_tenant.setdefault(info["tenant"], []).append(job_id)
    ends: dict[str, dict] = {}
    for token in tokens:
        ids = [j for j in by_tenant.get(tenant_key(token), []) if j not in removed]
        ends.update(_settle(url, token, ids))
    store = JobStore(f"sqlite:///{data / 'jobs.db'}")
    rows = {}
    for token in tokens:
        tenant = tenants.tenant(f"Bearer {token}") or ""
        offset = 0
        while page := store.list_jobs(tenant, limit=500, offset=offset):
            rows.update({j.id: j for j in page})
            offset += len(page)
    store.close()
    rows.pop(warm_id, None)
    kept = set(submitted) - removed
    lost = sorted(kept - set(rows)) + sorted(j for j in kept if j not in ends)
    unknown = sorted(set(rows) - set(submitted))  # a job no client was told about
    states: dict[str, int] = {}
    for job in rows.values():
        states[job.state.value] = states.get(job.state.value, 0) + 1
    return {
        "jobs_accepted": len(submitted),
        "jobs_removed_by_clients": len(removed),
        "jobs_in_store": len(rows),
        "states": states,
        "lost": lost,
        "duplicated": unknown + ledger["bad"],
        "ran_more_than_once": sorted(j.id for j in rows.values() if j.attempts > 1),
        "cancels_sent": len(ledger["cancelled"]),
        "cancelled_not_final": sorted(
            j for j in ledger["cancelled"] if j in rows and rows[j].state.value not in FINAL
        ),
    }


def run(users: int, minutes: float, tenants: int) -> dict[str, Any]:
    tokens = [f"load-tenant-{i}-token-0123456789" for i in range(tenants)]
    with tempfile.TemporaryDirectory(prefix="gh-load-") as tmp:
        work = Path(tmp)
        scenes = _scenes(work)
        plan, ledger_path = work / "plan.json", work / "ledger.json"
        plan.write_text(json.dumps({"tokens": tokens, "scenes": scenes}))
        data = work / "data"
        data.mkdir()
        roots = (work / "scenes",)
        with serve_process(data, roots, "--runner-slots", "2", tokens=tuple(tokens)) as (proc, url):
            auth = {"Authorization": f"Bearer {tokens[0]}"}
            body = {"uri": scenes[0]["path"], "options": OPTIONS}
            warm = requests.post(f"{url}/v1/jobs", json=body, headers=auth).json()
            _settle(url, tokens[0], [warm["id"]])  # actors up, model loaded
            samples = [{"t_s": 0.0, **rss(proc.pid)}]
            stop = threading.Event()
            t0 = time.monotonic()

            def sample() -> None:
                while not stop.wait(30):
                    samples.append({"t_s": round(time.monotonic() - t0, 1), **rss(proc.pid)})

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _locust(url, plan, ledger_path, work, users, minutes)
            stop.set()
            sampler.join()
            samples.append({"t_s": round(time.monotonic() - t0, 1), **rss(proc.pid)})
            ledger = json.loads(ledger_path.read_text())
            checks = _check(ledger, data, warm["id"], tokens, url)
        per, total = _endpoints(work)
    codes: dict[str, int] = {}
    for by_code in ledger["status"].values():
        for code, n in by_code.items():
            codes[code] = codes.get(code, 0) + n
    return {
        "users": users,
        "tenants": tenants,
        "minutes": minutes,
        "scenes": [f"{w}x{h}" for w, h, _ in SIZES],
        "options": OPTIONS,
        "service": "geo-hires serve --runner-slots 2 --num-cpus 2 (one runner, SQLite store)",
        "total": total,
        "endpoints": per,
        "status_codes": dict(sorted(codes.items())),
        "status_codes_by_endpoint": ledger["status"],
        "server_errors_5xx": sum(n for c, n in codes.items() if c.startswith("5")),
        "jobs_finished_per_minute": round(
            sum(v for k, v in checks["states"].items() if k in FINAL) / minutes, 1
        ),
        **checks,
        "rss_mb": {"start": samples[0], "end": samples[-1], "samples": samples},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", type=Path, help="write the result here (default: stdout)")
    args = ap.parse_args()
    # a SIGTERM (timeout, Ctrl-C in CI) unwinds through the service's context manager, so the
    # service and its Ray are stopped rather than left running and loading the machine
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args.users, args.minutes, args.tenants)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    ok = not (result["server_errors_5xx"] or result["lost"] or result["duplicated"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
