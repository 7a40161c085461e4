"""A page of OGC features from a large result: indexed once vs parsed whole per page.

A result of N detections is written the way ``detect`` writes it (compact RFC 7946 GeoJSON,
small turned rectangles); the baseline parses it whole with a shapely geometry per feature,
which is what each page cost before the service indexed results; then the index is built
once and pages of 1,000 are read from it. Both in one run; the pages are checked equal.

    python bench/ogc_pages.py --features 100000 --out bench/results/ogc_pages.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from geo_hires_service.feature_index import read_features, result_index

from geo_hires.georef import lonlat_bounds

PAGE = 1000


def write_result(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform((4.0, 48.0), (5.0, 49.0), (n, 2))
    props = {"class": "Airplane", "score": 0.9, "level": "refine", "model": "aircraft_cascade"}
    feats = []
    for x, y in xy.round(8).tolist():
        ring = [
            [x, y],
            [x + 4e-4, y + 1e-5],
            [x + 3.9e-4, y + 4e-4],
            [x - 1e-5, y + 3.9e-4],
            [x, y],
        ]
        feats.append({"type": "Feature", "properties": props,
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})  # fmt: skip
    doc = {"type": "FeatureCollection", "features": feats}
    path.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")


def parsed_whole(path: Path) -> list[dict[str, Any]]:
    """What a page cost before: the whole result parsed, each feature's bounds computed."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = [{"type": "Feature", "id": i + 1, "geometry": f["geometry"],
            "properties": f["properties"]} for i, f in enumerate(doc["features"])]  # fmt: skip
    np.array([lonlat_bounds(shapely.geometry.shape(f["geometry"])) for f in out])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--pages", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.geojson"
        write_result(path, args.features)
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        t = time.perf_counter()
        whole = parsed_whole(path)
        baseline = time.perf_counter() - t
        t = time.perf_counter()
        result_index(str(path), stamp)
        index = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(args.pages):
            rows = np.arange(k * PAGE, (k + 1) * PAGE)
            page = read_features(str(path), stamp, rows)
            assert page == whole[k * PAGE : (k + 1) * PAGE]
        per_page = (time.perf_counter() - t) / args.pages
        out = {
            "features": args.features,
            "mib": round(st.st_size / 2**20, 1),
            "parsed_whole_per_page_s": round(baseline, 2),
            "index_once_s": round(index, 2),
            "indexed_page_s": round(per_page, 3),
            "page_speedup": round(baseline / per_page, 1),
            "command": f"python bench/ogc_pages.py --features {args.features}",
        }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
