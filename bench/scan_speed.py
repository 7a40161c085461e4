"""Scan-only throughput of a bundle's scanning network, per memory layout and precision.

The forward pass alone on a batch of ``--batch`` random ``--size``² blocks (what the scanner
feeds it), best of ``--repeat`` interleaved rounds, against fp32 NCHW measured in the same run:
fp32 channels-last (weights and input converted before the clock, as ``prepare`` and the
scanner do), and the reduced precisions the CPU or GPU runs natively (bf16 autocast); the
largest difference to fp32 NCHW on the heatmap is reported for each.

    python bench/scan_speed.py --model aircraft_lsn --out bench/results/scan_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from geo_hires.detect.forward import network_output
from geo_hires.detect.options import Precision, native_bf16
from geo_hires.models.bundle import load_bundle


def _forward(nets: Any, x: Any, precision: Precision, layout: str) -> torch.Tensor:
    """``nets``/``x``: ``{layout: network}``/``{layout: input}``, each already in its layout."""
    if layout == "nchw":
        with torch.inference_mode():
            return nets[layout](x[layout]).float()
    return network_output(nets[layout], x[layout], precision)


def _seconds(nets: Any, x: Any, precision: Precision, layout: str) -> float:
    start = time.perf_counter()
    _forward(nets, x, precision, layout)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="aircraft_lsn")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = load_bundle(args.model).network().to(device).eval()
    x0 = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    cl = torch.channels_last
    nets = {"nchw": net, "channels_last": copy.deepcopy(net).to(memory_format=cl)}
    x = {
        "nchw": x0.to(device).contiguous(),
        "channels_last": x0.to(device).contiguous(memory_format=cl),
    }
    variants: list[tuple[Precision, str]] = [("fp32", "nchw"), ("fp32", "channels_last")]
    if native_bf16(device.type):
        variants.append(("bf16", "channels_last"))
    ref = _forward(nets, x, "fp32", "nchw")
    best = {v: float("inf") for v in variants}
    for v in variants:  # warm-up: one-time kernel selection
        _seconds(nets, x, *v)
    for _ in range(args.repeat):
        for v in variants:
            best[v] = min(best[v], _seconds(nets, x, *v))
    mp = args.batch * args.size**2 / 1e6
    base = best[("fp32", "nchw")]
    rows = {}
    for precision, layout in variants:
        y = _forward(nets, x, precision, layout)
        c = net.spec.num_classes
        rows[f"{precision}_{layout}"] = {
            "mp_per_s": round(mp / best[(precision, layout)], 1),
            "speedup_vs_fp32_nchw": round(base / best[(precision, layout)], 2),
            "max_abs_diff_heatmap": float(
                (torch.sigmoid(y[:, :c]) - torch.sigmoid(ref[:, :c])).abs().max()
            ),
        }
    doc = {
        "model": args.model,
        "device": str(device),
        "threads": args.threads,
        "batch": f"{args.batch} x {args.size}^2",
        "variants": rows,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
