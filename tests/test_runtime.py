"""Executors: Ray matches local byte for byte and survives a killed actor; resume; batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geo_hires.cli import main
from geo_hires.models.registry import load_model
from geo_hires.pipeline import DetectConfig, LocalExecutor, detect_scene
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic

ray = pytest.importorskip("ray", reason="Ray is not installed")

CFG = DetectConfig(core=256, batch_size=2, score_threshold=0.05)


@pytest.fixture(scope="module")
def ray_cluster():
    from geo_hires.runtime.ray_local import ensure_ray

    ensure_ray(num_cpus=2, object_store_mb=256)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rt") / "scene.tif"
    write_synthetic(
        path, SynthSpec(width=1400, height=1100, seed=21, density=Density.DENSE, nodata=True)
    )
    return path


def _geojson_bytes(result, scene, tmp_path: Path, name: str) -> bytes:
    from geo_hires.export import write_geojson

    write_geojson(tmp_path / name, result.detections, scene)
    return (tmp_path / name).read_bytes()


def test_ray_output_is_byte_identical_to_local(ray_cluster, scene_path, tmp_path):
    from geo_hires.runtime.ray_executor import RayConfig, RayExecutor

    model, card = load_model("aircraft_lsn")
    scene = open_scene(scene_path)
    local = detect_scene(scene, model, card, config=CFG, executor=LocalExecutor())
    ex = RayExecutor(config=RayConfig(actors=2))
    try:
        remote = detect_scene(scene, model, card, config=CFG, executor=ex)
    finally:
        ex.shutdown()
    assert len(local.detections) > 0
    assert _geojson_bytes(local, scene, tmp_path, "l.json") == _geojson_bytes(
        remote, scene, tmp_path, "r.json"
    )


def test_killed_actor_costs_a_retry_not_the_job(ray_cluster, scene_path, tmp_path):
    from geo_hires.runtime.ray_executor import RayConfig, RayExecutor

    model, card = load_model("aircraft_lsn")
    scene = open_scene(scene_path)
    expected = detect_scene(scene, model, card, config=CFG, executor=LocalExecutor())
    pids: list[int] = []
    killed: list[int] = []
    results: list[str] = []

    class KillingExecutor(RayExecutor):
        def run_units(self, scene, model, card, units, cfg, *, on_result, read_config):
            def wrapped(r):
                results.append(r.key)
                on_result(r)
                if not killed:  # after the first finished unit, SIGKILL a busy actor's process
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

            super().run_units(
                scene, model, card, units, cfg, on_result=wrapped, read_config=read_config
            )

    ex = KillingExecutor(
        config=RayConfig(actors=2),
        on_started=lambda actors: pids.extend(ray.get([a.pid.remote() for a in actors])),
    )
    try:
        got = detect_scene(scene, model, card, config=CFG, executor=ex)
        live = ray.get([a.pid.remote() for a in ex.actors])
    finally:
        ex.shutdown()
    assert killed and killed[0] not in live and len(live) == 2  # died, and was replaced
    assert ex.stats is not None and ex.stats.actors_lost == 1 and ex.stats.retried == 1
    assert sum(ex.stats.per_node.values()) == len(results)  # every unit counted once
    assert _geojson_bytes(got, scene, tmp_path, "k.json") == _geojson_bytes(
        expected, scene, tmp_path, "e.json"
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "geo_hires.cli", *args]


def test_killed_driver_resumes_to_the_same_geojson(tmp_path, scene_path):
    ref = tmp_path / "ref.geojson"
    assert main(["detect", str(scene_path), "-o", str(ref), "--block", "128", "--batch", "1"]) == 0
    out = tmp_path / "out.geojson"
    journal = Path(f"{out}.journal")
    proc = subprocess.Popen(
        _cli("detect", str(scene_path), "-o", str(out), "--block", "128", "--batch", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed; use a bigger scene"
    done_before = len(journal.read_text().splitlines()) - 1
    assert done_before >= 5
    res = subprocess.run(
        _cli(
            "detect", str(scene_path), "-o", str(out), "--block", "128", "--batch", "1", "--resume"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "units resumed" in res.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert not journal.exists()  # removed once the output is written


def test_batch_isolates_a_bad_scene_and_resume_skips_done(tmp_path, scene_path, capsys):
    good2 = tmp_path / "second.tif"
    write_synthetic(good2, SynthSpec(width=600, height=500, seed=3))
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# a comment\n{scene_path}\nbroken.tif\n\nsecond.tif\n")
    out = tmp_path / "out"
    rc = main(["batch", str(listing), "--out-dir", str(out), "--block", "512"])
    assert rc == 3 and "2 done, 1 failed" in capsys.readouterr().out
    status = {p.name: json.loads(p.read_text()) for p in out.glob("*.status.json")}
    assert (
        status["broken.status.json"]["state"] == "failed"
        and "cannot open" in status["broken.status.json"]["error"]
    )
    assert status["scene.status.json"]["state"] == status["second.status.json"]["state"] == "done"
    assert (out / "scene.geojson").exists() and (out / "second.geojson").exists()
    rc = main(["batch", str(listing), "--out-dir", str(out), "--block", "512", "--resume"])
    assert rc == 3 and "0 done, 1 failed, 2 skipped" in capsys.readouterr().out


def test_batch_on_ray(ray_cluster, tmp_path, scene_path, capsys):
    listing = tmp_path / "one.txt"
    listing.write_text(f"{scene_path}\n")
    rc = main(
        [
            "batch",
            str(listing),
            "--out-dir",
            str(tmp_path / "o"),
            "--executor",
            "ray",
            "--block",
            "512",
        ]
    )
    assert rc == 0 and "1 done" in capsys.readouterr().out
    local = tmp_path / "local.geojson"
    assert main(["detect", str(scene_path), "-o", str(local), "--block", "512"]) == 0
    assert (tmp_path / "o" / "scene.geojson").read_bytes() == local.read_bytes()


def test_work_with_no_placeable_actor_fails_the_scene_with_what_to_change(ray_cluster, scene_path):
    from geo_hires.errors import ExecutorError
    from geo_hires.runtime.ray_executor import RayConfig, RayExecutor

    model, card = load_model("aircraft_lsn")
    scene = open_scene(scene_path)
    # a GPU per actor on a cluster without GPUs: the actors wait for a node that never comes
    ex = RayExecutor(config=RayConfig(actors=1, num_gpus=1.0, placement_timeout_s=2.0))
    start = time.monotonic()
    try:
        with pytest.raises(ExecutorError, match=r"no Ray scanner actor could be placed.*--actors"):
            detect_scene(scene, model, card, config=CFG, executor=ex)
    finally:
        ex.shutdown()
    assert time.monotonic() - start < 60


def test_actors_dying_beyond_the_replacement_budget_fail_the_scene(ray_cluster, scene_path):
    from geo_hires.errors import ExecutorError
    from geo_hires.runtime.ray_executor import RayConfig, RayExecutor

    model, card = load_model("aircraft_lsn")
    scene = open_scene(scene_path)
    pids: list[int] = []

    class KillingExecutor(RayExecutor):
        def run_units(self, scene, model, card, units, cfg, *, on_result, read_config):
            def wrapped(r):
                on_result(r)
                if pids:
                    os.kill(pids.pop(), signal.SIGKILL)

            super().run_units(
                scene, model, card, units, cfg, on_result=wrapped, read_config=read_config
            )

    ex = KillingExecutor(
        config=RayConfig(actors=2, replacements=0),
        on_started=lambda actors: pids.extend(ray.get([a.pid.remote() for a in actors])),
    )
    try:
        with pytest.raises(ExecutorError, match="1 Ray scanner actors died"):
            detect_scene(scene, model, card, config=CFG, executor=ex)
    finally:
        ex.shutdown()


def test_aoi_on_ray_matches_local(ray_cluster, tmp_path, scene_path):
    import geopandas as gpd
    import shapely

    scene = open_scene(scene_path)
    corners = [scene.transform @ p for p in [(100, 100), (800, 100), (800, 700), (100, 700)]]
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Polygon(corners)], crs=scene.crs).to_file(aoi)
    listing = tmp_path / "one.txt"
    listing.write_text(f"{scene_path}\n")
    args = ["--block", "256", "--aoi", str(aoi)]
    out = tmp_path / "ray"
    batch = ["batch", str(listing), "--out-dir", str(out), "--executor", "ray", *args]
    assert main(batch) == 0
    local = tmp_path / "local.geojson"
    assert main(["detect", str(scene_path), "-o", str(local), *args]) == 0
    assert (out / "scene.geojson").read_bytes() == local.read_bytes()
    assert "aoi" in json.loads(local.read_text())["geo_hires"]
