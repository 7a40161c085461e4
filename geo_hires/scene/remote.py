"""Scenes and results in object storage: ``s3://`` and ``http(s)://`` URLs, read through
GDAL's ``/vsis3/`` and ``/vsicurl/`` (the object operations themselves:
:mod:`geo_hires.scene.objects`).

Credentials and the endpoint come only from the standard AWS settings of the environment and
profile (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``,
``AWS_S3_ENDPOINT``/``AWS_HTTPS``/``AWS_VIRTUAL_HOSTING`` or ``AWS_ENDPOINT_URL``,
``AWS_NO_SIGN_REQUEST``): GDAL reads them for pixels, boto3 for the rest, and
:func:`gdal_options` bridges the names the two spell differently. Nothing here writes a
credential anywhere; :attr:`Url.public` — what provenance, status files and messages show —
drops the query string, which in a signed URL *is* a credential.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from geo_hires.errors import ConfigError, SceneNotFoundError, SceneReadError, StorageError

__all__ = [
    "READ_OPTIONS",
    "Url",
    "gdal_error",
    "gdal_options",
    "is_remote",
    "own_endpoint",
    "public",
    "work_dir",
]

SCHEMES = ("s3", "http", "https")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

READ_OPTIONS = {
    # a COG holds its overviews and mask: no LIST of the prefix for sidecar files
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # the tiles one read needs are fetched in parallel, neighbouring ones in one request
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # throttling (503 SlowDown, 429) and transient errors are retried, not fatal
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # a server that accepts and then sends nothing fails the read (GDAL waits forever else)
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "GDAL_HTTP_LOW_SPEED_TIME": "120",
}
"""GDAL settings of every remote read (the transfer ones measured in bench/remote.py;
bench/README.md; the stall limits are not tuned, only there so that a read ends); the same name
in the environment wins (GDAL reads it there)."""


@dataclasses.dataclass(frozen=True)
class Url:
    """An object's URL: ``s3://bucket/key`` or ``http(s)://host/path[?query]``."""

    scheme: str
    host: str
    key: str
    query: str = dataclasses.field(default="", repr=False)

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> Url | None:
        """The URL in ``text``, or ``None`` for a local path (anything without our schemes)."""
        raw = os.fspath(text)
        scheme, sep, _ = raw.partition("://")
        if not sep or scheme.lower() not in SCHEMES:
            return None
        parts = urllib.parse.urlsplit(raw)
        if "@" in parts.netloc:  # shown and recorded everywhere a URL is: refuse, never echo
            raise ConfigError(
                f"{parts.scheme}://…@{parts.netloc.rpartition('@')[2]}{parts.path}: a user name "
                "or password in a URL is refused; use a signed URL or the AWS settings"
            )
        url = cls(parts.scheme.lower(), parts.netloc, parts.path.lstrip("/"), parts.query)
        if url.scheme == "s3" and (not _BUCKET.match(url.host) or parts.query or parts.fragment):
            raise ConfigError(
                f"{url.public}: not an S3 URL; write s3://BUCKET/KEY (a valid bucket name, "
                "no query string)"
            )
        if not url.host:
            raise ConfigError(f"{raw.split('?')[0]}: the URL names no host or bucket")
        return url

    @classmethod
    def of_gdal(cls, path: str) -> Url:
        """The URL of a GDAL path made by :attr:`gdal` (its query string included)."""
        if path.startswith("/vsis3/"):
            return _url("s3://" + path.removeprefix("/vsis3/"))
        return _url(path.removeprefix("/vsicurl/"))

    @property
    def public(self) -> str:
        """The URL without its query string: safe to show and to record."""
        return f"{self.scheme}://{self.host}/{self.key}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def gdal(self) -> str:
        """The GDAL path: ``/vsis3/bucket/key``, or ``/vsicurl/`` and the whole URL."""
        if self.scheme == "s3":
            return f"/vsis3/{self.host}/{self.key}"
        return f"/vsicurl/{self.public}" + (f"?{self.query}" if self.query else "")

    @property
    def folder(self) -> Url:
        """The object's folder (its key's prefix, ending in ``/``)."""
        head = posixpath.dirname(self.key)
        return Url(self.scheme, self.host, f"{head}/" if head else "")

    def join(self, ref: str) -> Url:
        """``ref`` (relative to this object's folder, or a URL of its own) as a URL."""
        own = Url.parse(ref)
        if own is not None:
            return own
        key = posixpath.normpath(posixpath.join(posixpath.dirname(self.key), ref))
        if key.startswith("../") or key == "..":
            raise ConfigError(f"{ref!r} leaves the bucket or host of {self.public}")
        return Url(self.scheme, self.host, key.lstrip("/"))

    def under(self, folder: Url) -> bool:
        """Whether this object lies in ``folder`` (same bucket or host, key below its prefix)."""
        prefix = folder.key if folder.key.endswith("/") or not folder.key else f"{folder.key}/"
        return (self.scheme, self.host) == (folder.scheme, folder.host) and (
            self.key.startswith(prefix) and ".." not in self.key.split("/")
        )


