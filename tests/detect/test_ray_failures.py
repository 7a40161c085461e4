"""Ray runs that go wrong, and where a local Ray listens: a unit that fails while others are in
flight, an actor's error as the user sees it, a batch scene resumed whole (what its status
says ran where), and a local start's listening addresses (loopback only)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from geo_hires.cli import main
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene

ray = pytest.importorskip("ray", reason="Ray is not installed")
pytestmark = pytest.mark.ray


def test_a_batch_scene_resumed_whole_reports_no_units_run(
    ray_local, tmp_path, synthetic, monkeypatch
):
    """Its status said where the previous scene's units ran (the executor's last stats)."""
    import geo_hires.pipeline.outputs as outputs

    ran, resumed = synthetic(1024, 768, seed=31), synthetic(1024, 768, seed=32)
    out = tmp_path / "o"
    (tmp_path / "b.txt").write_text(f"{resumed}\n")

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # fails once every unit is journalled
        m.setattr(outputs, "_write", disk_full)
        assert (
            main(["batch", str(tmp_path / "b.txt"), "--out-dir", str(out), "--block", "512"]) == 3
        )
    (tmp_path / "ab.txt").write_text(f"{ran}\n{resumed}\n")
    args = ["--out-dir", str(out), "--block", "512", "--executor", "ray", "--resume"]
    assert main(["batch", str(tmp_path / "ab.txt"), *args]) == 0
    first, second = (
        json.loads((out / f"{p.stem}.status.json").read_text()) for p in (ran, resumed)
    )
    assert sum(first["units_per_node"].values()) > 0 and first["units_resumed"] == 0
    assert second["units_resumed"] > 0 and second["units_per_node"] == {}
    assert (second["units_retried"], second["actors_lost"]) == (0, 0)


def test_a_local_ray_listens_on_loopback_only(ray_local):
    """This test session imported Ray before starting it, as a host application may: Ray reads
    its single-machine switch at import, so the start took the machine's address and its GCS,
    raylets and agents listened on every interface (anyone reaching the machine could run code
    on it)."""
    import psutil

    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    ray.get(ray.remote(lambda: 1).remote())  # a worker, and the agents, up
    listening = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:  # gone meanwhile
            continue
        listening |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


def _corrupt_tile(path: Path, col: int, row: int) -> None:
    """Overwrite one tile of every band with bytes no codec decodes."""
    import rasterio

    with rasterio.open(path) as src:
        where = [
            (int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=b)),
             int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=b)))
            for b in src.indexes
        ]  # fmt: skip
    with open(path, "r+b") as f:
        for offset, size in where:
            f.seek(offset)
            f.write(b"\xff" * size)


def test_a_failing_unit_fails_the_scene_cleanly_and_takes_the_units_in_flight(
    ray_local, synthetic, tmp_path
):
    """Two actors meet the same corrupt tile: the first error is the scene's; the other unit in
    flight was left untaken, and Ray printed its traceback later, in the middle of a batch."""
    import dataclasses
    import gc
    import logging

    from geo_hires.detect.journal import journal_for
    from geo_hires.detect.options import DetectOptions
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.errors import SceneReadError

    path = tmp_path / "bad.tif"
    path.write_bytes(synthetic(1536, 1536, seed=3).read_bytes())
    _corrupt_tile(path, 3, 3)
    bundle = load_bundle("aircraft_lsn")
    options = DetectOptions(model="aircraft_lsn", block=256, batch=1, threads=1)
    cfg = dataclasses.replace(options.detect_config(bundle.card, False), whole_read_pixels=200_000)
    scene = open_scene(path)
    journal = journal_for(tmp_path / "out.geojson", scene, bundle, cfg)
    ex = RayExecutor(config=RayConfig(actors=2))
    said = logging.Handler(logging.ERROR)  # Ray's loggers write to the stderr of their import
    said.emit = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
    errors: list[str] = []
    logging.getLogger("ray").addHandler(said)
    try:
        with pytest.raises(SceneReadError, match="corrupt tile"):
            detect_scene(scene, bundle, cfg, executor=ex, journal=journal)
        gc.collect()  # Ray reports an error nobody took when its reference goes
        time.sleep(3)
    finally:
        logging.getLogger("ray").removeHandler(said)
        ex.shutdown()
    assert not [e for e in errors if "Unhandled error" in e], errors[-1][-2000:]
    assert journal.path.read_text().count("\n") > 1  # the units done before are kept


def test_an_actors_error_reaches_the_user_as_its_cause_not_the_actors_traceback():
    """A full disk on an actor printed Ray's whole remote traceback as the one error line."""
    from geo_hires.detect.ray_actor import unwrapped
    from geo_hires.errors import SceneReadError

    for cause in (OSError(28, "No space left on device", "/tmp/x"), SceneReadError("bad tile")):
        raised = ray.exceptions.RayTaskError("run", "Traceback ...", cause).as_instanceof_cause()
        assert unwrapped(raised) is cause and "Traceback" not in str(unwrapped(raised))
    other = ray.exceptions.RayTaskError("run", "Traceback ...", ValueError("x"))
    assert unwrapped(other) is other  # not the CLI's to say in one line: the trace stays


def test_an_unreachable_address_is_one_line_at_once(tmp_path):
    """ray.init retried a head that does not answer for minutes before its error."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on (closed again before the run)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scene = Path(__file__).parents[1] / "data" / "OSBS_029.tif"
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "geo_hires.cli", "detect", str(scene), "-o",
         str(tmp_path / "o.geojson"), "--executor", "ray", "--address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120, env=os.environ,
    )  # fmt: skip
    assert run.returncode != 0 and time.monotonic() - start < 60
    lines = run.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and f"cannot reach the Ray cluster at --address 127.0.0.1:{port}" in lines[0]
    )
