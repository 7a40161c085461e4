"""The few object operations the pipeline needs on ``s3://`` (boto3) and ``http(s)://``
(urllib) objects: stat, read, exist, write whole, delete, and a bucket check before work.

Credentials and the endpoint are the standard AWS settings of the environment and profile
(:mod:`geo_hires.scene.remote` names them), read by boto3; GDAL's own spelling of the endpoint
(``AWS_S3_ENDPOINT`` + ``AWS_HTTPS``) is understood too, so one set of settings serves pixels and
objects. Every failure is one clear error (:mod:`geo_hires.errors`), never a botocore trace.

Objects are written whole: :func:`put_file` uploads a finished local file (S3 makes an object
visible only once its upload completes), so a crash never leaves part of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from geo_hires.errors import ConfigError, SceneNotFoundError, SceneReadError, StorageError
from geo_hires.scene.remote import _NO_CREDENTIALS, Url, _denied, _url, own_endpoint

__all__ = [
    "ObjectInfo",
    "check_bucket",
    "delete",
    "exists",
    "gdal_session",
    "put_bytes",
    "put_file",
    "read_bytes",
    "stat",
]

_FALSE = ("NO", "FALSE", "OFF", "0")


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
    return _client(_aws_settings())


def _aws_settings() -> tuple[tuple[str, str], ...]:
    """The environment's ``AWS_*`` settings, as the key of the session and client they make."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=4)
def _session(items: tuple[tuple[str, str], ...]) -> Any:
    """The boto3 session of a set of AWS settings: it keeps the credentials it resolves (and
    refreshes them), so a ``credential_process`` runs once, not per client or per read."""
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError("s3:// paths need boto3: pip install 'geo_hires[s3]'") from exc
    return boto3.session.Session(botocore_session=_botocore(own_endpoint(dict(items))))


@functools.lru_cache(maxsize=4)
def _client(items: tuple[tuple[str, str], ...]) -> Any:
    from botocore import UNSIGNED
    from botocore.config import Config

    env = dict(items)
    session = _session(items)
    hosting = env.get("AWS_VIRTUAL_HOSTING")
    # AWS itself: virtual hosts; another endpoint (MinIO, a local server): paths, as GDAL is told
    virtual = hosting.upper() not in _FALSE if hosting else not own_endpoint(env)
    config = Config(
        s3={"addressing_style": "virtual" if virtual else "path"},
        retries={"mode": "standard", "max_attempts": 5},
        signature_version=UNSIGNED if env.get("AWS_NO_SIGN_REQUEST", "").upper() == "YES" else None,
    )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    with _settings():
        return session.client(
            "s3", endpoint_url=_endpoint_url(env), region_name=region, config=config
        )


# botocore's credential sources GDAL cannot use itself (GDAL 3.10 reads keys from the
# environment and the profile files, assumes roles, and asks the metadata addresses)
_GDAL_CANNOT = ("custom-process", "sso")


def gdal_session(path: str | None) -> Any:
    """A rasterio ``AWSSession`` for reading an ``s3://`` (``/vsis3/``) ``path`` where boto3 gets
    the credentials from a source GDAL cannot use (a profile's ``credential_process``, SSO):
    without it GDAL finds no credentials where the AWS CLI and boto3 do. ``None`` otherwise:
    GDAL then resolves (and refreshes) the credentials itself. The keys go only into the scoped
    GDAL options of the reads (:func:`geo_hires.scene.open.gdal_env`), never into a file.
    """
    if path is None or not (path.startswith("/vsis3/") or path.lower().startswith("s3://")):
        return None
    if os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() == "YES" or os.environ.get(
        "AWS_SECRET_ACCESS_KEY"
    ):  # a public bucket, or keys GDAL reads itself: no credential chain to walk per read
        return None
    session = _session(_aws_settings())
    with _settings():
        creds = session.get_credentials()
        if creds is None or creds.method not in _GDAL_CANNOT:
            return None
        from rasterio.session import AWSSession

        return AWSSession(session=session)  # its keys are taken (refreshed) per GDAL scope


