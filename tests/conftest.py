"""What every test folder shares: bundled fixtures, the shared data folder, synthetic scenes
(made once per session), a crop of the demo scene, configs, and Ray (started once, offline).

Markers (``pyproject.toml``): ``ray``, ``postgres``, ``browser``, ``qgis``, ``k8s``, ``slow``;
``pytest -m "not ray and not slow"`` is the quick loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from geo_hires.detect.options import DetectConfig

pytest_plugins = ["tests.required"]  # make test: browser and postgres tests may not skip

FIXTURES = Path(__file__).parent / "data"
DEMO = Path(__file__).resolve().parents[1] / "demo" / "airports.tif"
SMALL_CFG = DetectConfig(core=256, batch_size=2, score_threshold=0.05)
"""Small blocks (several per level on the test scenes), a low threshold (real peaks)."""


def shared_data() -> Path | None:
    """``$GEO_HIRES_SHARED_DATA`` or ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("GEO_HIRES_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((p for p in candidates if (p / "README.md").is_file()), None)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip(
            "shared data folder not found (set GEO_HIRES_SHARED_DATA or use ../shared/data)"
        )
    return path


@pytest.fixture(scope="session")
def small_cfg() -> DetectConfig:
    return SMALL_CFG


WriteTif = Callable[..., Path]


@pytest.fixture
def write_tif(tmp_path: Path) -> WriteTif:
    """Write a small GeoTIFF from an array ``(bands, H, W)``; keyword args go to the profile."""

    def write(name: str, data: np.ndarray, **profile: Any) -> Path:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        base: dict[str, Any] = {
            "driver": "GTiff",
            "count": data.shape[0],
            "height": data.shape[1],
            "width": data.shape[2],
            "dtype": data.dtype.name,
            "crs": "EPSG:32633",
            "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000),
        }
        base.update(profile)
        colorinterp = base.pop("colorinterp", None)
        path = tmp_path / name
        with rasterio.open(path, "w", **base) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
        return path

    return write


def _fake_scene(width: int, height: int, gsd: float | None = 0.5) -> Any:
    from geo_hires.scene import Scene

    return Scene(
        path="mem.tif", width=width, height=height, count=3, dtype="uint8", crs_wkt=None,
        transform=Affine.identity(), nodata=None, colorinterp=("red", "green", "blue"),
        has_mask=False, gsd_m=gsd, overviews=(),
    )  # fmt: skip


@pytest.fixture(scope="session")
def fake_scene() -> Callable[..., Any]:
    """``fake_scene(width, height, gsd=0.5)``: a scene's description with no file behind it
    (for planning, which reads no pixel)."""
    return _fake_scene


@pytest.fixture(scope="session")
def zoom_evidence() -> tuple[Any, Any]:
    """Six 1024 px window cores (3 x 2) and 60 seeded coarse peaks over them (``x, y, score,
    width, height``): the fixed evidence the shipped zoom policy's outputs are pinned on."""
    import numpy as np

    rng = np.random.default_rng(17)
    w = 1024.0
    cores = np.array([[x, y, x + w, y + w] for x in (0, w, 2 * w) for y in (0, w)])
    ev = np.column_stack(
        [rng.uniform(0, 3 * w, 60), rng.uniform(0, 2 * w, 60), rng.uniform(0.05, 1, 60),
         rng.uniform(10, 120, 60), rng.uniform(10, 120, 60)]
    )  # fmt: skip
    return cores, ev


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``synthetic(width, height, seed, density="dense", nodata=False)``: a seeded synthetic
    GeoTIFF (made once per session and spec; read-only for tests)."""
    from geo_hires.scene import Density, SynthSpec, write_synthetic

    made: dict[tuple[Any, ...], Path] = {}
    root = tmp_path_factory.mktemp("synthetic")

    def make(
        width: int, height: int, seed: int, density: str = "dense", nodata: bool = False
    ) -> Path:
        key = (width, height, seed, density, nodata)
        if key not in made:
            path = root / f"s{width}x{height}_{seed}_{density}{'_nodata' if nodata else ''}.tif"
            spec = SynthSpec(width=width, height=height, seed=seed, density=Density(density),
                             nodata=nodata)  # fmt: skip
            write_synthetic(path, spec)
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="session")
def demo_crop(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``demo_crop(x, y, width, height)``: a window of the demo scene (real Pléiades pixels,
    0.5 m, synthetic placement) as its own GeoTIFF."""
    root = tmp_path_factory.mktemp("demo-crops")

    def crop(x: int, y: int, width: int, height: int) -> Path:
        path = root / f"crop_{x}_{y}_{width}x{height}.tif"
        if not path.exists():
            with rasterio.open(DEMO) as src:
                win = Window(x, y, width, height)
                profile = {**src.profile, "width": width, "height": height,
                           "transform": src.window_transform(win)}  # fmt: skip
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(window=win))
        return path

    return crop


