"""The map viewer in a real headless Chromium: every detection of the job is drawn."""

from __future__ import annotations

import shutil

import pytest
import requests

from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.service.harness import TOKENS, running_service, wait_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_map_draws_every_detection(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    root = tmp_path / "scenes"
    root.mkdir()
    write_synthetic(
        root / "airfield.tif", SynthSpec(width=1400, height=1100, seed=21, density=Density.DENSE)
    )
    data = tmp_path / "data"
    data.mkdir()
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    with running_service(data, (root,)) as url:
        body = {"uri": str(root / "airfield.tif"), "options": {"score_threshold": 0.05}}
        job = requests.post(f"{url}/v1/jobs", json=body, headers=headers).json()
        info = wait_job(url, job["id"], headers=headers, timeout=120)
        assert info["state"] == "succeeded" and info["detections"] > 5
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 850})
            page.goto(f"{url}{info['links']['map']}#token={TOKENS[0]}")
            page.wait_for_selector("body[data-features]", timeout=30_000)
            drawn = page.locator("path.leaflet-interactive").count()
            overlay = page.locator("img.leaflet-image-layer").count()
            status = page.inner_text("#status")
            page.locator("path.leaflet-interactive").first.click(force=True)
            popup = page.inner_text(".leaflet-popup-content")
            page.screenshot(path=str(tmp_path / "map.png"))
            other = browser.new_page()
            other.goto(f"{url}{info['links']['map']}#token=not-a-token-at-all")
            other.wait_for_function(
                "document.getElementById('status').textContent.includes('error')"
            )
            browser.close()
    assert drawn == info["detections"] and overlay == 1
    assert f"{info['detections']} detections" in status
    assert "score" in popup and "level" in popup
    assert (tmp_path / "map.png").stat().st_size > 20_000


def test_overlay_is_warped_so_a_scene_pixel_lands_on_its_place(tmp_path, write_tif):
    """A UTM scene far from its central meridian (grid rotated ~1.6°): after the warp, a marked
    pixel sits where pyproj puts it, to within one overlay pixel."""
    import numpy as np
    from affine import Affine
    from geo_hires_service.viewer import web_mercator_overlay
    from PIL import Image
    from pyproj import Transformer

    from geo_hires.scene import open_scene

    transform = Affine(2.0, 0, 720_000, 0, -2.0, 5_400_000)  # EPSG:32631, ~2.6° east of 3°E
    scene = open_scene(
        write_tif("s.tif", np.zeros((3, 500, 800), np.uint8), transform=transform, crs="EPSG:32631")
    )
    img = np.zeros((500, 800, 3), np.uint8)
    img[300:304, 600:604] = 255  # the quicklook here has the scene's own size
    Image.fromarray(img).save(tmp_path / "q.png")
    (south, west), (north, east) = web_mercator_overlay(
        tmp_path / "q.png", scene, tmp_path / "m.png"
    )
    warped = np.asarray(Image.open(tmp_path / "m.png"))
    assert warped.shape[2] == 4 and (warped[..., 3] == 0).any()  # rotated: empty corners
    rows, cols = np.nonzero(warped[..., 0] > 128)
    merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    (x0, x1), (y0, y1) = merc.transform([west, east], [north, south])
    h, w = warped.shape[:2]
    got = (x0 + (cols.mean() + 0.5) / w * (x1 - x0), y0 + (rows.mean() + 0.5) / h * (y1 - y0))
    mx, my = transform * (602, 302)  # centre of the marked 4x4 block
    want = Transformer.from_crs("EPSG:32631", "EPSG:3857", always_xy=True).transform(mx, my)
    pixel = (x1 - x0) / w
    assert abs(got[0] - want[0]) < pixel and abs(got[1] - want[1]) < pixel


def test_a_map_drawn_while_its_job_is_deleted_is_410(tmp_path, monkeypatch):
    """The job's quicklook vanishing mid-draw (a DELETE racing the first /quicklook) was a 500."""
    import geo_hires_service.routes.maps as maps

    write_synthetic(tmp_path / "s.tif", SynthSpec(width=640, height=520, seed=41))
    (tmp_path / "data").mkdir()
    with running_service(tmp_path / "data", (tmp_path,)) as url:
        auth = {"Authorization": f"Bearer {TOKENS[0]}"}
        job = requests.post(f"{url}/v1/jobs", json={"uri": str(tmp_path / "s.tif")}, headers=auth)
        assert wait_job(url, job.json()["id"])["state"] == "succeeded"

        def deleted(*_args):
            raise FileNotFoundError("the job's folder was removed")

        monkeypatch.setattr(maps, "web_mercator_overlay", deleted)
        got = requests.get(f"{url}/v1/jobs/{job.json()['id']}/quicklook", headers=auth)
        assert got.status_code == 410 and "no longer kept" in got.json()["detail"], got.text
