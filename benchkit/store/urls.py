"""Checking a store URL before it is saved: known scheme, well-formed bucket and endpoint, a
local directory that can be created or written. No network: ``s3://`` and ``gs://`` URLs are
checked for shape only (reaching them is what ``migrate data`` probes before it chunks).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from benchkit.errors import ConfigError, UnsupportedStoreURL

__all__ = ["check_endpoint", "check_store_url"]

SCHEMES = ("file", "memory", "tensorstore+file", "s3", "gs", "http", "https")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{2,32}$")
_S3_QUERY = ("endpoint", "region")


def check_store_url(url: str) -> str:
    """``url`` normalised (a relative directory becomes absolute), or a clear error naming
    what is wrong with it and what a valid one looks like."""
    url = (url or "").strip()
    if not url:
        raise UnsupportedStoreURL(
            "empty store URL; give a directory, s3://bucket/prefix, gs://bucket/prefix or "
            "http(s)://host:port"
        )
    if "://" not in url:
        return str(_check_directory(Path(url).expanduser().absolute(), url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedStoreURL(
            f"unsupported store URL {url!r} (scheme {scheme!r}); supported: a directory path, "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme in ("file", "tensorstore+file"):
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UnsupportedStoreURL(
                f"store URL {url!r}: {scheme}:// takes an absolute path, e.g. {scheme}:///data/store"
            )
        _check_directory(Path(parts.path), url)
    elif scheme == "s3":
        _check_bucket(url, parts.netloc, _S3_BUCKET, "3-63 lowercase letters, digits, '.' and '-'")
        _check_s3_query(url, parts.query)
    elif scheme == "gs":
        _check_bucket(
            url, parts.netloc, _GS_BUCKET, "3-222 lowercase letters, digits, '.', '_', '-'"
        )
        if parts.query:
            raise UnsupportedStoreURL(
                f"store URL {url!r}: gs:// URLs take no query; a local GCS server is chosen with "
                "TENSORSTORE_GCS_HTTP_URL=http://HOST:PORT"
            )
    elif scheme in ("http", "https"):
        check_endpoint(url, what="store URL")
    return url


def check_endpoint(url: str, what: str = "endpoint") -> str:
    """``url`` if it is ``http(s)://host[:port][/path]``, else a clear error."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise UnsupportedStoreURL(
            f"{what} {url!r} is not an http(s) URL with a host: write it like "
            "http://127.0.0.1:9000 or https://s3.example.com"
        )
    return url.strip()


def _check_bucket(url: str, bucket: str, rule: re.Pattern[str], spelled: str) -> None:
    scheme = url.split(":", 1)[0]
    if not bucket:
        raise UnsupportedStoreURL(
            f"store URL {url!r} names no bucket: use {scheme}://BUCKET/PREFIX"
        )
    if not rule.match(bucket) or ".." in bucket:
        raise UnsupportedStoreURL(
            f"store URL {url!r}: {bucket!r} is not a valid bucket name ({spelled}, starting and "
            "ending with a letter or digit)"
        )


def _check_s3_query(url: str, query: str) -> None:
    values = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(values) - set(_S3_QUERY))
    if unknown:
        raise UnsupportedStoreURL(
            f"store URL {url!r}: unknown option(s) {', '.join(unknown)}; s3:// URLs take "
            "?endpoint=http://HOST:PORT&region=REGION"
        )
    for endpoint in values.get("endpoint", []):
        check_endpoint(endpoint, what=f"the endpoint of store URL {url!r}")
    for region in values.get("region", []):
        if not _REGION.match(region):
            raise UnsupportedStoreURL(
                f"store URL {url!r}: {region!r} is not a region name (e.g. us-east-1)"
            )


def _check_directory(path: Path, url: str) -> Path:
    """``path`` if BenchKit can use it as a store directory (it exists and is writable, or
    its nearest existing parent is a writable directory)."""
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"store {url!r}: {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"store {url!r}: the directory {path} is not writable (check its owner and mode, "
                "or whether its filesystem is mounted read-only)"
            )
        return path
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"store {url!r}: {path} does not exist and cannot be created: {parent} is not a "
            "writable directory"
        )
    return path
