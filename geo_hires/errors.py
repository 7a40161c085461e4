"""The one error root of geo_hires.

Every error the library raises on purpose derives from :class:`GeoHiresError` *and* from the
builtin that fits, so callers can catch either ``GeoHiresError`` (everything of ours) or the
builtin they already handle (``OSError`` for I/O, ``ValueError`` for bad arguments). Messages say
what to change, because the CLI prints them as the whole answer to the user.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from collections.abc import Iterator

__all__ = [
    "BandOrderWarning",
    "ClassMismatchWarning",
    "ConfigError",
    "DiscardedJournalWarning",
    "ExecutorError",
    "ForeignJournalWarning",
    "GeoHiresError",
    "LabelReadError",
    "LeftoverWarning",
    "LevelSkippedWarning",
    "NoCRSWarning",
    "NoTruthWarning",
    "NonFiniteWarning",
    "NothingToZoomWarning",
    "OptionIgnoredWarning",
    "SceneNotFoundError",
    "SceneReadError",
    "SceneTooLargeError",
    "StorageError",
    "StripLayoutWarning",
    "UnsupportedBandsError",
    "WeakPartWarning",
    "option",
    "option_spelling",
    "quiet",
    "warn",
]

_FILTERS = threading.RLock()
_SILENCED: contextvars.ContextVar[frozenset[type[Warning]]] = contextvars.ContextVar(
    "geo_hires_silenced", default=frozenset()
)


@contextlib.contextmanager
def quiet(category: type[Warning], message: str = "") -> Iterator[None]:
    """Ignore ``category`` (whose text starts with ``message``) for a ``with`` block.

    Why not ``warnings.catch_warnings``: its filters are the process's, so two threads' blocks
    that interleave restore each other's saved filters (a library detecting in two threads
    left ``ignore`` filters installed for good), and a block in one thread hides the warning
    from every other. geo_hires' own warnings are silenced for this thread (this context)
    alone: :func:`warn` asks before it warns, and no filter is touched. Another library's
    warning (rasterio's, pyogrio's) can only be filtered: those blocks take turns, and are
    kept to the one call that warns (an open, not a read).
    """
    if category.__module__.startswith("geo_hires.") and not message:
        token = _SILENCED.set(_SILENCED.get() | {category})
        try:
            yield
        finally:
            _SILENCED.reset(token)
        return
    with _FILTERS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


def warn(message: str, category: type[Warning], stacklevel: int = 1) -> None:
    """``warnings.warn``, unless this thread is in a :func:`quiet` block for ``category``."""
    if not any(issubclass(category, c) for c in _SILENCED.get()):
        warnings.warn(message, category, stacklevel=stacklevel + 1)


_CLI_SPELLING = False
_UNSET: object = object()


@contextlib.contextmanager
def option_spelling(*, cli: bool) -> Iterator[None]:
    """Name options in messages by their command-line flags (``cli=True``: what the CLI's
    command does) or as keyword arguments and job options (``cli=False``), for a ``with`` block.

    Why a process-wide setting and not a context variable: a command's worker threads (reads
    ahead, Ray's callbacks) do not inherit a context, and the process is the command's. Other
    processes (Ray actors, Ray Serve's replicas under ``geo-hires serve``) spell keywords.
    """
    global _CLI_SPELLING
    before, _CLI_SPELLING = _CLI_SPELLING, cli
    try:
        yield
    finally:
        _CLI_SPELLING = before


def option(flag: str, value: object = _UNSET, *, api: str | None = None) -> str:
    """An option as the reader of a message sets it: ``--block 512`` on the command line,
    ``block=512`` from Python or in a service job's options (see :func:`option_spelling`).

    The keyword is the flag's name with underscores; ``api`` replaces the whole keyword form
    where the two differ (``--gpus-per-actor`` is ``num_gpus``, ``--bands 3,2,1`` is
    ``bands=(3, 2, 1)``).
    """
    if _CLI_SPELLING:
        return flag if value is _UNSET else f"{flag} {value}"
    if api is not None:
        return api if value is _UNSET or "=" in api else f"{api}={value!r}"
    key = flag.split()[0].lstrip("-").replace("-", "_")
    return key if value is _UNSET else f"{key}={value!r}"


class GeoHiresError(Exception):
    """Root of every error raised on purpose by geo_hires."""


class SceneReadError(GeoHiresError, OSError):
    """A scene could not be opened or read (not a raster, truncated, corrupt, zero-size)."""


class SceneNotFoundError(SceneReadError, FileNotFoundError):
    """The scene path does not exist."""


class StorageError(GeoHiresError, OSError):
    """Object storage refused or could not be reached: no credentials, access denied, no such
    bucket, an unreachable endpoint."""


class SceneTooLargeError(GeoHiresError, ValueError):
    """A scene or a read would exceed the configured pixel budget."""


class UnsupportedBandsError(GeoHiresError, ValueError):
    """The scene's band layout or dtype cannot be turned into model input."""


class ConfigError(GeoHiresError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ExecutorError(GeoHiresError, RuntimeError):
    """An executor could not finish a scene (no worker could be placed, or workers kept dying)."""


class LabelReadError(GeoHiresError, ValueError):
    """A label or prediction file could not be parsed."""


class BandOrderWarning(UserWarning):
    """A multi-band scene says nothing about which band is red, green or blue; the first three
    are used, and ``--bands`` says otherwise."""


class NoCRSWarning(UserWarning):
    """The scene has no CRS; results are in pixel space and cannot be placed on a map."""


class ForeignJournalWarning(UserWarning):
    """``--resume`` found a journal left by another scene, model or config; it is not reused."""


class DiscardedJournalWarning(UserWarning):
    """A run without ``--resume`` found an interrupted run's journal of the same scene and
    settings: its finished units are computed again (``--resume`` would have gone on)."""


class StripLayoutWarning(UserWarning):
    """A remote scene is stored in strips, not tiles: every window read fetches whole strips, so
    the whole file will be read (convert it to a COG for range reads)."""


class LevelSkippedWarning(UserWarning):
    """A level of the model is not scanned: the scene is too coarse for it (it would need more
    than x2 upsampling)."""


class NothingToZoomWarning(UserWarning):
    """``--zoom`` would choose nothing: it picks a fine level's windows from a coarser level's
    evidence, and with one level scanned every window of it is scanned; a zoom policy whose
    safety rule forces every window (``train-zoom``) zooms them all too."""


class OptionIgnoredWarning(UserWarning):
    """An option was given that the chosen model has nothing to apply to (``--block`` for a
    bundle without a scanning network)."""


class LeftoverWarning(UserWarning):
    """A run succeeded but left a file of its own behind (a journal it may not delete)."""


class WeakPartWarning(UserWarning):
    """A part given to ``cascade`` was measured, on its own card, to find (almost) nothing: the
    cascade would keep the scanner's candidates at half their score, and say nothing."""


class ClassMismatchWarning(UserWarning):
    """Predictions and truth share no class name: a score would be 0 for a naming reason."""


class NoTruthWarning(UserWarning):
    """The truth holds no object to score against: every prediction is a false alarm."""


class NonFiniteWarning(UserWarning):
    """Detections with a NaN or infinite box or score were dropped before the merge."""
