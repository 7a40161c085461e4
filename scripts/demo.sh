#!/usr/bin/env bash
# The README's demo: the geo core on a bundled real scene (NEON trees, EPSG:32617).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p out
$BIN/geo-hires info tests/data/OSBS_029.tif
$BIN/geo-hires plan tests/data/OSBS_029.tif --levels full:128:0.25,coarse:128:0.25:2
$BIN/geo-hires convert tests/data/OSBS_029.csv --scene tests/data/OSBS_029.tif \
  -o out/demo.geojson --gpkg out/demo.gpkg --quicklook out/demo.png
$BIN/geo-hires eval out/demo.geojson tests/data/OSBS_029.csv --scene tests/data/OSBS_029.tif
echo "demo outputs: out/demo.geojson out/demo.gpkg out/demo.png"
