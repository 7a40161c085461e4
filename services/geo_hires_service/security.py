"""What the service lets in: bearer tokens as tenants, scene URIs confined to allow-listed roots
(folders, and ``s3://bucket/prefix/`` in object storage).

Every check here is a pure function over the request's text, the token list or the file system,
so the ingress can answer a bad request with a 4xx before anything reaches GDAL. Scene paths are
later opened with the GTiff driver only and without their sidecar files
(``ReadConfig(driver="GTiff")`` is the caller's part); no user text ever becomes a GDAL option,
a driver prefix or a ``/vsi`` path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from geo_hires.errors import ConfigError, GeoHiresError
from geo_hires.scene import remote
from geo_hires.scene.stac import is_stac_item

__all__ = [
    "TIFF_MAGIC",
    "Rejected",
    "Tokens",
    "is_tiff",
    "load_tokens",
    "parse_root",
    "read_token_file",
    "resolve_scene_uri",
    "scene_name",
]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""Classic and BigTIFF headers, little- and big-endian (GeoTIFF and COG are TIFF)."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-_]*:")  # http:, vrt:, GTIFF_RAW:, NETCDF:, C: ...
_REFUSED_SUFFIXES = (".vrt", ".xml", ".ovr.vrt")


class Rejected(GeoHiresError, ValueError):
    """A request names something the service will not open; ``status`` is the HTTP answer."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Bearer tokens → tenant ids. The tokens themselves are never logged or stored."""

    by_digest: Mapping[bytes, str]

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of an ``Authorization: Bearer …`` header, or ``None``.

        Every known token is compared in constant time, and all of them are compared, so the
        answer's timing says nothing about which token (or how much of one) matched.
        """
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hashlib.sha256(authorization.removeprefix("Bearer ").strip().encode()).digest()
        found = None
        for known, tenant in self.by_digest.items():
            if hmac.compare_digest(known, digest):
                found = tenant
        return found


def _tenant_id(token: str) -> str:
    return "t-" + hashlib.sha256(b"geo-hires-tenant:" + token.encode()).hexdigest()[:16]


def _token_lines(lines: Iterable[str]) -> list[str]:
    return [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]


def read_token_file(path: str | os.PathLike[str]) -> list[str]:
    """The tokens of a token file: one per line, blank lines and ``#`` comments skipped.

    The service reads its tenants from it, ``geo-hires submit`` its own token (the first).
    """
    try:
        return _token_lines(Path(path).read_text(encoding="utf-8").splitlines())
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc


def load_tokens(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    env_var: str = "GEO_HIRES_TOKENS",
) -> Tokens:
    """Tokens from a file (one per line, ``#`` comments), else the file that
    ``$GEO_HIRES_TOKEN_FILE`` names, else ``$GEO_HIRES_TOKENS`` (comma separated).

    Raises:
        ConfigError: No token at all (a service that trusts everybody is never the default),
            or a token shorter than 16 characters.
    """
    env = os.environ if env is None else env
    path = path if path is not None else env.get(f"{env_var[:-1]}_FILE") or None
    if path is not None:
        tokens = read_token_file(path)
    else:
        tokens = _token_lines(env.get(env_var, "").replace(",", "\n").splitlines())
    if not tokens:
        raise ConfigError(
            f"no API token: give --token-file FILE (one token per line) or set {env_var}"
        )
    short = [i + 1 for i, t in enumerate(tokens) if len(t) < 16]
    if short:
        raise ConfigError(f"tokens must be at least 16 characters (token {short[0]} is shorter)")
    return Tokens(by_digest={hashlib.sha256(t.encode()).digest(): _tenant_id(t) for t in tokens})


def is_tiff(head: bytes) -> bool:
    """Whether the first bytes of a file are a TIFF header."""
    return head[:4] in TIFF_MAGIC


def parse_root(text: str | os.PathLike[str]) -> Path | str:
    """An ``--allow-root``: a folder (resolved), or ``s3://bucket/`` / ``s3://bucket/prefix/``
    (kept as text, ending in ``/``: a prefix is a folder, never the start of a name)."""
    if not remote.is_remote(text):
        return Path(text).resolve()
    url = remote.Url.parse(text)
    if url is None or url.scheme != "s3" or ".." in url.key.split("/"):
        raise ConfigError(f"--allow-root {text}: give a folder or s3://BUCKET/PREFIX/")
    return f"s3://{url.host}/{url.key.rstrip('/')}/" if url.key else f"s3://{url.host}/"


def _resolve_object(uri: str, roots: Iterable[str | os.PathLike[str]]) -> str:
    """An ``s3://`` URI under an allowed bucket prefix (the text alone is checked here; the
    header is opened, with the GTiff driver only, before the job is accepted)."""
    try:
        url = remote.Url.parse(uri)
    except ConfigError as exc:
        raise Rejected(str(exc)) from None
    if url is None:
        raise Rejected("uri must be s3://BUCKET/KEY")
    parts = url.key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Rejected("uri must not contain empty, '.' or '..' segments")
    if url.key.lower().endswith(_REFUSED_SUFFIXES):
        raise Rejected("VRT and XML files are not accepted; give the GeoTIFF itself")
    allowed = [remote.Url.parse(r) for r in roots if remote.is_remote(r)]
    if not any(root is not None and url.under(root) for root in allowed):
        raise Rejected("uri is outside the allowed roots")
    return url.public


def resolve_scene_uri(uri: str, roots: Iterable[str | os.PathLike[str]]) -> Path | str:
    """The real path of a scene URI, if it is a plain TIFF file (or a STAC item, whose asset
    must then lie in the item's folder) under an allow-listed root; or an ``s3://`` URI under an
    allow-listed bucket prefix (:func:`parse_root`), as text.

    Refused (``Rejected``, 400): other schemes and GDAL prefixes (``http:``, ``vrt:``,
    ``GTIFF_RAW:``, ``NETCDF:`` …), ``/vsi…`` paths, relative paths, ``..`` components, NUL
    bytes, VRT/XML files, anything that resolves — symlinks followed — outside every root.
    Missing files are 404; a file that is not a TIFF is 415.
    """
    if not uri or "\x00" in uri:
        raise Rejected("uri must be a non-empty path")
    if uri.lower().startswith("s3://"):
        return _resolve_object(uri, roots)
    if _SCHEME.match(uri):
        raise Rejected(
            "uri must be a plain local path (or s3://BUCKET/KEY), not a URL or a GDAL driver prefix"
        )
    if uri.startswith("/vsi"):
        raise Rejected("GDAL virtual file systems (/vsi…) are not accepted")
    path = Path(uri)
    if not path.is_absolute():
        raise Rejected("uri must be an absolute path under an allowed root")
    if ".." in path.parts:
        raise Rejected("uri must not contain '..'")
    if path.name.lower().endswith(_REFUSED_SUFFIXES):
        raise Rejected("VRT and XML files are not accepted; give the GeoTIFF itself")
    local = [Path(r) for r in roots if not remote.is_remote(r)]
    allowed = [r.resolve() for r in local]
    if not any(path.is_relative_to(root) for root in [*local, *allowed]):
        # before the disk is asked: whether a path outside exists is not the client's to learn
        raise Rejected("uri is outside the allowed roots")
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise Rejected(f"no such file: {uri}", status=404) from None
    except (OSError, RuntimeError) as exc:  # loops, permissions
        raise Rejected(f"cannot resolve {uri}: {exc}") from None
    if not any(real.is_relative_to(root) for root in allowed):
        raise Rejected("uri is outside the allowed roots")
    if not real.is_file():
        raise Rejected("uri must name a file")
    if real.suffix.lower() == ".json" and is_stac_item(real):
        return real  # its asset is confined to the item's folder and opened as GTiff only
    with real.open("rb") as fh:
        if not is_tiff(fh.read(4)):
            raise Rejected("only GeoTIFF scenes are accepted", status=415)
    return real


def scene_name(path: Path | str) -> str:
    """The base name a resolved scene is shown (and its outputs named) by."""
    return path.name if isinstance(path, Path) else PurePosixPath(path).name
