"""Prove that a change keeps every output byte-identical: run a fixed set of jobs, compare.

``run DIR`` writes what the shipped entry points produce for a fixed set of inputs into DIR —
the demo (every output format, quicklook, coverage, zoom modes, an AOI, one level, the YOLO and
cascade bundles, the Ray executor), each shipped bundle on the 14 validation images of
``aircraft_lsn`` (as the benchmarks score them), the 144 MP synthetic scene of the speed
benchmarks (default, ``--zoom rl``, the cascade), ``synth``/``convert``/``eval``/``info``
outputs, a bundle ``cascade`` assembles from the shipped parts — and ``DIR/manifest.json``
with the SHA-256 of each file. ``compare A B`` reports every file whose bytes differ (or that
only one side has) and exits 1 if any does.

    python scripts/same_outputs.py run /tmp/before      # on the old commit
    python scripts/same_outputs.py run /tmp/after       # on the new one
    python scripts/same_outputs.py compare /tmp/before /tmp/after

``--skip-key K`` (repeatable) drops a top-level key of the GeoJSON provenance (``geo_hires``)
before hashing, for a change that adds provenance on purpose (e.g. timings). Status files of
``batch`` are compared without their ``seconds`` and ``timing``, cards without the command
that wrote them (it names the output folder), GeoPackages as SQL dumps
without the write time GDAL stamps into ``gpkg_contents``. Everything runs through the
``geo-hires`` command of the environment this script runs in, with ``../shared/data`` for the
real images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "airports.tif"
DATA = Path(os.environ.get("GEO_HIRES_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGES = DATA / "aircraft" / "train"
LABELS = DATA / "aircraft" / "annotations.csv"
BUNDLES = ("aircraft_lsn", "aircraft_yolo", "aircraft_cascade")
AOI = {  # two parts of the demo scene (apron, runway side), in WGS84
    "type": "MultiPolygon",
    "coordinates": [
        [[[4.362, 48.735], [4.372, 48.735], [4.372, 48.741], [4.362, 48.741], [4.362, 48.735]]],
        [[[4.38, 48.738], [4.39, 48.738], [4.39, 48.744], [4.38, 48.744], [4.38, 48.738]]],
    ],
}


def _cli(*args: str | Path, to: Path | None = None) -> None:
    """Run ``geo-hires ARGS``; its standard output goes to ``to`` (else nowhere)."""
    exe = Path(sys.executable).with_name("geo-hires")
    cmd = [str(exe), *map(str, args)]
    start = time.perf_counter()
    with open(to or os.devnull, "w") as fh:
        subprocess.run(cmd, check=True, stdout=fh)
    print(f"{time.perf_counter() - start:6.1f} s  geo-hires {' '.join(map(str, args))[:110]}")


def _demo(out: Path) -> None:
    d = out / "demo"
    d.mkdir()
    (d / "aoi.geojson").write_text(json.dumps(AOI))
    _cli("detect", DEMO, "-o", d / "demo.geojson", "-o", d / "demo.gpkg", "-o",
         d / "demo.parquet", "-o", d / "demo.fgb", "--quicklook", d / "demo.png",
         "--coverage", d / "coverage.geojson")  # fmt: skip
    for zoom in ("gate", "rl", "none", "random"):
        _cli("detect", DEMO, "-o", d / f"zoom_{zoom}.geojson", "--zoom", zoom, "--budget", "0.5")
    _cli("detect", DEMO, "-o", d / "zoom_gate_all.geojson", "--zoom", "gate")
    _cli("detect", DEMO, "-o", d / "aoi.geojson.out.geojson", "--aoi", d / "aoi.geojson",
         "--block", "512")  # fmt: skip
    _cli("detect", DEMO, "-o", d / "coarse.geojson", "--levels", "coarse")
    _cli("detect", DEMO, "-o", d / "ray.geojson", "--executor", "ray", "--actors", "2")
    for model in BUNDLES[1:]:
        _cli("detect", DEMO, "-o", d / f"{model}.geojson", "--model", model,
             "--score-threshold", "0.05")  # fmt: skip
    _cli("eval", d / "demo.geojson", ROOT / "demo" / "airports_truth.geojson", "--json",
         to=d / "eval.json")  # fmt: skip
    _cli("info", DEMO, to=d / "info.json")


def _validation(out: Path) -> None:
    card = json.loads((ROOT / "geo_hires/models/weights/aircraft_lsn/card.json").read_text())
    names = card["training"]["val_images"]
    listing = out / "val.txt"
    listing.write_text("".join(f"{IMAGES / n}\n" for n in names))
    for model in BUNDLES:
        _cli("batch", listing, "--out-dir", out / "val" / model, "--model", model,
             "--score-threshold", "0.05")  # fmt: skip


def _synthetic(out: Path, work: Path) -> None:
    scene = work / "synth144_seed5.tif"
    if not scene.is_file():
        _cli("synth", scene, "--width", "12000", "--height", "12000", "--seed", "5",
             "--density", "sparse")  # fmt: skip
    d = out / "synth144"
    d.mkdir()
    _cli("detect", scene, "-o", d / "default.geojson")
    _cli("detect", scene, "-o", d / "rl.geojson", "--zoom", "rl")
    _cli("detect", scene, "-o", d / "cascade.geojson", "--model", "aircraft_cascade")
    small = d / "synth_small.tif"
    _cli("synth", small, "--width", "900", "--height", "700", "--seed", "3", "--nodata",
         "--truth", d / "synth_truth.geojson")  # fmt: skip
    _cli("convert", d / "synth_truth.geojson", "--scene", small, "-o", d / "converted.geojson",
         "--gpkg", d / "converted.gpkg")  # fmt: skip


def _bundles(out: Path) -> None:
    d = out / "bundles"
    d.mkdir()
    _cli("cascade", "--scanner", "aircraft_lsn", "--refiner", "aircraft_yolo", "--out",
         d / "cascade", "--name", "cascade", "--gate-threshold", "0.2")  # fmt: skip


def _gpkg_dump(path: Path) -> bytes:
    """A GeoPackage's SQL dump without ``gpkg_contents.last_change``, which GDAL stamps with
    the time of writing (so two runs never give the same file bytes)."""
    import re
    import sqlite3

    with sqlite3.connect(path) as db:
        text = "\n".join(db.iterdump())
    stamp = r"'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z'"
    return re.sub(stamp, "'<last_change>'", text).encode()


def _canonical(path: Path, skip: set[str]) -> bytes:
    if path.suffix == ".gpkg":
        return _gpkg_dump(path)
    data = path.read_bytes()
    if path.name.endswith(".status.json"):
        doc = json.loads(data)
        doc.pop("seconds", None)
        doc.pop("timing", None)
        return json.dumps(doc, sort_keys=True).encode()
    if path.name == "card.json":
        doc = json.loads(data)
        doc.get("training", {}).pop("command", None)
        return json.dumps(doc, sort_keys=True).encode()
    if skip and path.suffix == ".geojson":
        doc = json.loads(data)
        for key in skip:
            doc.get("geo_hires", {}).pop(key, None)
        return json.dumps(doc, sort_keys=True).encode()
    return data


def _manifest(out: Path, skip: set[str]) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(_canonical(p, skip)).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tif")
    }


def run(out: Path, work: Path, skip: set[str]) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    _demo(out)
    _validation(out)
    _synthetic(out, work)
    _bundles(out)
    manifest = _manifest(out, skip)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(manifest)} files hashed -> {out / 'manifest.json'}")


def compare(a: Path, b: Path, skip: set[str]) -> int:
    ma, mb = _manifest(a, skip), _manifest(b, skip)
    differ = sorted(k for k in ma.keys() & mb.keys() if ma[k] != mb[k])
    only = sorted(ma.keys() ^ mb.keys())
    for k in differ:
        print(f"DIFFERENT  {k}")
    for k in only:
        print(f"ONLY IN {'A' if k in ma else 'B'}  {k}")
    same = len(ma.keys() & mb.keys()) - len(differ)
    print(f"{same} files identical, {len(differ)} different, {len(only)} on one side only")
    return 1 if differ or only else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--work", type=Path, default=Path("/tmp/geo-hires-same"))
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    for p in (r, c):
        p.add_argument("--skip-key", action="append", default=[])
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out, args.work, set(args.skip_key))
        return 0
    return compare(args.a, args.b, set(args.skip_key))


if __name__ == "__main__":
    sys.exit(main())
