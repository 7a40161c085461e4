"""The windows a cascade's refiner reads: each holds its candidates with a margin, is shared
when it can be, starts from the strongest candidate, stays inside the scene and is planned in the
refiner's own level pixels."""

from __future__ import annotations

import pytest

from geo_hires.detect.cascade import plan_refine, refine_units
from geo_hires.models.card import CascadeRule
from tests.detect.rows import dets as _dets


def test_refine_windows_hold_their_candidates_and_are_shared_when_they_can_be():
    rule = CascadeRule(detector="y.pt", window=64, margin=8)
    cands = _dets(
        [
            (100, 100, 110, 110, 0.9, 0, 0),  # gets a 64 px window centred on it
            (112, 100, 120, 108, 0.5, 0, 0),  # held by that window with 8 px to spare
            (600, 600, 700, 690, 0.8, 0, 0),  # 100 px + 2 * 8 -> a 128 px window
            (1, 2, 9, 10, 0.3, 0, 0),  # at the scene corner: shifted inside
        ]
    )
    blocks = plan_refine(cands, rule, (1000, 800))
    got = sorted((b.x0, b.y0, b.x1, b.y1) for b in blocks)
    assert got == [(0, 0, 64, 64), (73, 73, 137, 137), (586, 581, 714, 709)]
    units = refine_units(blocks, level=2, batch_size=2)
    assert [u.key for u in units] == ["R-U0", "R-U1"]
    assert [len(u.blocks) for u in units] == [2, 1]  # the two 64 px windows batch together
    assert all(u.level == 2 and u.downsample == 1 and u.kind == "refine" for u in units)


def test_refine_windows_are_planned_in_the_refiners_own_level_pixels():
    rule = CascadeRule(detector="y.pt", window=64, margin=8)

    def window(box, size, downsample):
        (b,) = plan_refine(_dets([(*box, 0.9, 0, 0)]), rule, size, downsample)
        return (b.x0, b.y0, b.x1, b.y1)

    # a refiner at half the resolution: the 1000 x 800 scene is a 500 x 400 level
    assert window((600, 400, 620, 420), (1000, 800), 2) == (273, 173, 337, 237)
    assert window((980, 780, 996, 796), (1000, 800), 2) == (436, 336, 500, 400)  # kept inside
    # at twice the resolution a window starts on a whole scene pixel (an even level pixel)
    assert window((50.5, 40.5, 60.5, 50.5), (100, 80), 0.5) == (78, 58, 142, 122)


@pytest.mark.parametrize(
    ("second", "size", "windows"),
    [
        # the first candidate's window is 73..137 both ways; it holds what is 8 px inside it
        ((81, 81, 129, 129), (1000, 1000), 1),  # exactly the margin on every side
        ((80, 90, 100, 100), (1000, 1000), 2),  # 1 px short on the left
        ((90, 80, 100, 100), (1000, 1000), 2),  # on the top
        ((110, 110, 130, 120), (1000, 1000), 2),  # on the right
        ((110, 110, 120, 130), (1000, 1000), 2),  # at the bottom
        ((120, 120, 137, 129), (137, 1000), 1),  # no margin needed at the scene's right edge
        ((120, 120, 129, 137), (1000, 137), 1),  # nor at its bottom edge
        ((120, 120, 137, 129), (138, 1000), 2),
    ],
)
def test_a_window_holds_later_candidates_only_with_the_margin_to_spare(second, size, windows):
    rule = CascadeRule(detector="y.pt", window=64, margin=8)
    cands = _dets([(100, 100, 110, 110, 0.9, 0, 0), (*second, 0.3, 0, 0)])
    blocks = plan_refine(cands, rule, size)
    assert len(blocks) == windows
    assert (73, 73, 137, 137) in [(b.x0, b.y0, b.x1, b.y1) for b in blocks]


def test_refine_windows_are_planned_from_the_strongest_candidate_and_at_the_near_edges():
    rule = CascadeRule(detector="y.pt", window=64, margin=8)
    # each one's window holds the other: the stronger one's window is the one planned
    for a, b in ((0.9, 0.3), (0.3, 0.9)):
        cands = _dets([(100, 100, 110, 110, a, 0, 0), (115, 100, 125, 110, b, 0, 0)])
        (block,) = plan_refine(cands, rule, (1000, 1000))
        assert block.x0 == (73 if a > b else 88)
    # equal scores: the upper one first, then the left one (input order does not matter)
    for pair, x0 in (
        ([(115, 100, 125, 110), (100, 100, 110, 110)], 73),  # same row: the left one's window
        ([(100, 110, 110, 120), (105, 100, 115, 110)], 78),  # the upper one's, though right
    ):
        for rows in (pair, pair[::-1]):
            (block,) = plan_refine(_dets([(*b, 0.5, 0, 0) for b in rows]), rule, (1000, 1000))
            assert block.x0 == x0
    # a window at the scene's left and top edge holds a candidate touching them
    corner = _dets([(1, 2, 9, 10, 0.9, 0, 0), (0, 0, 5, 5, 0.3, 0, 0)])
    assert len(plan_refine(corner, rule, (1000, 1000))) == 1


@pytest.mark.parametrize(
    ("box", "size", "window"),
    [
        # side = max(rule.window, the larger box side + 2 margins, rounded up to 32)
        ((0, 1000, 114, 1010), (2000, 2000), (0, 925, 160, 1085)),  # wide: 114 + 16 = 130 -> 160
        ((1000, 0, 1010, 114), (2000, 2000), (925, 0, 1085, 160)),  # tall: the same
        ((900, 900, 1010, 1010), (2000, 2000), (891, 891, 1019, 1019)),  # 110 + 16 = 126 -> 128
        ((1990, 1985, 1998, 1995), (2000, 2000), (1936, 1936, 2000, 2000)),  # shifted inside
        ((35, 31, 45, 39), (50, 40), (0, 0, 50, 40)),  # a scene smaller than the window
    ],
)
def test_refine_window_fits_its_candidate_with_margins_and_stays_in_the_scene(box, size, window):
    rule = CascadeRule(detector="y.pt", window=64, margin=8)
    (block,) = plan_refine(_dets([(*box, 0.9, 0, 0)]), rule, size)
    assert (block.x0, block.y0, block.x1, block.y1) == window
    assert (block.cx0, block.cy0, block.cx1, block.cy1) == window and block.index == window[1::-1]