@contextlib.contextmanager
def _settings() -> Iterator[None]:
    """Failures of the AWS settings themselves (a profile that does not exist, a
    ``credential_process`` that fails or prints no JSON, an SSO sign-in expired) as one error."""
    from botocore.exceptions import BotoCoreError

    try:
        yield
    except (BotoCoreError, ValueError) as exc:  # botocore lets a process's bad JSON through
        raise StorageError(
            f"the AWS settings are unusable ({type(exc).__name__}: {exc}); check AWS_PROFILE "
            "and its profile (aws sts get-caller-identity tests it), and AWS_S3_ENDPOINT"
        ) from None


def _botocore(own_endpoint: bool) -> Any:
    """A botocore session; with an endpoint of one's own (not AWS), without the credential
    sources that ask a cloud's metadata address (169.254.169.254: EC2 roles, container roles),
    which no such storage uses and which would leave the machine for nothing."""
    import botocore.session

    session = botocore.session.get_session()
    if own_endpoint:
        resolver = session.get_component("credential_provider")
        for name in ("iam-role", "container-role"):
            with contextlib.suppress(Exception):  # a botocore without that provider
                resolver.remove(name)
    return session


@contextlib.contextmanager
def _errors(url: Url, verb: str = "read") -> Iterator[None]:
    """boto3's failures as one clear error each (see :mod:`geo_hires.errors`)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        CredentialRetrievalError,
        NoCredentialsError,
        PartialCredentialsError,
        SSOError,
        TokenRetrievalError,
    )

    where = url.public
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise StorageError(f"{where}: {_NO_CREDENTIALS}") from None
    except ClientError as exc:
        raise _answered(url, exc.response, verb) from None
    except S3UploadFailedError as exc:  # upload_file wraps the storage's answer
        cause = exc.__context__
        if isinstance(cause, ClientError):
            raise _answered(url, cause.response, verb) from None
        raise StorageError(f"{where}: the upload failed ({exc})") from None
    except (CredentialRetrievalError, SSOError, TokenRetrievalError) as exc:  # met on first use
        raise StorageError(
            f"{where}: the AWS profile's credentials cannot be had ({exc}); sign in again "
            "(aws sso login) or check AWS_PROFILE"
        ) from None
    except BotoCoreError as exc:  # the endpoint cannot be reached, a read timed out
        raise StorageError(
            f"{where}: cannot reach the storage ({exc}); check AWS_S3_ENDPOINT and the network"
        ) from None


def _answered(url: Url, response: Mapping[str, Any], verb: str) -> Exception:
    """The storage's refusal (a ``ClientError``'s response) as one clear error."""
    where = url.public
    err = response.get("Error", {})
    code = str(err.get("Code", "")) or str(response.get("ResponseMetadata", {}))
    if code in ("404", "NoSuchKey", "NotFound"):
        return SceneNotFoundError(f"no such object: {where}; check the bucket and the key")
    if code == "NoSuchBucket":
        return SceneNotFoundError(f"no such bucket: {url.host} ({where})")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return _denied(where, code, verb)
    return StorageError(f"{where}: the storage answered {code} ({err.get('Message')})")


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
        try:
            with _errors(url):
                head = client.head_object(Bucket=url.host, Key=url.key)
        except SceneNotFoundError:
            _check_bucket_exists(client, url)  # a HEAD's bare 404 says not which is missing
            raise
        return ObjectInfo(size=int(head["ContentLength"]), etag=str(head.get("ETag", "")))
    with _http_errors(url), _http(url, {"Range": "bytes=0-0"}) as resp:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(resp.headers.get("Content-Length") or 0)
        etag = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
        return ObjectInfo(size=size, etag=etag)


def _check_bucket_exists(client: Any, url: Url) -> None:
    """Raise "no such bucket" when ``url``'s bucket is missing (other answers: nothing)."""
    try:
        with _errors(url):
            client.head_bucket(Bucket=url.host)
    except SceneNotFoundError:
        raise SceneNotFoundError(f"no such bucket: {url.host} ({url.public})") from None
    except StorageError:  # 403: may not look at the bucket; the object's 404 stands
        pass


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
