#!/usr/bin/env bash
# Runs every benchmark in bench/ and writes bench/results/*.json (about 20 minutes on 2 cores).
# Needs `pip install sahi` in the environment (make bench does it) and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${GEO_HIRES_SHARED_DATA:-../shared/data}
WORK=${BENCH_WORK:-/tmp/geo-hires-bench}
mkdir -p bench/results "$WORK"
PY=.venv/bin/python
$PY bench/block_vs_naive.py demo/airports.tif --core 1024 > bench/results/block_vs_naive.json
$PY bench/block_vs_naive.py demo/airports.tif --core 1024 --precision bf16 > bench/results/block_vs_naive_bf16.json
$PY bench/overhead.py demo/airports.tif > bench/results/overhead.json
$PY bench/remote.py demo/airports.tif --out bench/results/remote.json
$PY bench/eval_scale.py --sizes 500 3000 30000 --out bench/results/eval_scale.json
$PY bench/ogc_pages.py --features 100000 --out bench/results/ogc_pages.json
[ -f "$WORK/synth100.tif" ] || .venv/bin/geo-hires synth "$WORK/synth100.tif" --width 10000 --height 10000 --seed 7
$PY bench/vs_sahi.py --val-from geo_hires/models/weights/aircraft_lsn/card.json \
  --images "$DATA/aircraft/train" --labels "$DATA/aircraft/annotations.csv" \
  --synthetic "$WORK/synth100.tif" > bench/results/vs_sahi.json
$PY bench/vs_sahi.py --val-from geo_hires/models/weights/aircraft_lsn/card.json \
  --images "$DATA/aircraft/train" --labels "$DATA/aircraft/annotations.csv" \
  --synthetic "$WORK/synth100.tif" --overlap 0.5 > bench/results/vs_sahi_overlap05.json
$PY bench/overhead.py "$WORK/synth100.tif" --repeat 1 > bench/results/overhead_100mp.json
$PY bench/rss.py --sizes 0.1 0.4 1.0 --workdir "$WORK" --out bench/results/rss.json
$PY bench/ray_vs_local.py "$WORK/synth100.tif" > bench/results/ray_vs_local_100mp.json
[ -f "$WORK/synth_1.0gp.tif" ] && $PY bench/ray_vs_local.py "$WORK/synth_1.0gp.tif" --memory-only > bench/results/ray_vs_local_1gp.json
$PY bench/service.py "$WORK/synth100.tif" > bench/results/service_100mp.json
$PY bench/sizing.py "$WORK/synth100.tif" --cpus 2 --threads 1 --out bench/results/sizing.json
$PY bench/band_order.py "$DATA/aircraft/train" "$DATA/aircraft/annotations.csv" > bench/results/band_order.json
$PY bench/yolo_compare.py --images "$DATA/aircraft/train" --labels "$DATA/aircraft/annotations.csv" \
  --synthetic "$WORK/synth100.tif" --out bench/results/yolo_compare.json
[ -f "$WORK/synth144.tif" ] || .venv/bin/geo-hires synth "$WORK/synth144.tif" --width 12000 --height 12000 --seed 7
$PY bench/zoom.py --images "$DATA/aircraft/train" --labels "$DATA/aircraft/annotations.csv" \
  --synthetic "$WORK/synth144.tif" --work "$WORK" --out bench/results/zoom.json --plot docs/zoom_curve.png
$PY bench/start.py --out bench/results/start.json
$PY bench/decode_ratio.py --size 12000 --workdir "$WORK" --variant default= --variant lsn=--model,aircraft_lsn \
  --variant lsn_rl=--model,aircraft_lsn,--zoom,rl --variant rl=--zoom,rl --out bench/results/decode_ratio_144mp.json
if [ -f "$WORK/synth_31622_5.tif" ]; then  # the 1 GP scene: geo-hires synth … --width 31622 --height 31622 --seed 5 --density sparse
  $PY bench/decode_ratio.py --scene "$WORK/synth_31622_5.tif" --variant default= \
    --variant lsn_rl=--model,aircraft_lsn,--zoom,rl --out bench/results/decode_ratio_1gp.json
fi
