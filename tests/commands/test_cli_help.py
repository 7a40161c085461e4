"""Every command and option of ``geo-hires`` says what it is for in ``--help``."""

from __future__ import annotations

import argparse

from geo_hires.cli import _parser


def test_every_option_and_argument_has_a_one_line_help():
    parser = _parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"detect", "batch", "serve", "submit"} <= set(sub.choices)
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in sub.choices.items()
        for a in p._actions
        if a.dest != "help" and not (a.help and a.help.strip() and "\n" not in a.help)
    ]
    assert not missing, missing
