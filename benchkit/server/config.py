"""The server's configuration: where its database, blobs and secrets live, and how it listens.

Defaults that just work: SQLite at ``<data>/server/benchkit.db`` and blobs in
``<data>/server/store`` (``<data>`` is BenchKit's user data directory), listening on
127.0.0.1:8000. The admin commands (``benchkit server create-project``, ``keys ...``) read the
same configuration to act on the database directly.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.errors import ConfigError
from benchkit.settings import get_paths
from benchkit.units import parse_size

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
GiB = 1024**3


def default_data_dir() -> Path:
    """``<BenchKit data directory>/server``."""
    return get_paths().data / "server"


@dataclass
class ServerConfig:
    """Everything the server needs to start; the admin commands use the data-related half."""

    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy URL; None means SQLite in ``data_dir``
    db_url: str | None = None
    #: store URL of the blobs; None means a directory in ``data_dir``
    store_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    #: largest object a single PUT may send; larger ones go through upload sessions
    max_put_bytes: int = 5 * GiB
    #: largest object an upload session may assemble
    max_upload_bytes: int = 1024 * GiB
    #: free disk the server keeps when accepting uploads
    reserve_bytes: int = 256 * 1024 * 1024
    #: upload sessions idle for longer than this are removed
    upload_ttl_s: float = 7 * 24 * 3600
    #: seconds uvicorn waits for requests in flight at SIGTERM/SIGINT before cancelling them
    shutdown_grace_s: float = 30.0
    #: what runs jobs: "local" (this machine's worker slots), "ray" or "none"
    executor: str = "local"
    #: the Ray cluster's dashboard (Jobs API), for ``executor="ray"``
    ray_address: str | None = None
    #: how a multi-node job's placement group spreads its nodes
    ray_placement: str = "STRICT_SPREAD"
    #: the interpreter on the Ray nodes that has BenchKit
    ray_python: str = "python"
    #: worker slots (processes at a time) of the local executor; default one per CPU
    job_slots: int | None = None
    #: the URL jobs reach this server at (default: the address it listens on)
    job_store_url: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'benchkit.db'}"

    @property
    def blob_store_url(self) -> str:
        return self.store_url or str(self.data_dir / "store")

    @property
    def pepper_file(self) -> Path:
        return self.data_dir / "pepper"

    @property
    def staging_dir(self) -> Path:
        """Where uploads wait until verified, when the store is not a local directory."""
        return self.data_dir / "staging"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def public_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def job_url(self) -> str:
        """Where jobs find this server (a wildcard listen address is reached on loopback)."""
        if self.job_store_url:
            return self.job_store_url.rstrip("/")
        if self.host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if self.host != "::" else "[::1]"
            return f"{self.scheme}://{host}:{self.port}"
        return self.public_url

    def check_listen(self) -> None:
        """Refuse a non-loopback address without TLS unless ``insecure``; check the TLS files."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both --tls-cert and --tls-key (or neither)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        if not is_loopback(self.host) and not self.tls and not self.insecure:
            raise ConfigError(
                f"refusing to listen on {self.host} without TLS: API keys would cross the network "
                "in clear text. Give --tls-cert/--tls-key, put a TLS reverse proxy in front and "
                "listen on 127.0.0.1, or pass --insecure on a network you trust"
            )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def size_from_env(name: str, default: int) -> int:
    """A byte size from an environment variable such as ``BENCHKIT_SERVER_MAX_PUT=2GB``."""
    value = os.environ.get(name)
    return parse_size(value) if value else default
