"""The defaults are decisions made on measurements, and the cards record them: a default that
changes without its card saying why (or against what the cards measured) fails here."""

from __future__ import annotations

from geo_hires.detect.options import DEFAULT_MODEL, DetectOptions, resolve_zoom
from geo_hires.models.card import load_card, shipped_models


def test_the_default_model_is_the_one_whose_card_records_the_choice():
    claims = [name for name in shipped_models() if "default" in load_card(name).extra]
    assert claims == [DEFAULT_MODEL]
    assert DetectOptions().model == DEFAULT_MODEL


def test_a_better_bundle_than_the_default_says_why_it_is_not_the_default():
    """The default is the best shipped bundle on the same validation images, unless the better
    one's card records what keeps it from being the default."""
    card = load_card(DEFAULT_MODEL)
    chosen, metrics = card.extra["default"], card.extra["metrics"]
    assert chosen["ap50"] == round(metrics["ap50"], 4)
    assert chosen["ap50_95"] == round(metrics["ap50_95"], 4)
    assert chosen["meets_target"] == (chosen["ap50_95"] >= chosen["target_ap50_95"])
    for name in shipped_models():
        other = load_card(name)
        scores = other.extra.get("metrics", {})
        if scores.get("images") != metrics["images"]:  # not scored on the same 14 images
            continue
        if scores["ap50_95"] > metrics["ap50_95"] or scores["ap50"] > metrics["ap50"] + 0.005:
            assert other.extra.get("not_default", {}).get("why"), name


def test_auto_zoom_is_rl_only_where_a_card_records_it_kept_the_ap():
    """``rl`` by default needs >= 99 % of ``all``'s AP50 on every GSD variant, as measured by
    ``bench/zoom.py`` into the card's ``zoom_default_evidence``."""
    for name in shipped_models():
        card = load_card(name)
        mode = resolve_zoom("auto", card)
        assert mode == card.extra.get("zoom_default", "all")
        if mode == "rl":
            kept = card.extra["zoom_default_evidence"]["rl_over_all_ap50"]
            assert kept and min(kept.values()) >= 0.99, name
