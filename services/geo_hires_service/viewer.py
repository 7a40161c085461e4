"""The map viewer: a Leaflet page over a job's quicklook and detections.

The page itself holds no data and needs no token in the URL's query: it reads the token from
the URL fragment (``#token=…``, which browsers never send to a server, so it stays out of logs)
or asks for it, then fetches the job, its GeoJSON and its quicklook with the usual bearer
header. Leaflet is vendored from the npm registry (``static/leaflet``, BSD-2-Clause).
No base map is loaded: the service works offline, and the quicklook is the background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject

from geo_hires.scene import Scene

__all__ = ["STATIC", "map_page", "web_mercator_overlay"]

STATIC = Path(__file__).parent / "static"
MERCATOR = "EPSG:3857"


def web_mercator_overlay(quicklook: Path, scene: Scene, out: Path) -> list[list[float]] | None:
    """Warp the quicklook to Web Mercator (RGBA PNG at ``out``); return its Leaflet bounds.

    Why warp: Leaflet stretches an image overlay linearly in Web Mercator between lat/lon
    bounds, but a quicklook is in the scene's CRS. For a UTM scene away from its central
    meridian the grid is rotated by a degree or more, so an unwarped overlay lands tens of
    metres off the detections. Warped, it lines up. ``None`` for a scene without a CRS.
    """
    if scene.crs_wkt is None:
        return None
    rgb = np.asarray(Image.open(quicklook).convert("RGB")).transpose(2, 0, 1)
    h, w = rgb.shape[1:]
    src_transform = scene.transform * Affine.scale(scene.width / w, scene.height / h)
    left, bottom, right, top = array_bounds(h, w, src_transform)
    dst_transform, dw, dh = calculate_default_transform(
        scene.crs_wkt, MERCATOR, w, h, left, bottom, right, top
    )
    dst = np.zeros((4, dh, dw), np.uint8)
    src = np.concatenate([rgb, np.full((1, h, w), 255, np.uint8)])
    reproject(
        src,
        dst,
        src_transform=src_transform,
        src_crs=scene.crs_wkt,
        dst_transform=dst_transform,
        dst_crs=MERCATOR,
        resampling=Resampling.bilinear,
    )
    Image.fromarray(dst.transpose(1, 2, 0), "RGBA").save(out)
    x0, y1, x1, y0 = array_bounds(dh, dw, dst_transform)
    to_lonlat = Transformer.from_crs(MERCATOR, "EPSG:4326", always_xy=True)
    (west, east), (south, north) = to_lonlat.transform([x0, x1], [y1, y0])
    return [[south, west], [north, east]]


def map_page(job_id: str, root: str = "") -> str:
    """The viewer's HTML for one job (the id is checked by the caller to be a plain hex id),
    its URLs under ``root``, the path prefix the service is mounted under."""
    import html

    page = _PAGE.replace("__ROOT_JS__", json.dumps(root).replace("<", "\\u003c"))
    return page.replace("__ROOT__", html.escape(root, quote=True)).replace("__JOB__", job_id)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>geo_hires job __JOB__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="__ROOT__/v1/static/leaflet/leaflet.css">
<style>
 html, body { margin: 0; height: 100%; font: 14px system-ui, sans-serif; }
 #bar { position: absolute; z-index: 1000; top: 8px; left: 50px; background: #fff;
        padding: 6px 10px; border-radius: 4px; box-shadow: 0 1px 4px #0005; }
 #map { height: 100%; background: #333; }
</style></head>
<body><div id="bar">job __JOB__: <span id="status">loading…</span></div><div id="map"></div>
<script src="__ROOT__/v1/static/leaflet/leaflet.js"></script>
<script>
const job = "__JOB__", root = __ROOT_JS__;
let token = new URLSearchParams(location.hash.slice(1)).get("token")
  || sessionStorage.getItem("geo_hires_token") || prompt("API token");
sessionStorage.setItem("geo_hires_token", token);
const auth = { headers: { Authorization: "Bearer " + token } };
const status = document.getElementById("status");
const map = L.map("map", { zoomSnap: 0.25 });
async function get(path, kind) {
  const r = await fetch(path, auth);
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return kind === "blob" ? r.blob() : r.json();
}
function popup(f) {
  const p = f.properties;
  return `<b>${p.class}</b><br>score ${p.score.toFixed(3)}<br>level ${p.level}`;
}
(async () => {
  try {
    const info = await get(`${root}/v1/jobs/${job}`);
    if (info.state !== "succeeded") { status.textContent = info.state; return; }
    const [geo, view, img] = await Promise.all([
      get(`${root}/v1/jobs/${job}/result`), get(`${root}/v1/jobs/${job}/view`),
      get(`${root}/v1/jobs/${job}/quicklook`, "blob")]);
    if (view.bounds) {
      L.imageOverlay(URL.createObjectURL(img), view.bounds).addTo(map);
      map.fitBounds(view.bounds);
    }
    const layer = L.geoJSON(geo, { style: { color: "#ff3", weight: 2, fillOpacity: 0.1 },
      onEachFeature: (f, l) => l.bindPopup(popup(f)) }).addTo(map);
    if (!view.bounds && geo.features.length) map.fitBounds(layer.getBounds());
    document.body.dataset.features = String(geo.features.length);
    status.textContent = `${info.scene}: ${geo.features.length} detections`;
  } catch (e) { status.textContent = "error: " + e.message; }
})();
</script></body></html>
"""
