"""The learned zoom policy: the features it reads per window, its decisions, the shipped
policy's outputs pinned, saving and loading, and its safety rule and the rule's calibration."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from geo_hires.detect.options import ZoomConfig
from geo_hires.detect.zoom import choose
from geo_hires.errors import ConfigError
from geo_hires.models.bundle import load_bundle


def test_policy_features_rasterise_each_windows_neighbourhood_by_hand():
    from geo_hires.models.zoom_policy import policy_features

    # grid 2: core 0 has 50 px cells and a neighbourhood 0..300 x 0..300; core 2 is not square
    # (50 x 20 px cells, neighbourhood -100..200 x -40..80); core 1 has no evidence near it
    cores = np.array([[100, 100, 200, 200], [1000, 1000, 1100, 1100], [0, 0, 100, 40]], float)
    ev = np.array(
        [
            [120, 130, 0.7, 10, 10],  # small, core 0's cell (2, 2); core 2: out
            [130, 140, 0.95, 80, 20],  # large (a side of 80 >= 64), the same cell
            [125, 135, 0.9, 20, 64],  # large too: a side of exactly split_px is not small
            [0, 0, 0.3, 5, 5],  # core 0's first cell (edges inclusive); core 2's cell (2, 2)
            [299.9, 250, 0.2, 5, 5],  # core 0's last column, row 5
            [300, 150, 0.8, 5, 5],  # just past core 0's neighbourhood (column 6)
            [150, 300, 0.8, 5, 5],  # and below it (row 6)
            [-0.1, 150, 0.5, 5, 5],  # just before it (column -1)
            [-90, 70, 0.6, 5, 5],  # core 2: column 0 (x 50 px a cell), row 5 (y 20 px a cell)
        ]
    )
    f = policy_features(ev, cores, grid=2, split_px=64.0)
    assert f.shape == (3, 3, 6, 6) and f.dtype == np.float32
    want = np.zeros((3, 3, 6, 6))
    want[0, 0, 2, 2], want[0, 1, 2, 2], want[0, 2, 2, 2] = 0.7, 0.95, 3  # small, large, count
    want[0, 0, 0, 0], want[0, 2, 0, 0] = 0.3, 1
    want[0, 0, 5, 5], want[0, 2, 5, 5] = 0.2, 1
    want[2, 0, 2, 2], want[2, 2, 2, 2] = 0.3, 1
    want[2, 0, 5, 0], want[2, 2, 5, 0] = 0.6, 1
    want[:, 2] = np.log1p(want[:, 2])
    np.testing.assert_allclose(f, want, rtol=1e-6)
    np.testing.assert_array_equal(policy_features(ev, cores, grid=2), f)  # split_px: 64
    assert policy_features(ev[:0], cores, grid=2).shape == (3, 3, 6, 6)
    assert policy_features(ev, cores[:0], grid=4).shape == (0, 3, 12, 12)


def test_policy_decides_on_its_windows_own_evidence_in_the_centre_cells():
    from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy

    torch.manual_seed(0)
    policy = ZoomPolicy(PolicySpec(window=128, grid=2))
    x = np.zeros((3, 3, 6, 6), np.float32)
    x[1, 0, 2, 3] = 1.0  # in the centre window (cells 2..3 of 0..5)
    x[2, 1, 1, 2] = 1.0  # a neighbour's cell
    x[2, 2, 3, 4] = 5.0  # another neighbour's
    x[2, 0, 4, 2] = 3.0  # and another's
    assert policy.probabilities(x).tolist() == [0.5] * 3  # a new policy is undecided
    with torch.no_grad():
        policy.head.weight[0, 64:] = torch.tensor([1.0, 2.0, 4.0])  # read the centre maxima
    p = policy.probabilities(x)
    assert p.dtype == np.float64 and p.shape == (3,)
    np.testing.assert_allclose(p, [0.5, 1 / (1 + np.exp(-1.0)), 0.5], rtol=1e-6)
    assert policy.probabilities(x[:0]).shape == (0,)


def test_the_shipped_policy_computes_what_it_was_trained_to(zoom_evidence):
    """A regression pin: the shipped policy's zoom probabilities on fixed evidence (recorded with
    its weights). A change to the network's layers that keeps the weights loadable (padding,
    stride, a missing ReLU) changes what every ``--zoom rl`` run decides."""
    from geo_hires.models.zoom_policy import policy_features

    model = load_bundle("aircraft_lsn")
    policy = model.policy
    assert policy is not None and (policy.spec.grid, policy.spec.split_px) == (8, 64.0)
    cores, ev = zoom_evidence
    p = policy.probabilities(policy_features(ev, cores, 8, 64.0))
    want = [0.753026, 0.735878, 0.783006, 0.473489, 0.52493, 0.622249]
    np.testing.assert_allclose(p, want, atol=2e-6)
    assert choose(ZoomConfig(mode="rl"), p).tolist() == [True, True, True, False, True, True]


def test_a_saved_policy_loads_with_its_spec_and_weights(tmp_path):
    from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy, load_policy, save_policy

    spec = PolicySpec(window=256, grid=4, detector="abc", split_px=48.0, extra={"epochs": 3})
    torch.manual_seed(1)
    policy = ZoomPolicy(spec)
    with torch.no_grad():
        policy.head.weight.normal_()
    path = save_policy(tmp_path, policy)
    assert path == tmp_path / "zoom.pt"
    meta = (tmp_path / "zoom.pt.json").read_text()
    assert meta == json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True) + "\n"
    back = load_policy(path, detector="abc")
    assert back.spec == spec and not back.training
    x = np.random.default_rng(0).random((4, 3, 12, 12), dtype=np.float32)
    np.testing.assert_array_equal(back.probabilities(x), policy.probabilities(x))
    assert save_policy(tmp_path, policy, name="b.pt") == tmp_path / "b.pt"
    assert (tmp_path / "b.pt.json").read_text() == meta
    (tmp_path / "lone.pt").write_bytes(path.read_bytes())  # weights without their spec
    for missing in (tmp_path / "none.pt", tmp_path / "lone.pt"):
        with pytest.raises(ConfigError, match="zoom policy not found"):
            load_policy(missing, detector="abc")


def test_the_safety_rule_reads_the_windows_own_small_evidence_and_split_follows_the_gsd():
    from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy, small_evidence

    spec = PolicySpec(window=128, grid=2, split_px=64.0)
    assert spec.split_for(0.5, 0.25) == 128.0  # finer pixels: the same object spans more
    assert spec.split_for(0.5, None) == spec.split_for(0.0, 0.25) == 64.0  # unknown: as is
    x = np.zeros((3, 3, 6, 6), np.float32)
    x[0, 0, 2, 3] = 0.6  # small evidence in the window itself (cells 2..3)
    x[1, 0, 4, 2] = x[1, 0, 2, 4] = 0.9  # small, in the neighbours below and to the right
    x[2, 1, 2, 2] = 0.95  # large evidence in the window: not small
    small = small_evidence(x, 2)
    assert small.dtype == np.float32 and small.tolist() == pytest.approx([0.6, 0.0, 0.0])
    assert small_evidence(x[:0], 2).shape == (0,) and small_evidence(x[:0], 2).dtype == np.float32
    policy = ZoomPolicy(spec)  # undecided: exactly 0.5 everywhere, which zooms
    forced = policy.forced(x)
    assert forced.dtype == bool and not forced.any()  # no safety rule
    assert policy.decide(x).tolist() == [True, True, True]
    safe = policy.with_spec(dataclasses.replace(spec, safe_score=0.6))
    assert safe.spec.safe_score == 0.6 and not safe.training
    assert safe.forced(x).tolist() == [True, False, False]  # 0.6 reaches the rule's score
    with torch.no_grad():
        safe.head.bias.fill_(-10.0)  # a policy that zooms nothing itself
    assert safe.decide(x).tolist() == [True, False, False]


def test_the_safety_score_is_the_highest_that_covers_the_asked_share_of_the_gain():
    from geo_hires.models.zoom_policy import small_evidence
    from geo_hires.train.zoom import calibrate_safety

    grid = 2
    feats = np.zeros((4, 3, 3 * grid, 3 * grid), np.float32)
    for i, score in enumerate([0.9, 0.6, 0.3, 0.1]):  # small peaks inside each window
        feats[i, 0, grid, grid + 1] = score
    feats[2, 0, 0, 0] = 0.95  # a neighbour's peak: not the window's own evidence
    assert small_evidence(feats, grid).tolist() == pytest.approx([0.9, 0.6, 0.3, 0.1])
    gains = np.array([2.0, 1.0, 0.0, 1.0])  # 4 objects gained in all
    assert calibrate_safety(feats, gains, grid, recall=0.99) == pytest.approx(0.1)
    assert calibrate_safety(feats, gains, grid, recall=0.7) == pytest.approx(0.6)
    assert calibrate_safety(feats, gains, grid, recall=0.5) == pytest.approx(0.9)
    assert calibrate_safety(feats, np.zeros(4), grid, recall=0.99) == 1.0  # nothing to gain
    from geo_hires.errors import NothingToZoomWarning
    from geo_hires.train.zoom import ZoomTrainConfig, _check_safety

    cfg = ZoomTrainConfig(grid=grid, safety_recall=0.99)
    with pytest.warns(NothingToZoomWarning, match="forces every training window"):
        _check_safety(0.1, feats, cfg)  # 0.1 is the weakest window's: all four are forced
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_safety(0.6, feats, cfg)  # two are left to the policy
