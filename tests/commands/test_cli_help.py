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


def test_version_and_a_mistyped_option_point_the_right_way(capsys):
    """``--version`` said 'arguments are required: command'; a mistyped option sent the user
    to the list of commands (``geo-hires --help``) instead of its command's options."""
    import pytest

    from geo_hires import __version__
    from geo_hires.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"geo-hires {__version__}\n"
    with pytest.raises(SystemExit) as stop:
        main(["detect", "x.tif", "-o", "x.geojson", "--modle", "aircraft_lsn"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "geo-hires detect: error: unrecognized arguments: --modle aircraft_lsn (did you mean "
        "--model?); see geo-hires detect --help\n"
    )
