"""Zoom decisions as pure functions: which windows ``choose`` picks in each mode and under a
budget, the settings' bounds, and the evidence a window carries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geo_hires.detect.options import ZoomConfig
from geo_hires.detect.zoom import choose, window_evidence
from geo_hires.errors import ConfigError


def test_choices_are_deterministic_and_respect_the_budget():
    scores = np.array([0.9, 0.1, 0.5, 0.0, 0.3, 0.7])
    assert choose(ZoomConfig(mode="gate", gate_threshold=0.3), scores).tolist() == [
        True, False, True, False, True, True]  # fmt: skip
    capped = choose(ZoomConfig(mode="gate", budget=0.5, gate_threshold=0.3), scores)
    assert capped.tolist() == [True, False, True, False, False, True]  # the 3 strongest
    assert choose(ZoomConfig(mode="none"), scores).sum() == 0
    assert choose(ZoomConfig(mode="all"), scores).all()
    a = choose(ZoomConfig(mode="random", budget=0.34, seed=3), scores)
    assert (
        a.sum() == 3 and (a == choose(ZoomConfig(mode="random", budget=0.34, seed=3), scores)).all()
    )
    ev = np.array([[10.0, 10.0, 0.4, 9, 9], [15.0, 12.0, 0.8, 9, 9], [300.0, 5.0, 0.2, 9, 9]])
    cores = np.array([[0, 0, 100, 100], [100, 0, 400, 100], [0, 100, 100, 200]], float)
    assert window_evidence(ev, cores).tolist() == [0.8, 0.2, 0.0]


def test_rl_zooms_exactly_the_windows_given_half_or_more():
    probs = np.array([0.49, 0.5, 0.51, 0.1, 0.9, 0.0, 0.499999])
    rl = ZoomConfig(mode="rl")
    assert choose(rl, probs).tolist() == [False, True, True, False, True, False, False]
    assert choose(rl, np.full(5, 0.2)).sum() == 0  # weak outputs everywhere: nothing zoomed
    assert choose(rl, np.zeros(0)).tolist() == []


def test_rl_under_a_budget_keeps_the_most_probable_of_its_choices():
    probs = np.array([0.6, 0.95, 0.2, 0.7, 0.55, 0.9])
    # 4 chosen (>= 0.5); a budget of 0.34 of 6 windows allows ceil(2.04) = 3: 0.95, 0.9, 0.7
    assert choose(ZoomConfig(mode="rl", budget=0.34), probs).tolist() == [
        False, True, False, True, False, True]  # fmt: skip
    # a budget above what the policy wants changes nothing; it never adds windows
    assert choose(ZoomConfig(mode="rl", budget=1.0), probs).tolist() == (probs >= 0.5).tolist()
    # ties are broken by window order
    tied = np.array([0.8, 0.8, 0.8, 0.8])
    assert choose(ZoomConfig(mode="rl", budget=0.5), tied).tolist() == [True, True, False, False]


def test_gate_threshold_is_inclusive_and_the_budget_keeps_the_strongest():
    scores = np.array([0.3, 0.29, 0.31, 0.05, 1.0])
    gate = ZoomConfig(mode="gate", gate_threshold=0.3)
    assert choose(gate, scores).tolist() == [True, False, True, False, True]
    capped = choose(dataclasses.replace(gate, budget=0.4), scores)  # ceil(2.0) = 2 windows
    assert capped.tolist() == [False, False, True, False, True]


def test_random_zooms_everything_without_a_budget_and_a_seeded_share_with_one():
    n = 40
    scores = np.zeros(n)
    assert choose(ZoomConfig(mode="random"), scores).all()
    a = choose(ZoomConfig(mode="random", budget=0.25, seed=1), scores)
    b = choose(ZoomConfig(mode="random", budget=0.25, seed=2), scores)
    assert a.sum() == b.sum() == 10 and (a != b).any()
    ranks = np.random.default_rng(1).permutation(n)  # the seed's ranking of the windows
    assert a.tolist() == (ranks < 10).tolist()


def test_the_budget_rounds_up_and_never_exceeds_the_share():
    scores = np.linspace(0.1, 1.0, 10)
    for budget, count in [(0.1, 1), (0.15, 2), (0.2, 2), (0.21, 3), (0.3, 3), (1.0, 10)]:
        assert choose(ZoomConfig(mode="all", budget=budget), scores).sum() == count


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"budget": 0.0}, "in \\(0, 1\\]"), ({"budget": 1.5}, "in \\(0, 1\\]"),
     ({"mode": "xyz"}, "choose one of"), ({"window": 100}, "multiple of 32")],
)  # fmt: skip
def test_bad_zoom_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        ZoomConfig(**kw)


def test_zoom_settings_at_their_bounds_and_which_are_selective():
    ok = [{"window": 64}, {"budget": 1.0}, {"evidence_threshold": 0.2, "gate_threshold": 0.2}]
    for kw in ok:
        ZoomConfig(**kw)
    bad = [{"window": 32}, {"window": 96 + 16}, {"evidence_threshold": 0.0},
           {"evidence_threshold": 0.3, "gate_threshold": 0.2}, {"gate_threshold": 1.0}]  # fmt: skip
    for kw in bad:
        with pytest.raises(ConfigError, match=r"^zoom"):
            ZoomConfig(**kw)
    with pytest.raises(ConfigError, match=r"^zoom: 0 < evidence_threshold <= gate_threshold < 1$"):
        ZoomConfig(gate_threshold=1.0)
    with pytest.raises(ConfigError, match=r"choose one of all, gate, rl, random, none$"):
        ZoomConfig(mode="best")
    assert not ZoomConfig().selective
    assert ZoomConfig(budget=1.0).selective and ZoomConfig(mode="none").selective


def test_one_window_is_chosen_like_many_and_choices_are_boolean_masks():
    for mode, want in (("gate", [True]), ("rl", [True]), ("all", [True]), ("none", [False])):
        got = choose(ZoomConfig(mode=mode, gate_threshold=0.5), np.array([0.5]))
        assert got.dtype == bool and got.tolist() == want, mode
    assert choose(ZoomConfig(mode="none"), np.ones(3)).dtype == bool


def test_window_evidence_takes_the_strongest_peak_whose_box_meets_the_core():
    """A peak near a border counted only where its centre was: the fine level can find the
    object on the other side, in a window that then stayed coarse (the object was lost)."""
    cores = np.array([[0, 0, 100, 100], [100, 0, 200, 100]], float)
    ev = np.array(
        [
            [100.0, 50.0, 0.9, 0, 0],  # no size, on the shared edge: the right-hand core's
            [99.9, 50.0, 0.3, 0, 0],
            [50.0, 100.0, 0.8, 0, 0],  # on the bottom edge: no core's
            [50.0, 0.0, 0.35, 0, 0],  # on the top edge: inside
        ]
    )
    assert window_evidence(ev, cores).tolist() == [0.35, 0.9]
    across = np.array([[98.0, 50.0, 0.7, 10, 10], [50.0, 103.0, 0.6, 10, 10]])  # boxes cross
    assert window_evidence(across, cores).tolist() == [0.7, 0.7]
    clear = np.array([[150.0, 50.0, 0.7, 10, 10], [94.0, 50.0, 0.5, 10, 10]])  # 1 px short
    assert window_evidence(clear, cores).tolist() == [0.5, 0.7]
    assert window_evidence(clear[1:], cores).tolist() == [0.5, 0.0]  # half its width, not more
    below = np.array([[0, 100, 100, 200]], float)  # a core under the first: a box reaching up
    assert window_evidence(np.array([[50.0, 97.0, 0.4, 10, 10]]), below).tolist() == [0.4]
    assert window_evidence(ev[:0], cores).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("gsd", [0.0, -0.5, float("nan")])
def test_training_gsds_are_metres_above_zero(gsd):
    from geo_hires.train.zoom import ZoomTrainConfig

    with pytest.raises(ConfigError, match=r"--gsds .*: ground sample distances are metres"):
        ZoomTrainConfig(gsds=(0.5, gsd))
    assert ZoomTrainConfig(gsds=(0.3, 1.0)).gsds == (0.3, 1.0)
