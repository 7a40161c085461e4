"""Scenes and results in object storage: ``s3://`` and ``http(s)://`` URLs, read through
GDAL's ``/vsis3/`` and ``/vsicurl/``, and the few object operations the pipeline needs.

Credentials and the endpoint come only from the standard AWS settings of the environment and
profile (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``,
``AWS_S3_ENDPOINT``/``AWS_HTTPS``/``AWS_VIRTUAL_HOSTING`` or ``AWS_ENDPOINT_URL``,
``AWS_NO_SIGN_REQUEST``): GDAL reads them for pixels, boto3 for the rest, and
:func:`gdal_options` bridges the names the two spell differently. Nothing here writes a
credential anywhere; :attr:`Url.public` — what provenance, status files and messages show —
drops the query string, which in a signed URL *is* a credential.

Objects are written whole: :func:`put_file` uploads a finished local file (S3 makes an object
visible only once its upload completes), so a crash never leaves part of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import posixpath
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from geo_hires.errors import ConfigError, SceneNotFoundError, SceneReadError, StorageError

__all__ = [
    "READ_OPTIONS",
    "ObjectInfo",
    "Url",
    "check_bucket",
    "delete",
    "exists",
    "gdal_error",
    "gdal_options",
    "is_remote",
    "public",
    "put_bytes",
    "put_file",
    "read_bytes",
    "stat",
    "work_dir",
]

SCHEMES = ("s3", "http", "https")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FALSE = ("NO", "FALSE", "OFF", "0")

READ_OPTIONS = {
    # a COG holds its overviews and mask: no LIST of the prefix for sidecar files
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # the tiles one read needs are fetched in parallel, neighbouring ones in one request
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # throttling (503 SlowDown, 429) and transient errors are retried, not fatal
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
}
"""GDAL settings of every remote read (measured in bench/remote.py; bench/README.md)."""


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
    opts = dict(READ_OPTIONS)
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
    return opts


def _endpoint_url(env: Mapping[str, str]) -> str | None:
    """boto3's endpoint from GDAL's ``AWS_S3_ENDPOINT`` (+ ``AWS_HTTPS``); ``None`` lets boto3
    read ``AWS_ENDPOINT_URL(_S3)`` itself."""
    host = env.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    https = env.get("AWS_HTTPS", "YES").upper() not in _FALSE
    return f"{'https' if https else 'http'}://{host}"


def _s3() -> Any:
    """The S3 client of the current AWS settings (one per set of settings, thread-safe)."""
    return _client(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))


@functools.lru_cache(maxsize=4)
def _client(items: tuple[tuple[str, str], ...]) -> Any:
    env = dict(items)
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:
        raise ConfigError("s3:// paths need boto3: pip install 'geo_hires[s3]'") from exc
    virtual = env.get("AWS_VIRTUAL_HOSTING", "TRUE").upper() not in _FALSE
    config = Config(
        s3={"addressing_style": "virtual" if virtual else "path"},
        retries={"mode": "standard", "max_attempts": 5},
        signature_version=UNSIGNED if env.get("AWS_NO_SIGN_REQUEST", "").upper() == "YES" else None,
    )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    try:
        return boto3.session.Session().client(
            "s3", endpoint_url=_endpoint_url(env), region_name=region, config=config
        )
    except BotoCoreError as exc:  # a named profile that does not exist, a bad endpoint
        raise StorageError(f"the AWS settings are unusable ({exc}); check AWS_PROFILE and "
                           "AWS_S3_ENDPOINT") from None  # fmt: skip


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


@contextlib.contextmanager
def _errors(url: Url, verb: str = "read") -> Iterator[None]:
    """boto3's failures as one clear error each (see :mod:`geo_hires.errors`)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = url.public
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise StorageError(f"{where}: {_NO_CREDENTIALS}") from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or str(exc.response.get("ResponseMetadata", {}))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise SceneNotFoundError(
                f"no such object: {where}; check the bucket and the key"
            ) from None
        if code == "NoSuchBucket":
            raise SceneNotFoundError(f"no such bucket: {url.host} ({where})") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise _denied(where, code, verb) from None
        raise StorageError(f"{where}: the storage answered {code} ({err.get('Message')})") from None
    except BotoCoreError as exc:  # the endpoint cannot be reached, a read timed out
        raise StorageError(
            f"{where}: cannot reach the storage ({exc}); check AWS_S3_ENDPOINT and the network"
        ) from None


