"""The Ray executor: local bytes, a killed actor costs a retry, placement and loss budgets,
the fleet's life and read limits, batches and AOIs on Ray."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from geo_hires.cli import main
from geo_hires.detect.executors import LocalExecutor
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene
from tests.waiting import wait_for

ray = pytest.importorskip("ray", reason="Ray is not installed")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def scene_path(synthetic) -> Path:
    return synthetic(1400, 1100, seed=21, nodata=True)


def _geojson_bytes(result, scene, tmp_path: Path, name: str) -> bytes:
    from geo_hires.export import write_geojson

    write_geojson(tmp_path / name, result.detections, scene)
    return (tmp_path / name).read_bytes()


def test_ray_output_is_byte_identical_to_local(small_cfg, local_equals_ray, scene_path):
    local = local_equals_ray(open_scene(scene_path), load_bundle("aircraft_lsn"), small_cfg)
    assert len(local.detections) > 0


def test_killed_actor_costs_a_retry_not_the_job(small_cfg, ray_local, scene_path, tmp_path):
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor

    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    expected = detect_scene(scene, model, config=small_cfg, executor=LocalExecutor())
    pids: list[int] = []
    killed: list[int] = []
    results: list[str] = []

    class KillingExecutor(RayExecutor):
        def run_units(self, scene, bundle, units, cfg, *, on_result, read_config):
            def wrapped(r):
                results.append(r.key)
                on_result(r)
                if not killed:  # after the first finished unit, SIGKILL a busy actor's process
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

            super().run_units(scene, bundle, units, cfg, on_result=wrapped, read_config=read_config)

    ex = KillingExecutor(
        config=RayConfig(actors=2),
        on_started=lambda actors: pids.extend(ray.get([a.pid.remote() for a in actors])),
    )
    try:
        got = detect_scene(scene, model, config=small_cfg, executor=ex)
        live = ray.get([a.pid.remote() for a in ex.actors])
    finally:
        ex.shutdown()
    assert killed and killed[0] not in live and len(live) == 2  # died, and was replaced
    _wait_all_cpus_free()  # nothing of the lost actor holds the cluster's CPUs
    assert ex.stats is not None and ex.stats.actors_lost == 1 and ex.stats.retried == 1
    assert sum(ex.stats.per_node.values()) == len(results)  # every unit counted once
    assert _geojson_bytes(got, scene, tmp_path, "k.json") == _geojson_bytes(
        expected, scene, tmp_path, "e.json"
    )


def _wait_all_cpus_free(timeout_s: float = 120.0) -> None:
    """Ray frees an actor's CPUs shortly after it dies: wait for the whole cluster's."""
    total = ray.cluster_resources().get("CPU", 0.0)
    wait_for(lambda: ray.available_resources().get("CPU", 0.0), lambda cpus: cpus >= total,
             timeout=timeout_s, every=0.2, what=f"all {total} CPUs free")  # fmt: skip


def test_one_fleet_serves_a_model_and_its_settings_until_they_change_or_it_shuts_down(
    small_cfg, ray_local, synthetic, tmp_path
):
    import dataclasses

    from geo_hires.detect.ray_executor import RayConfig, RayExecutor

    model = load_bundle("aircraft_lsn")
    scene = open_scene(synthetic(700, 500, seed=4))
    _wait_all_cpus_free()
    total = ray.cluster_resources()["CPU"]
    fleets: list[list[int]] = []
    ex = RayExecutor(
        config=RayConfig(actors=1, num_cpus=0.5, placement_timeout_s=60.0),
        on_started=lambda actors: fleets.append(ray.get([a.pid.remote() for a in actors])),
    )
    try:
        units: list[int] = []
        first = detect_scene(scene, model, small_cfg, executor=ex,
                             on_progress=lambda done, of: units.append(of))  # fmt: skip
        assert ex.stats is not None and ex.stats.retried == ex.stats.actors_lost == 0
        assert sum(ex.stats.per_node.values()) == units[-1] > 1
        assert ray.available_resources().get("CPU") == total - 0.5  # the actor's own CPUs
        again = detect_scene(scene, model, config=small_cfg, executor=ex)
        assert len(fleets) == 1  # the same actor
        assert _geojson_bytes(again, scene, tmp_path, "a.json") == _geojson_bytes(
            first, scene, tmp_path, "f.json"
        )
        old = ex.actors[0]
        other = dataclasses.replace(small_cfg, score_threshold=0.1)
        detect_scene(scene, model, config=other, executor=ex)  # new settings, new actor
        assert len(fleets) == 2 and fleets[1] != fleets[0]
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(old.pid.remote(), timeout=30)  # the old actor was stopped
        ex.shutdown()
        assert ex.actors == []
        _wait_all_cpus_free()
        detect_scene(scene, model, config=other, executor=ex)  # after a shutdown: a new one
        assert len(fleets) == 3
        replanned = dataclasses.replace(model.card, gsd_m=0.4)  # same weights, other units
        detect_scene(scene, dataclasses.replace(model, card=replanned), config=other, executor=ex)
        assert len(fleets) == 4  # its actors hold the card they were started with
    finally:
        ex.shutdown()
    _wait_all_cpus_free()


def test_the_read_limits_of_a_job_hold_on_its_actors(small_cfg, ray_local, synthetic):
    from geo_hires.config import ReadConfig
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.errors import SceneTooLargeError

    model = load_bundle("aircraft_lsn")
    scene = open_scene(synthetic(1400, 1100, seed=21))  # no nodata: no read before the units
    limits = ReadConfig(max_read_pixels=150_000)  # the coarse level reads 1400x1100 at once
    ex = RayExecutor(config=RayConfig(actors=1))
    try:
        with pytest.raises(SceneTooLargeError, match=r"max_read_pixels \(150,000\)") as err:
            detect_scene(scene, model, config=small_cfg, executor=ex, read_config=limits)
        # the library's own error, not Ray's wrapper (whose text is the actor's traceback)
        assert type(err.value) is SceneTooLargeError and str(err.value).startswith("a read of")
    finally:
        ex.shutdown()


def test_batch_on_ray(ray_local, tmp_path, scene_path, capsys):
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
    assert (tmp_path / "o" / f"{scene_path.stem}.geojson").read_bytes() == local.read_bytes()


def test_work_with_no_placeable_actor_fails_the_scene_with_what_to_change(
    small_cfg, ray_local, scene_path
):
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.errors import ExecutorError

    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    # a GPU per actor on a cluster without GPUs: the actors wait for a node that never comes
    ex = RayExecutor(config=RayConfig(actors=1, num_gpus=1.0, placement_timeout_s=2.0))
    start = time.monotonic()
    try:
        placed = r"no Ray scanner actor could be placed.*lower actors or num_gpus$"
        with pytest.raises(ExecutorError, match=placed):
            detect_scene(scene, model, config=small_cfg, executor=ex)
    finally:
        ex.shutdown()
    assert time.monotonic() - start < 60


LOST_BEYOND = {
    "replacement_budget": (
        {"replacements": 0},
        r"(?s)1 Ray scanner actors died during this scene \(last: (?i:.*actor).*\); see the "
        r"Ray logs of the lost nodes, or raise RayConfig\.replacements",
    ),
    # one node here: a unit's first loss is its first node, and unit_attempts=1 allows one
    "unit_on_too_many_nodes": (
        {"unit_attempts": 1},
        r"(?s)work unit \S+ lost its Ray actor on 1 nodes \(last: (?i:.*actor).*\); "
        r"if nodes run out of memory, lower block or batch",
    ),
}


@pytest.mark.parametrize("budget", LOST_BEYOND)
def test_actors_lost_beyond_a_budget_fail_the_scene_saying_what_to_change(
    budget, small_cfg, ray_local, scene_path
):
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.errors import ExecutorError

    limits, refusal = LOST_BEYOND[budget]
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    pids: list[int] = []

    class KillingExecutor(RayExecutor):
        def run_units(self, scene, bundle, units, cfg, *, on_result, read_config):
            def wrapped(r):
                on_result(r)
                if len(pids) == 2:  # once: an actor dies, and the unit it runs loses it
                    os.kill(pids.pop(), signal.SIGKILL)

            super().run_units(scene, bundle, units, cfg, on_result=wrapped, read_config=read_config)

    ex = KillingExecutor(
        config=RayConfig(actors=2, **limits),
        on_started=lambda actors: pids.extend(ray.get([a.pid.remote() for a in actors])),
    )
    try:
        with pytest.raises(ExecutorError, match=refusal):
            detect_scene(scene, model, config=small_cfg, executor=ex)
    finally:
        ex.shutdown()
    assert ex.stats is not None and ex.stats.actors_lost == 1


def test_actors_lost_before_they_were_placed_are_replaced_within_the_budget(
    small_cfg, ray_local, scene_path, tmp_path
):
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.errors import ExecutorError

    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    expected = detect_scene(scene, model, config=small_cfg, executor=LocalExecutor())

    def killing(n: int):  # kills n of the first actors before their `ready` answers
        return lambda actors: [ray.kill(a, no_restart=True) for a in actors[:n]]

    ex = RayExecutor(config=RayConfig(actors=2, replacements=1), on_started=killing(1))
    try:
        got = detect_scene(scene, model, config=small_cfg, executor=ex)
        assert len(ex.actors) == 2 and ex.stats is not None and ex.stats.actors_lost == 1
    finally:
        ex.shutdown()
    assert _geojson_bytes(got, scene, tmp_path, "g.json") == _geojson_bytes(
        expected, scene, tmp_path, "e.json"
    )
    ex = RayExecutor(config=RayConfig(actors=2, replacements=1), on_started=killing(2))
    try:
        died = r"(?s)2 Ray scanner actors died during this scene \(last: (?i:.*actor)"
        with pytest.raises(ExecutorError, match=died):
            detect_scene(scene, model, config=small_cfg, executor=ex)
    finally:
        ex.shutdown()


def test_aoi_on_ray_matches_local(ray_local, tmp_path, scene_path):
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
    assert (out / f"{scene_path.stem}.geojson").read_bytes() == local.read_bytes()
    assert "aoi" in json.loads(local.read_text())["geo_hires"]


def test_ray_settings_are_checked_at_their_bounds():
    from geo_hires.detect.ray_executor import RayConfig
    from geo_hires.errors import ConfigError

    counts = "RayConfig: actors >= 1, num_cpus > 0 and num_gpus >= 0 required"
    budgets = "RayConfig: replacements >= 0, unit_attempts >= 1 and placement_timeout_s > 0"
    RayConfig(actors=1, num_cpus=0.1, num_gpus=0.0, replacements=0, unit_attempts=1,
              placement_timeout_s=0.1)  # fmt: skip
    for kw in ({"actors": 0}, {"num_cpus": 0.0}, {"num_gpus": -0.5}):
        with pytest.raises(ConfigError, match=f"^{re.escape(counts)}$"):
            RayConfig(**kw)
    for kw in ({"replacements": -1}, {"unit_attempts": 0}, {"placement_timeout_s": 0.0}):
        with pytest.raises(ConfigError, match=f"^{re.escape(budgets)}$"):
            RayConfig(**kw)


def test_run_stats_count_each_retry_and_the_work_per_node():
    import collections

    from geo_hires.detect.ray_executor import _Scene

    run = _Scene(queue=collections.deque())
    run.attempts.update({"A": 1, "B": 3, "C": 2})  # B ran 3 times, C twice
    run.per_node.update({"n1": 4, "n2": 2})
    run.lost = 3
    stats = run.stats()
    assert stats.retried == 3 and stats.actors_lost == 3
    assert stats.per_node == {"n1": 4, "n2": 2} and isinstance(stats.per_node, dict)


def test_work_waiting_with_no_placed_actor_fails_after_the_placement_timeout():
    import collections

    from geo_hires.detect.ray_executor import RayConfig, RayExecutor, _Scene, _Slot
    from geo_hires.errors import ExecutorError

    ex = RayExecutor(config=RayConfig(actors=1, num_cpus=1.5, num_gpus=0.5,
                                      placement_timeout_s=30.0))  # fmt: skip
    ex._slots = [_Slot(handle=None, ready_ref=None)]  # an actor not placed yet
    run = _Scene(queue=collections.deque())
    ex._check_stalled(run)
    start = run.idle_since
    assert start is not None and abs(start - time.monotonic()) < 5
    ex._check_stalled(run)
    assert run.idle_since == start  # the wait is counted from the first stall
    run.idle_since = time.monotonic() - 29.0
    ex._check_stalled(run)  # within the timeout
    run.idle_since = time.monotonic() - 31.0
    stalled = (
        r"placed for 30 s \(each needs 1.5 CPU and 0.5 GPU on one node\); add nodes, or lower "
        r"actors or num_gpus$"
    )
    with pytest.raises(ExecutorError, match=stalled):
        ex._check_stalled(run)
    ex._slots[0].node = "n1"  # a placed actor: nothing is stalled, the clock stops
    ex._check_stalled(run)
    assert run.idle_since is None
    ex._slots[0].node = None
    run.idle_since = time.monotonic() - 100
    run.inflight["ref"] = (ex._slots[0], None)  # work in flight: not stalled either
    ex._check_stalled(run)
    assert run.idle_since is None


def test_a_scenes_stats_count_the_units_of_every_stage(small_cfg, ray_local, synthetic):
    """A zoomed run scans the coarse level, then the windows it chose: two ``run_units`` calls
    for one scene, both in the stats a batch writes to the scene's status."""
    import dataclasses

    from geo_hires.detect.options import ZoomConfig
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor

    calls: list[int] = []

    class Counting(RayExecutor):
        def run_units(self, scene, bundle, units, cfg, **kw):
            calls.append(len(units))
            super().run_units(scene, bundle, units, cfg, **kw)

    model = load_bundle("aircraft_lsn")
    scene = open_scene(synthetic(900, 700, seed=4, density="dense"))
    cfg = dataclasses.replace(small_cfg, zoom=ZoomConfig(mode="gate", gate_threshold=0.05))
    # half a CPU is all it needs: an actor an earlier test stopped may still hold one a while
    ex = Counting(config=RayConfig(actors=1, num_cpus=0.5, placement_timeout_s=60.0))
    try:
        detect_scene(scene, model, cfg, executor=ex)
        assert len(calls) == 2 and min(calls) > 0, calls
        assert ex.stats is not None and sum(ex.stats.per_node.values()) == sum(calls)
        detect_scene(open_scene(scene.path), model, cfg, executor=ex)  # another scene run
        assert sum(ex.stats.per_node.values()) == sum(calls[2:])  # its own units only
    finally:
        ex.shutdown()
