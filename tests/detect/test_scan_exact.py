"""The block scan equals one forward pass over the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_hires.detect.blocks import batch_blocks, halo_for, plan_blocks
from geo_hires.detect.forward import forward_batch, prepare, read_ahead
from geo_hires.models.arch import lsn_spec, receptive_field, wide_spec
from geo_hires.models.codec import decode_peaks
from geo_hires.models.fcn import FCNDetector, fold_batchnorm


def _random_model(spec, seed):
    torch.manual_seed(seed)
    model = FCNDetector(spec)
    for m in model.modules():  # non-trivial BatchNorm statistics, then fold them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return fold_batchnorm(model)


def _assemble(model, image, core):
    h, w = image.shape[1:]
    s = model.stride
    halo = halo_for(receptive_field(model.spec), s)
    blocks = plan_blocks(w, h, core=core, halo=halo, stride=s)
    full = torch.full((model.spec.num_classes + 4, -(-h // s), -(-w // s)), float("nan"))
    valid = np.ones((h, w), bool)

    cpu = torch.device("cpu")
    model = prepare(model, cpu)[0]  # channels-last, as every run: the bytes must not move
    outs = []
    for batch in batch_blocks(blocks, 3):
        items = [(b, image[:, b.y0 : b.y1, b.x0 : b.x1].numpy(), valid[b.y0 : b.y1, b.x0 : b.x1])
                 for b in batch]  # fmt: skip
        outs += forward_batch(model, items, cpu)
    for o in outs:
        r0, r1, c0, c1 = o.keep
        full[:, r0:r1, c0:c1] = o.out[
            :, r0 - o.origin[0] : r1 - o.origin[0], c0 - o.origin[1] : c1 - o.origin[1]
        ]
    return full, outs


def _peak_threshold(ref, num_classes, quantile=0.995):
    """A threshold that random weights do cross: a high quantile of the whole-image heatmap."""
    heat = torch.sigmoid(ref[:num_classes]).flatten()
    return float(torch.quantile(heat, quantile))


@pytest.mark.parametrize(
    ("spec_fn", "size", "core"),
    [
        (lsn_spec, (203, 157), 32),
        (lsn_spec, (203, 157), 48),
        (lsn_spec, (331, 289), 128),
        (wide_spec, (171, 233), 64),
    ],
)
def test_block_scan_equals_whole_image_forward(spec_fn, size, core):
    model = _random_model(spec_fn(num_classes=2), seed=size[0] + core)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(core))
    with torch.inference_mode():
        ref = model(image[None])[0]
    full, outs = _assemble(model, image, core)
    assert len(outs) > 4  # several blocks, so seams are really crossed
    assert not torch.isnan(full).any()
    assert full.shape == ref.shape
    assert torch.max(torch.abs(full - ref)).item() < 1e-5
    # every kept cell, the one-cell margin around each core included, equals the whole pass
    margins = 0
    for o in outs:
        h, w = o.out.shape[1:]
        r0, c0 = o.origin
        np.testing.assert_allclose(o.out, ref[:, r0 : r0 + h, c0 : c0 + w], atol=1e-5)
        margins += h * w - (o.keep[1] - o.keep[0]) * (o.keep[3] - o.keep[2])
    assert margins > 0
    # decoding per block (core + 1-cell margin) finds exactly the whole-image peaks
    thr = _peak_threshold(ref, 2)
    dec = [
        decode_peaks(o.out, num_classes=2, stride=4, origin=o.origin, keep=o.keep, threshold=thr)
        for o in outs
    ]
    boxes = np.concatenate([d[0] for d in dec])
    ref_boxes, _, _ = decode_peaks(
        ref,
        num_classes=2,
        stride=4,
        origin=(0, 0),
        keep=(0, ref.shape[1], 0, ref.shape[2]),
        threshold=thr,
    )
    assert len(ref_boxes) >= 3  # the comparison below is not between two empty sets
    assert boxes.shape == ref_boxes.shape
    np.testing.assert_allclose(np.sort(boxes, axis=0), np.sort(ref_boxes, axis=0), atol=1e-4)


def test_halo_is_the_receptive_radius_plus_one_cell():
    assert halo_for(127, 4) == 68 and halo_for(131, 4) == 72


def test_receptive_field_is_computed_from_layers():
    assert (
        receptive_field(lsn_spec()) == 1 + 2 * 1 + 2 * 2 + 2 * 4 + 2 * 2 * 4 + 2 * 4 * 4 + 2 * 8 * 4
    )
    # one more output cell of context changes the centre output; beyond the RF nothing does
    model = _random_model(lsn_spec(), 0)
    rf = receptive_field(lsn_spec())
    x = torch.rand(1, 3, 400, 400)
    y = x.clone()
    centre = 200
    y[:, :, :, centre + rf // 2 + 1 :] = 0
    with torch.inference_mode():
        a, b = model(x)[0, :, 50, 50], model(y)[0, :, 50, 50]
    assert torch.allclose(a, b, atol=1e-6)


def test_blocks_without_valid_pixels_are_left_out_of_the_forward_pass():
    model = prepare(_random_model(lsn_spec(), 1), torch.device("cpu"))[0]
    image = np.random.default_rng(0).random((3, 150, 170), dtype=np.float32)
    valid = np.ones((150, 170), bool)
    valid[:, :120] = False  # left blocks: no valid pixel, no output
    blocks = plan_blocks(170, 150, core=48, halo=halo_for(receptive_field(model.spec), 4), stride=4)
    outs = []
    for batch in batch_blocks(blocks, 2):
        items = [(b, image[:, b.y0 : b.y1, b.x0 : b.x1], valid[b.y0 : b.y1, b.x0 : b.x1])
                 for b in batch]  # fmt: skip
        outs += forward_batch(model, items, torch.device("cpu"))
    assert 0 < len(outs) < len(blocks)
    assert all(o.valid.any() for o in outs)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_read_ahead_keeps_order_and_at_most_depth_reads_in_memory(depth):
    started: list[int] = []

    def read(i: int) -> int:
        started.append(i)
        return i * 10

    got = []
    for item, value in read_ahead(read, range(12), depth):
        got.append((item, value))
        assert len(started) <= item + 1 + depth  # the item in use and at most depth ahead
    assert got == [(i, i * 10) for i in range(12)]


def test_a_run_leaves_the_callers_network_as_it_was(demo_crop):
    """detect_scene moved the bundle's own network (eval, channels-last, onto CUDA where
    present): a user's network in training mode, or a bundle shared by runs on two devices,
    changed under them."""
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    bundle = load_bundle("aircraft_lsn")
    net = bundle.network().train()
    first = next(net.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    detect_scene(open_scene(demo_crop(1024, 512, 512, 512)), bundle)
    assert net.training and first.is_contiguous() and first.device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
