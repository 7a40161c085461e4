"""A COG read from object storage vs the same file on local disk, and what GDAL fetches.

The S3 server is moto's server mode on 127.0.0.1 in its own process (``tests/s3server.py``),
which counts every request and the bytes it sends; the reader is geo_hires through GDAL's
``/vsis3/`` with the settings of :data:`geo_hires.scene.remote.READ_OPTIONS`. Reported:

* detection seconds, local file vs the bucket (interleaved, best of ``--repeat``; the outputs'
  bytes are compared), and their ratio — on loopback, so this is GDAL's and the protocol's
  overhead, not a network's latency or bandwidth;
* requests and bytes fetched per scene megapixel for a full scan, and over the file's size
  (1.0 = every byte once);
* the same with an AOI, and what it saves;
* each setting against its alternatives, one fresh process per variant (GDAL keeps state per
  process): GDAL's defaults, ``GDAL_HTTP_MULTIRANGE`` SINGLE_GET / SERIAL, no merging of
  consecutive ranges, a directory listing on open, a 16 MB block cache.

    python bench/remote.py demo/airports.tif --out bench/results/remote.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS: dict[str, dict[str, str]] = {
    "chosen": {},
    "gdal_defaults": {},  # none of READ_OPTIONS, no NON_CACHED
    "multirange_single_get": {"GDAL_HTTP_MULTIRANGE": "SINGLE_GET"},
    "multirange_serial": {"GDAL_HTTP_MULTIRANGE": "SERIAL"},
    "no_merge_consecutive": {"GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "NO"},
    "list_dir_on_open": {"GDAL_DISABLE_READDIR_ON_OPEN": "NO"},
    "block_cache_16mb": {},
}


def _detect(scene: str, out: Path, aoi: Path | None = None) -> tuple[float, Any]:
    import torch

    from geo_hires.detect.executors import LocalExecutor
    from geo_hires.detect.options import DetectOptions
    from geo_hires.pipeline import run_detect

    opts = DetectOptions(aoi=str(aoi) if aoi else None)
    start = time.perf_counter()
    result = run_detect(scene, out, opts, executor=LocalExecutor(device=torch.device("cpu")))
    return time.perf_counter() - start, result


def _variant(name: str, scene: str, out: Path) -> None:
    """One detection with one variant of the settings (in its own process)."""
    import rasterio

    from geo_hires.scene import open as scene_open
    from geo_hires.scene import read as scene_read
    from geo_hires.scene import remote

    if name == "gdal_defaults":
        remote.gdal_options = lambda path=None, env=None: {}
    remote.READ_OPTIONS.update(VARIANTS[name])
    if name == "block_cache_16mb":

        def small_cache(path: str | None = None, *, alone: bool = False) -> rasterio.Env:
            return rasterio.Env(
                GDAL_CACHEMAX=16 * 1024 * 1024, GDAL_PAM_ENABLED="NO", **remote.gdal_options(path)
            )  # a remote read looks at no sidecar already

        scene_open.gdal_env = small_cache
        scene_read.gdal_env = small_cache
    seconds, _ = _detect(scene, out)
    print(json.dumps({"seconds": seconds}))


def _fetched(server: Any, key: str) -> dict[str, int]:
    log = server.counts()
    gets = [e for e in log if e["method"] == "GET" and e["path"].endswith(key)]
    return {
        "requests": len([e for e in log if e["path"].endswith(key)]),
        "gets": len(gets),
        "bytes": sum(e["bytes"] for e in gets),
        "lists": len([e for e in log if e["method"] == "GET" and "prefix=" in e["query"]]),
    }


def _per_mp(f: dict[str, int], mp: float, size: int) -> dict[str, float]:
    return {
        **f,
        "requests_per_mp": round(f["requests"] / mp, 3),
        "kb_per_mp": round(f["bytes"] / 1024 / mp, 1),
        "of_file": round(f["bytes"] / size, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scene", nargs="?", help="a COG (the demo scene is one)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--aoi-box", type=int, nargs=4, default=(0, 0, 1600, 800),
                    metavar=("C0", "R0", "C1", "R1"), help="AOI in scene pixels")  # fmt: skip
    ap.add_argument("--out", help="write the JSON here as well")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        _variant(args.variant, args.url, Path(args.out))
        return
    from geo_hires.scene import open_scene
    from tests.aoi_files import box_aoi
    from tests.s3server import s3_server

    scene = open_scene(args.scene)
    mp, size = scene.pixels / 1e6, os.path.getsize(args.scene)
    name = Path(args.scene).name
    work = Path(tempfile.mkdtemp(prefix="geo-hires-remote-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # nothing left in /tmp
    with s3_server(work / "server.log") as server:
        os.environ.update(server.env())
        os.environ["GEO_HIRES_WORK_DIR"] = str(work / "work")
        server.client().create_bucket(Bucket="bench")
        server.client().upload_file(args.scene, "bench", f"scenes/{name}")
        url = f"s3://bench/scenes/{name}"
        _detect(args.scene, work / "warm.geojson")  # model and caches warm
        local_s, remote_s, full = [], [], {}
        for i in range(args.repeat):  # interleaved, best of N: this machine is noisy
            local_s.append(_detect(args.scene, work / f"local{i}.geojson")[0])
            server.counts(reset=True)
            remote_s.append(_detect(url, work / f"remote{i}.geojson")[0])
            full = _fetched(server, name)
            same = (work / f"local{i}.geojson").read_bytes() == (
                work / f"remote{i}.geojson"
            ).read_bytes()
            assert same, "the bucket's scene must give the local file's bytes"
        aoi = box_aoi(work / "aoi.geojson", args.scene, tuple(args.aoi_box))
        server.counts(reset=True)
        _, part = _detect(url, work / "aoi_out.geojson", aoi)
        with_aoi = _fetched(server, name)
        variants = {}
        for variant in VARIANTS:
            server.counts(reset=True)
            cmd = [sys.executable, __file__, "--variant", variant, "--url", url,
                   "--out", str(work / f"{variant}.geojson")]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
            seconds = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
            variants[variant] = {**_per_mp(_fetched(server, name), mp, size),
                                 "seconds": round(seconds, 2)}  # fmt: skip
    aoi_mp = part.pixels_scanned / 1e6
    report = {
        "scene": args.scene,
        "megapixels": round(mp, 1),
        "file_bytes": size,
        "tile": list(scene_tile(args.scene)),
        "local_s": round(min(local_s), 2),
        "s3_loopback_s": round(min(remote_s), 2),
        "ratio_s3_over_local": round(min(remote_s) / min(local_s), 3),
        "full_scan": _per_mp(full, mp, size),
        "aoi": {
            "box_px": list(args.aoi_box),
            "pixels_scanned_mp": round(aoi_mp, 2),
            **_per_mp(with_aoi, mp, size),
            "bytes_saved": round(1 - with_aoi["bytes"] / max(full["bytes"], 1), 3),
        },
        "variants": variants,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def scene_tile(path: str) -> tuple[int, int]:
    import rasterio

    with rasterio.open(path) as src:
        return src.block_shapes[0]


if __name__ == "__main__":
    main()