def is_remote(path: object) -> bool:
    """Whether ``path`` is an ``s3://`` or ``http(s)://`` URL."""
    if not isinstance(path, str | os.PathLike):
        return False
    scheme, sep, _ = os.fspath(path).partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def _url(path: str | os.PathLike[str] | Url) -> Url:
    url = path if isinstance(path, Url) else Url.parse(path)
    if url is None:
        raise ConfigError(f"{os.fspath(path)} is not an s3:// or http(s):// URL")  # type: ignore[arg-type]
    return url


def public(path: str | os.PathLike[str]) -> str:
    """What may be shown of ``path``: a URL without its query string, or the path itself."""
    url = Url.parse(path)
    return url.public if url is not None else os.fspath(path)


def work_dir() -> Path:
    """Where local copies live while objects are made (``$GEO_HIRES_WORK_DIR``, else the
    temporary folder): staged outputs, the journals mirrored to a bucket."""
    return Path(os.environ.get("GEO_HIRES_WORK_DIR") or Path(tempfile.gettempdir()) / "geo-hires")


def gdal_options(path: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL settings for reading ``path`` (none for a local file): :data:`READ_OPTIONS`, and
    the standard AWS names GDAL does not know, bridged to its own."""
    url = Url.parse(path) if path is not None and is_remote(path) else None
    if path is None or (url is None and not path.startswith(("/vsis3/", "/vsicurl/"))):
        return {}
    env = os.environ if env is None else env
    opts = {k: v for k, v in READ_OPTIONS.items() if k not in env}
    gdal = url.gdal if url is not None else path
    if gdal.startswith("/vsis3/"):
        # an object replaced under its key is never read from a previous open's cache
        opts["CPL_VSIL_CURL_NON_CACHED"] = gdal
    if env.get("AWS_SHARED_CREDENTIALS_FILE") and not env.get("CPL_AWS_CREDENTIALS_FILE"):
        opts["CPL_AWS_CREDENTIALS_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and not env.get("AWS_S3_ENDPOINT"):
        parts = urllib.parse.urlsplit(endpoint)
        opts["AWS_S3_ENDPOINT"] = parts.netloc
        opts["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
    if own_endpoint(env):  # not AWS: paths, and no cloud metadata address
        if not env.get("AWS_VIRTUAL_HOSTING"):
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if "CPL_AWS_AUTODETECT_EC2" not in env:
            opts["CPL_AWS_AUTODETECT_EC2"] = "NO"
    return opts


def own_endpoint(env: Mapping[str, str]) -> bool:
    """Whether the AWS settings name an S3 endpoint of one's own (MinIO, a local server),
    in GDAL's spelling or the AWS SDKs': not AWS, so buckets by path, no cloud metadata."""
    return bool(
        env.get("AWS_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    )


_NO_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE (a profile "
    "of ~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE), AWS_ROLE_ARN with "
    "AWS_WEB_IDENTITY_TOKEN_FILE, or AWS_NO_SIGN_REQUEST=YES for a public bucket"
)


def _denied(where: str, code: str, verb: str) -> StorageError:
    return StorageError(
        f"access denied to {where} ({code}): the AWS credentials in use may not {verb} it; "
        "check the bucket policy, or choose other credentials (AWS_PROFILE)"
    )


_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def gdal_error(public_url: str, gdal: str, exc: Exception) -> Exception:
    """A GDAL failure on a remote scene as one clear error (the URL's query never shown)."""
    url = _url(public_url)
    text = _QUERY.sub(r"\1", str(exc).replace(gdal, url.public))
    if "does not exist in the file system" in text or "HTTP response code: 404" in text:
        return SceneNotFoundError(f"no such object: {url.public}; check the bucket and the key")
    if "bucket does not exist" in text:
        return SceneNotFoundError(f"no such bucket: {url.host} ({url.public})")
    if "AWS_SECRET_ACCESS_KEY" in text and "not defined" in text:
        return StorageError(f"{url.public}: {_NO_CREDENTIALS}")
    if "Access Denied" in text or "HTTP response code: 403" in text:
        return _denied(url.public, "403", "read")
    return SceneReadError(f"cannot read {url.public} as a raster ({text})")
