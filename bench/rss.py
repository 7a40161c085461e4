"""Peak RSS of ``geo-hires detect`` on synthetic scenes of growing size (it must stay flat).

Each size is written once with ``geo-hires synth`` (streamed), then detected in a fresh process;
the peak resident set size of that process comes from ``getrusage(RUSAGE_CHILDREN)``.

    python bench/rss.py --sizes 0.1 0.4 1.0 --workdir /tmp/georss --out bench/results/rss.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from geo_hires.detect.options import DEFAULT_MODEL

CLI = [sys.executable, "-m", "geo_hires.cli"]  # the environment this script runs in


def _peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a child (via a wrapper that reports its own peak) → (MB, seconds)."""
    wrapper = (
        "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.4, 1.0], help="gigapixels")
    ap.add_argument("--workdir", default="/tmp/geo-hires-rss")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", help="results JSON")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for gp in args.sizes:
        side = int(math.sqrt(gp * 1e9))
        scene = work / f"synth_{gp}gp.tif"
        if not scene.exists():
            subprocess.run(
                [
                    *CLI,
                    "synth",
                    str(scene),
                    "--width",
                    str(side),
                    "--height",
                    str(side),
                    "--seed",
                    "1",
                ],
                check=True,
            )
        mb, secs = _peak_rss_mb(
            [
                *CLI,
                "detect",
                str(scene),
                "-o",
                str(work / f"synth_{gp}gp.geojson"),
                "--model",
                args.model,
                "--device",
                "cpu",
            ]
        )
        rows.append(
            {
                "gigapixels": gp,
                "side_px": side,
                "peak_rss_mb": round(mb),
                "seconds": round(secs, 1),
                "mp_per_s": round(side * side / 1e6 / secs, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=2))
    if args.out:
        doc = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "rows": rows}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