@contextlib.contextmanager
def _http_errors(url: Url) -> Iterator[None]:
    try:
        yield
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise SceneNotFoundError(f"no such object: {url.public} (HTTP {exc.code})") from None
        if exc.code in (401, 403):
            raise _denied(url.public, f"HTTP {exc.code}", "read") from None
        raise StorageError(f"{url.public}: the server answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StorageError(f"{url.public}: cannot reach the server ({reason})") from None


def _http(url: Url, headers: dict[str, str]) -> Any:
    full = url.public + (f"?{url.query}" if url.query else "")
    return urllib.request.urlopen(urllib.request.Request(full, headers=headers), timeout=60)


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What identifies an object's version: its size and ETag (or Last-Modified)."""

    size: int
    etag: str


def stat(path: str | Url) -> ObjectInfo:
    """Size and ETag of an object; one clear error when it cannot be read."""
    url = _url(path)
    if url.scheme == "s3":
        client = _s3()
        with _errors(url):
            head = client.head_object(Bucket=url.host, Key=url.key)
        return ObjectInfo(size=int(head["ContentLength"]), etag=str(head.get("ETag", "")))
    with _http_errors(url), _http(url, {"Range": "bytes=0-0"}) as resp:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(resp.headers.get("Content-Length") or 0)
        etag = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
        return ObjectInfo(size=size, etag=etag)


def read_bytes(path: str | Url, *, limit: int = 50_000_000) -> bytes:
    """A small object whole (a scene list, a STAC item, a journal), at most ``limit`` bytes."""
    url = _url(path)
    if url.scheme == "s3":
        client = _s3()
        with _errors(url):
            obj = client.get_object(Bucket=url.host, Key=url.key)
            data: bytes = obj["Body"].read(limit + 1)
    else:
        with _http_errors(url), _http(url, {}) as resp:
            data = resp.read(limit + 1)
    if len(data) > limit:
        raise SceneReadError(f"{url.public} is over {limit:,} bytes; not read")
    return data


def exists(path: str | Url) -> bool:
    """Whether an object exists (``False`` for a missing key; other failures raise)."""
    try:
        stat(path)
    except SceneNotFoundError:
        return False
    return True


def _s3_only(path: str | Url) -> Url:
    url = _url(path)
    if url.scheme != "s3":
        raise ConfigError(f"{url.public}: results go to a local path or s3://BUCKET/KEY")
    return url


def put_file(local: str | os.PathLike[str], path: str | Url) -> None:
    """Upload a finished local file as one object (visible only once complete)."""
    url, client = _s3_only(path), _s3()
    with _errors(url, "write"):
        client.upload_file(os.fspath(local), url.host, url.key)


def put_bytes(path: str | Url, data: bytes) -> None:
    """Write a small object whole in one request."""
    url, client = _s3_only(path), _s3()
    with _errors(url, "write"):
        client.put_object(Bucket=url.host, Key=url.key, Body=data)


def delete(path: str | Url) -> None:
    """Delete an object (no error when it is already gone)."""
    url, client = _s3_only(path), _s3()
    with _errors(url, "delete"):
        client.delete_object(Bucket=url.host, Key=url.key)


def check_bucket(path: str | Url) -> None:
    """Refuse up front a destination whose bucket does not exist or without credentials
    (before hours of work); a 403 passes, as a writer may not be allowed to list."""
    url, client = _s3_only(path), _s3()
    try:
        with _errors(url, "write"):
            client.head_bucket(Bucket=url.host)
    except SceneNotFoundError:
        raise StorageError(f"no such bucket: {url.host} ({url.public}); create it first") from None
    except StorageError as exc:
        if "access denied" not in str(exc):
            raise


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
