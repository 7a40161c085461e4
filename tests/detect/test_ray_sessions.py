"""Local Ray session folders: those of ended processes are removed at the next local start
(Ray keeps each one's logs and sockets; a machine running a batch a minute gathered hundreds)."""

from __future__ import annotations

import os
import subprocess
import sys

from geo_hires.detect.ray_local import prune_sessions


def test_only_the_sessions_of_ended_processes_are_removed(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead, live = int(ended.stdout), os.getpid()
    names = {
        "dead": f"session_2026-12-05_03-19-51_366517_{dead}",
        "live": f"session_2026-12-05_03-20-00_000001_{live}",
        "latest": f"session_2026-12-05_03-21-00_000002_{dead + 1_000_000}",  # pid: none such
        "odd": "session_kept_by_hand",
        "other": f"session_mine_{dead}",  # not Ray's name: not Ray's to remove
        "logs": "logs",
    }
    for name in names.values():
        (tmp_path / name / "logs").mkdir(parents=True)
    (tmp_path / "session_latest").symlink_to(tmp_path / names["latest"])
    gone = prune_sessions(tmp_path)
    assert gone == [tmp_path / names["dead"]]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names["live"], names["latest"], names["odd"], names["other"], "logs",
                    "session_latest"}  # fmt: skip
    assert prune_sessions(tmp_path / "missing") == []
