"""The ``geo-hires`` command line: every command comes from an entry point.

Each entry point of the group ``geo_hires.commands`` adds sub-parsers whose ``_handler`` runs
the command (see :mod:`geo_hires.commands`), so the library's own families and an installed
package's (the service's ``serve`` and ``submit``) are dispatched the same way. Every
deliberate error (:class:`~geo_hires.errors.GeoHiresError`) becomes one line on stderr and exit
status 2, as does a usage error (an unknown flag, a bad choice), and an operating-system error
the commands do not foresee (a folder that is a file, a disk that is full, a path that cannot be
created): what the system said, with the path, is what the user needs to change. Warnings
become one line each. ``GEO_HIRES_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from geo_hires.errors import GeoHiresError, option_spelling

__all__ = ["Terminated", "main"]

_ORDER = ("scene", "detect", "evaluate", "train")
"""Families first, in the order of the flow; other plugins after them, by name."""


class _Help(argparse.HelpFormatter):
    """Help that shows an option's default where it has one worth showing (not a flag's
    ``False`` nor ``None``) and its text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, as every other error is (the usage itself is
    ``--help``'s), with defaults shown in the help; sub-parsers are made of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def parse_args(  # type: ignore[override]  # argparse's overloads; the one form used here
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an unknown option names its command's help and the option it
        most resembles (it said ``see geo-hires --help``, the list of commands)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.commands.get(getattr(ns, "command", None) or "", self)
            known = list(command._option_string_actions)
            near = difflib.get_close_matches(extras[0], known, n=1)
            hint = f" (did you mean {near[0]}?)" if near and extras[0].startswith("-") else ""
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns

    @property
    def commands(self) -> dict[str, _Parser]:
        """The sub-commands' parsers, by name."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import entry_points

    ap = _Parser(
        prog="geo-hires",
        description="Find objects in huge georeferenced rasters; GeoJSON and GeoPackage out.",
    )
    from geo_hires import __version__

    ap.add_argument("--version", action="version", version=f"geo-hires {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    found = entry_points(group="geo_hires.commands")
    rank = {name: i for i, name in enumerate(_ORDER)}
    for ep in sorted(found, key=lambda e: (rank.get(e.name, len(_ORDER)), e.name)):
        ep.load()(sub)
    return ap


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    sys.stderr.write(f"geo-hires: warning: {message}\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Kubernetes sends a pod before killing it), stopping the run as Ctrl-C
    does: the process had no handler and died without a word, leaving a batch scene's status
    at ``running``."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_stops_the_run() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs (in the main thread only:
    Python's signal handlers live there), and the handler before is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 error, 130 interrupted, 143 terminated)."""
    with option_spelling(cli=True):
        return _run(argv, out)


def _run(argv: Sequence[str] | None, out: TextIO | None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(), _sigterm_stops_the_run():
        warnings.showwarning = _show_warning
        try:
            return int(args._handler(args, out or sys.stdout))
        except (GeoHiresError, OSError) as exc:
            if os.environ.get("GEO_HIRES_DEBUG"):
                raise
            text = str(exc) if isinstance(exc, GeoHiresError) else " ".join(str(exc).split())
            sys.stderr.write(f"geo-hires: error: {text}\n")
            return 2
        except Terminated:
            sys.stderr.write(
                "geo-hires: terminated (SIGTERM); detect and batch go on with --resume\n"
            )
            return 143
        except KeyboardInterrupt:
            sys.stderr.write("geo-hires: interrupted\n")
            return 130


if __name__ == "__main__":
    sys.exit(main())
