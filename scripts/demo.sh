#!/usr/bin/env bash
# The README's demo: the shipped aircraft model on the bundled airport scene (real pixels,
# synthetic map placement; see demo/LICENSE.md), then a score against the scene's labels.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p out
$BIN/geo-hires detect demo/airports.tif -o out/demo.geojson --gpkg out/demo.gpkg --quicklook out/demo.png
$BIN/geo-hires eval out/demo.geojson demo/airports_truth.geojson
echo "demo outputs: out/demo.geojson out/demo.gpkg out/demo.png"