@pytest.fixture(scope="session")
def demo_cog(
    demo_crop: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """``demo_cog(x, y, width, height)``: that crop of the demo scene as a Cloud-Optimized
    GeoTIFF (GDAL's COG driver: 256 px tiles, internal overviews, DEFLATE)."""
    from rasterio.shutil import copy

    root = tmp_path_factory.mktemp("demo-cogs")

    def cog(x: int, y: int, width: int, height: int) -> Path:
        path = root / f"cog_{x}_{y}_{width}x{height}.tif"
        if not path.exists():
            copy(demo_crop(x, y, width, height), path, driver="COG", BLOCKSIZE=256,
                 COMPRESS="DEFLATE")  # fmt: skip
        return path

    return cog


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server on 127.0.0.1 (moto's server mode in its own process, counting what it
    serves: ``tests/s3server.py``), for the session."""
    pytest.importorskip("moto", reason="moto[server] is not installed (the dev extra)")
    from tests.s3server import s3_server as serve

    with serve(tmp_path_factory.mktemp("s3") / "server.log") as server:
        yield server


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The S3 server with this test's own empty bucket (``s3.bucket``) and the standard AWS_*
    settings of a client of it in the environment (credentials ``testing``); the work folder
    (staged outputs, mirrored journals) in ``tmp_path``."""
    import uuid

    monkeypatch.setenv("GEO_HIRES_WORK_DIR", str(tmp_path / "work"))
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=s3_server.bucket)
    return s3_server


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session: None) -> None:
    """A local offline Ray (2 CPUs), started on first use and kept for the session; a test
    that shut it down (a multi-node cluster test) gets a fresh one."""
    pytest.importorskip("ray", reason="Ray is not installed")
    from geo_hires.detect.ray_local import ensure_ray

    ensure_ray(num_cpus=2, object_store_mb=256)


@pytest.fixture
def local_equals_ray(ray_local: None, tmp_path: Path) -> Callable[..., Any]:
    """``local_equals_ray(scene, bundle, cfg)``: detect with the local executor and with two
    Ray actors, assert the GeoJSON bytes are equal, and return the local result."""
    from geo_hires.detect.executors import LocalExecutor
    from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    from geo_hires.export import write_geojson
    from geo_hires.pipeline import detect_scene

    def check(scene: Any, bundle: Any, cfg: DetectConfig) -> Any:
        local = detect_scene(scene, bundle, cfg, executor=LocalExecutor())
        ex = RayExecutor(config=RayConfig(actors=2))
        try:
            remote = detect_scene(scene, bundle, cfg, executor=ex)
        finally:
            ex.shutdown()
        assert remote.levels == local.levels
        write_geojson(tmp_path / "local.geojson", local.detections, scene)
        write_geojson(tmp_path / "ray.geojson", remote.detections, scene)
        assert (tmp_path / "local.geojson").read_bytes() == (tmp_path / "ray.geojson").read_bytes()
        return local

    return check


_SLOW_MODULES = ("test_ray.py", "test_train_detect.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutation testing (``make mutate``) run the quick tests first.

    mutmut stops a mutant's run at the first failing test, so a mutant that a quick test kills
    should not first wait for a Ray cluster or a training run: tests without a cluster come
    first, those of the slow modules last. Normal runs keep file order.
    """
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return

    def cost(item: pytest.Item) -> tuple[bool, bool]:
        cluster = "ray_local" in getattr(item, "fixturenames", ())
        return cluster, item.nodeid.split("::")[0].endswith(_SLOW_MODULES)

    items.sort(key=cost)
