"""Whole-process ``geo-hires detect`` against a raw windowed decode of the same file.

The promise is a scan that is nearly free next to reading the pixels, so the number reported is
``decode seconds / detect seconds`` (1.0: detection costs no more than decoding): the decode reads
every pixel of the scene window by window (1024² windows, the scanner's block core) with rasterio
and nothing else; the detect is a fresh ``geo-hires detect SCENE -o OUT.geojson`` process (start,
imports, model load, reads, scan, merge, write), with each ``--variant``'s options. The two
alternate ``--repeat`` times and the best of each is kept (this machine is noisy).

    python bench/decode_ratio.py --size 12000 --variant default= \\
        --variant fp32=--precision,fp32 --out bench/results/decode_ratio_144mp.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import rasterio
from rasterio.windows import Window

CLI = [sys.executable, "-m", "geo_hires.cli"]


def decode_seconds(path: Path, side: int = 1024) -> float:
    """Every pixel of ``path`` read once, window by window, as the scanner reads a level."""
    start = time.perf_counter()
    with rasterio.open(path) as src:
        for row in range(0, src.height, side):
            for col in range(0, src.width, side):
                w = Window(col, row, min(side, src.width - col), min(side, src.height - row))
                src.read(window=w)
    return time.perf_counter() - start


def detect_seconds(path: Path, out: Path, options: list[str]) -> float:
    """A fresh ``geo-hires detect`` process, wall clock (start and model load included)."""
    start = time.perf_counter()
    subprocess.run([*CLI, "detect", str(path), "-o", str(out), *options], check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def scene(workdir: Path, size: int, seed: int) -> Path:
    """The synthetic scene of the issue (``geo-hires synth``, sparse), written once."""
    path = workdir / f"synth_{size}_{seed}.tif"
    if not path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([*CLI, "synth", str(path), "--width", str(size), "--height", str(size),
                        "--seed", str(seed), "--density", "sparse"], check=True)  # fmt: skip
    return path


def measure(path: Path, variants: dict[str, list[str]], repeat: int, out: Path) -> dict[str, Any]:
    decode: list[float] = []
    detect: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        decode.append(decode_seconds(path))
        for name, options in variants.items():
            detect[name].append(detect_seconds(path, out / f"{name}.geojson", options))
    best = min(decode)
    with rasterio.open(path) as src:
        mp = src.width * src.height / 1e6
    return {
        "scene": str(path), "megapixels": round(mp, 1), "decode_s": [round(t, 2) for t in decode],
        "variants": {
            name: {"options": variants[name], "detect_s": [round(t, 2) for t in times],
                   "decode_over_detect": round(best / min(times), 3),
                   "detections": len(json.loads((out / f"{name}.geojson").read_text())["features"])}
            for name, times in detect.items()
        },
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=12000, help="scene side in pixels")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=OPT,OPT…: detect options of one variant (repeatable)")  # fmt: skip
    ap.add_argument("--scene", help="an existing scene instead of a synthetic one")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/geo-hires-bench")
    ap.add_argument("--out", help="results JSON")
    a = ap.parse_args()
    variants = {v.partition("=")[0]: [o for o in v.partition("=")[2].split(",") if o]
                for v in a.variant or ["default="]}  # fmt: skip
    work = Path(a.workdir)
    path = Path(a.scene) if a.scene else scene(work, a.size, a.seed)
    outs = work / "decode_ratio_out"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir(parents=True)
    result = measure(path, variants, a.repeat, outs)
    result["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
