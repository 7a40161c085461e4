"""Results in a bucket: each object is written locally, finished, then uploaded whole.

Every writer of :mod:`geo_hires.export` writes a local file (atomically); :func:`staged` gives
them local stand-ins for ``s3://`` destinations and uploads the finished files only when all of
them were written, so a failed run leaves no object behind, and a reader never sees part of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from geo_hires.errors import ConfigError
from geo_hires.export.geojson import write_text_atomic
from geo_hires.scene import objects, remote

__all__ = [
    "check_destination",
    "check_writable",
    "exists",
    "join",
    "read_text",
    "staged",
    "write_text",
]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def staged(paths: Sequence[PathLike | None]) -> Iterator[list[PathLike | None]]:
    """Local paths to write for ``paths`` (the same for local ones and ``None``; for a bucket
    key, a file of the same name in a temporary folder), uploaded once the block succeeds."""
    if not any(p is not None and remote.is_remote(p) for p in paths):
        yield list(paths)
        return
    folder = remote.work_dir() / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="stage-", dir=folder))
    try:
        local: list[PathLike | None] = []
        uploads: list[tuple[Path, str]] = []
        for i, p in enumerate(paths):
            if p is None or not remote.is_remote(p):
                local.append(p)
                continue
            stand_in = tmp / str(i) / Path(remote.public(p)).name
            stand_in.parent.mkdir()
            local.append(stand_in)
            uploads.append((stand_in, os.fspath(p)))
        yield local
        _upload_all(uploads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _upload_all(uploads: Sequence[tuple[Path, str]]) -> None:
    """Upload each file; when one fails, delete (best effort) those this call uploaded, so a
    failed run leaves none of its objects rather than some of them."""
    done: list[str] = []
    try:
        for stand_in, url in uploads:
            objects.put_file(stand_in, url)
            done.append(url)
    except BaseException:
        for url in done:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                objects.delete(url)
        raise


def check_destination(paths: Sequence[PathLike | None]) -> None:
    """Refuse, before any work, a destination that cannot be written: a bucket that does not
    exist or credentials that are missing; a local path that is a folder, under a file, or in
    a folder this process cannot write (a run of many minutes failed only at its end)."""
    seen: set[str] = set()
    for p in paths:
        url = remote.Url.parse(p) if p is not None else None
        if url is not None and url.host not in seen:
            seen.add(url.host)
            objects.check_bucket(url)
        elif p is not None and url is None:
            check_writable(Path(p))


def check_writable(path: Path) -> None:
    """Refuse (:class:`~geo_hires.errors.ConfigError`) a file that could not be written at
    ``path``: a probe file is made, and removed, in its nearest existing folder (``os.access``
    tells root it may write anywhere, ``/proc`` included)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file in it (e.g. {path / 'result'}"
                          f"{path.suffix or '.geojson'})")  # fmt: skip
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():  # exists() follows links: this one leads nowhere
            raise ConfigError(f"cannot write {path}: {folder} is a link to nothing")
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".geo-hires-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc


def join(folder: PathLike, name: str) -> PathLike:
    """``folder/name`` for a local folder or a bucket prefix."""
    if remote.is_remote(folder):
        return f"{os.fspath(folder).rstrip('/')}/{name}"
    return Path(folder) / name


def write_text(path: PathLike, text: str) -> None:
    """A small text file or object, written whole (status files)."""
    if remote.is_remote(path):
        objects.put_bytes(os.fspath(path), text.encode("utf-8"))
    else:
        write_text_atomic(path, text)


def read_text(path: PathLike) -> str:
    """A small text file or object (raises ``OSError`` subclasses when it is missing)."""
    if remote.is_remote(path):
        return objects.read_bytes(os.fspath(path)).decode("utf-8")
    return Path(path).read_text(encoding="utf-8")


def exists(path: PathLike) -> bool:
    return objects.exists(os.fspath(path)) if remote.is_remote(path) else Path(path).is_file()
