"""One reader shared by threads: reads take turns, so they equal serial reads (a GDAL dataset
read from two threads at once crashed the process: a segfault, so the reads run in a child)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from rasterio.windows import Window
from geo_hires.scene import SceneReader, open_scene

windows = [Window(c, r, 512, 512) for r in range(0, 2048, 512) for c in range(0, 4096, 512)]
with SceneReader(open_scene(sys.argv[1])) as reader:  # threads first: a cold block cache
    with ThreadPoolExecutor(4) as pool:
        shared = [d.image for d in pool.map(reader.read, windows)]
with SceneReader(open_scene(sys.argv[1])) as reader:
    serial = [reader.read(w).image for w in windows]
assert all(np.array_equal(a, b) for a, b in zip(serial, shared, strict=True))
print("same", len(windows))
"""


def test_threads_sharing_a_reader_read_what_one_thread_reads():
    scene = ROOT / "demo" / "airports.tif"
    done = subprocess.run([sys.executable, "-c", CHILD, str(scene)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "same 32", (done.returncode, done.stderr)
