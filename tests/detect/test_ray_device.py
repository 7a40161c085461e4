"""A Ray run's device and ``--precision auto`` are decided where its actors run, not on the
driver: on a cluster the driver is a head without the workers' GPUs, or with another CPU.

The worker node here declares a GPU to Ray that is not there (no CUDA on this machine), so a
run that asks for GPUs per actor gets placed, and its actors run on that node's CPU: ``auto``
must follow that CPU (bf16 where it has AVX-512 BF16/AMX), and ``--device cuda`` must be
refused for what the worker lacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geo_hires.detect.options import native_bf16
from tests.raycluster import local_cluster

ray = pytest.importorskip("ray", reason="Ray is not installed")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[Any]:
    with local_cluster(workers=1, cpus_per_worker=1, gpus_per_worker=1) as c:
        yield c


def _detect(scene: Path, out: Path, address: str, *more: str) -> subprocess.CompletedProcess[str]:
    from geo_hires.detect.ray_local import offline_env

    with offline_env():
        env = dict(os.environ)
    cmd = [sys.executable, "-m", "geo_hires.cli", "detect", str(scene), "-o", str(out)]
    cmd += ["--executor", "ray", "--address", address, "--actors", "1", "--gpus-per-actor", "1"]
    cmd += ["--placement-timeout", "120", *more]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_auto_precision_follows_the_actors_device_not_the_drivers(gpu_cluster, demo_crop, tmp_path):
    scene, out = demo_crop(512, 256, 512, 512), tmp_path / "d.geojson"
    done = _detect(scene, out, gpu_cluster.address)
    assert done.returncode == 0, done.stderr
    # the driver used to read "GPUs per actor" as CUDA and ask its own (absent) GPU: fp32
    expected = "bf16" if native_bf16("cpu") else "fp32"  # the cascade's card: bf16 keeps AP
    assert json.loads(out.read_text())["geo_hires"]["precision"] == expected


def test_device_cuda_is_checked_on_the_actors_node(gpu_cluster, demo_crop, tmp_path):
    scene, out = demo_crop(512, 256, 512, 512), tmp_path / "d.geojson"
    done = _detect(scene, out, gpu_cluster.address, "--device", "cuda")
    err = done.stderr.strip().splitlines()  # not Ray's "Connecting to..." INFO lines either
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith("geo-hires: error: --device cuda: a Ray worker given 1 GPU per actor")
    assert not out.exists()


def test_device_cuda_without_gpus_per_actor_is_refused():
    from geo_hires.detect.ray_executor import RayConfig
    from geo_hires.errors import ConfigError

    said = r"^RayConfig: device='cuda' needs GPUs per actor \(num_gpus=1\)$"  # keywords
    with pytest.raises(ConfigError, match=said):
        RayConfig(device="cuda", num_gpus=0)
    with pytest.raises(ConfigError, match="cpu, cuda or None"):
        RayConfig(device="tpu")
