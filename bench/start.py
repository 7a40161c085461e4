"""Whole-process start: ``geo-hires --help`` and ``geo-hires detect`` on a 1 MP scene.

On a small scene the process, not the scan, is the cost: interpreter, imports, model load. Each
variant is a fresh process, the variants alternate ``--repeat`` times (this machine is noisy)
and the best and median of each are kept. Two variants are baselines measured in the same run:

- ``import_torch``: ``python -c "import torch"``, the floor of any run that scans;
- ``default_with_torchvision``: the default detect with torchvision's Python package imported
  first, as ultralytics' warmup did before the cascade skipped it on the CPU.

    python bench/start.py --out bench/results/start.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = "from geo_hires.cli import main; import sys; sys.exit(main(sys.argv[1:]))"


def _variants(scene: Path, out: Path) -> dict[str, list[str]]:
    detect = ["detect", str(scene), "-o", str(out)]
    return {
        "import_torch": [sys.executable, "-c", "import torch"],
        "help": [sys.executable, "-c", CLI, "--help"],
        "detect_lsn": [sys.executable, "-c", CLI, *detect, "--model", "aircraft_lsn"],
        "detect_default": [sys.executable, "-c", CLI, *detect],
        "default_with_torchvision": [sys.executable, "-c", "import torchvision; " + CLI, *detect],
    }


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000, help="scene side in pixels (1000: 1 MP)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        side = str(args.size)
        subprocess.run([sys.executable, "-c", CLI, "synth", str(scene), "--width", side,
                        "--height", side, "--seed", "5", "--density", "sparse"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        variants = _variants(scene, Path(tmp) / "out.geojson")
        _seconds(variants["detect_default"])  # page cache and the ultralytics settings folder
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeat):
            for name, cmd in variants.items():
                times[name].append(round(_seconds(cmd), 3))
    best = {k: min(v) for k, v in times.items()}
    report = {
        "megapixels": args.size**2 / 1e6,
        "seconds": times,
        "best_s": best,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "default_over_torch_import": round(best["detect_default"] / best["import_torch"], 2),
        "torchvision_over_default": round(
            best["default_with_torchvision"] / best["detect_default"], 2
        ),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
