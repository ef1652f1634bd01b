"""The client of a Bench server's JSON API (``/api/v1``): the transport under
:class:`benchkit.store.http.HttpStore` and the catalog, login and project commands.

One ``requests.Session`` per process (a forked child opens its own: a pooled socket shared
with the parent would interleave two conversations), with retries and backoff on connection
errors, timeouts, 429 and 5xx (``Retry-After`` honoured) and never on other 4xx. The first
request of a process checks ``GET /api/v1/info``, so a URL that is not a Bench server, or one
of an incompatible API version, fails with one line that says what to do. Every error is a
one-line :class:`~benchkit.errors.BenchKitError`; the API key is sent only in the
``Authorization`` header and never appears in a message.

Credentials: ``BENCHKIT_API_KEY`` (and ``BENCHKIT_PROJECT_ID``) from the environment, else the
credentials file (mode 0600) that ``benchkit login`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from benchkit._version import __version__
from benchkit.errors import (
    CredentialsError,
    InvalidKey,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from benchkit.settings import load_credentials

#: The API this client speaks; a server answering another major version is refused.
API_VERSION = 1
API_PREFIX = "/api/v1"
SERVICE = "benchkit"
#: the feature a server lists in ``/info`` when ``PUT /blobs/KEY`` honours ``If-None-Match: *``
CONDITIONAL_CREATE = "conditional-create"
RETRY_STATUS = (429, 500, 502, 503, 504)
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
#: bytes urllib3 reads from a streamed request body and writes to the socket at once
SEND_BLOCK = 1024 * 1024


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/base]`` without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StoreError(
            f"invalid Bench server URL {url!r}: use http://HOST:PORT or https://HOST[/PATH]"
        )
    if parts.query or parts.fragment:
        raise StoreError(f"invalid Bench server URL {url!r}: it takes no query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def same_server(a: str, b: str) -> bool:
    try:
        return normalize_url(a) == normalize_url(b)
    except StoreError:
        return False


@dataclass(frozen=True)
class Credentials:
    api_key: str
    project_id: str | None
    source: str


def find_credentials(url: str) -> Credentials:
    """The API key for the server at ``url``: environment first, then the credentials file
    (when it was saved for this server, or for no server in particular)."""
    key = os.environ.get("BENCHKIT_API_KEY")
    if key:
        return Credentials(key.strip(), os.environ.get("BENCHKIT_PROJECT_ID"), "BENCHKIT_API_KEY")
    creds = load_credentials()
    if creds and creds.get("api_key"):
        server = creds.get("server")
        if not server or same_server(server, url):
            return Credentials(str(creds["api_key"]), creds.get("project_id"), "credentials file")
    raise CredentialsError(
        f"no API key for the Bench server {url}: run `benchkit login {url} --project ID --key KEY` "
        "or set BENCHKIT_API_KEY"
    )


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:300]
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict)) or detail
    return str(detail)[:300]


class ApiClient:
    """Requests to one Bench server with one API key."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        project_id: str | None = None,
        *,
        retries: int | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.base = self.url + API_PREFIX
        self.api_key = api_key
        self.project_id = project_id
        self.retries = (
            int(os.environ.get("BENCHKIT_HTTP_RETRIES", 5)) if retries is None else retries
        )
        self._session: requests.Session | None = None
        self._pid = -1
        self._checked = False
        self.info: dict[str, Any] | None = None

    # --- the session ---------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """This process's session (a forked child makes its own)."""
        if self._session is None or self._pid != os.getpid():
            s = requests.Session()
            retry = Retry(
                total=self.retries,
                connect=min(self.retries, int(os.environ.get("BENCHKIT_HTTP_CONNECT_RETRIES", 3))),
                read=self.retries,
                status=self.retries,
                other=0,
                backoff_factor=0.25,
                backoff_max=4.0,
                status_forcelist=RETRY_STATUS,
                allowed_methods=None,  # every call of this API is safe to repeat
                raise_on_status=False,
                respect_retry_after_header=True,
            )
            adapter = _Adapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["User-Agent"] = f"benchkit/{__version__}"
            if self.api_key:
                s.headers["Authorization"] = f"Bearer {self.api_key}"
            self._session, self._pid = s, os.getpid()
        return self._session

    def close(self) -> None:
        if self._session is not None and self._pid == os.getpid():
            self._session.close()
        self._session = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"], state["_pid"] = None, -1
        return state

    # --- requests ------------------------------------------------------------------------------

    def path(self, *segments: str) -> str:
        """An API URL; each segment is percent-encoded (``/`` kept inside blob keys)."""
        return self.base + "".join("/" + quote(s, safe="/") for s in segments)

    def request(
        self, method: str, url: str, *, expect: tuple[int, ...] = (200,), what: str = "", **kw: Any
    ) -> requests.Response:
        """Send one request (retried as the module says); a status outside ``expect`` raises
        the matching one-line error."""
        if not self._checked:
            self.check_server()
        kw.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        kw.setdefault("verify", _verify())
        try:
            resp = self.session.request(method, url, **kw)
        except requests.exceptions.SSLError as e:
            raise StoreConnectionError(
                f"TLS failed with the Bench server at {self.url} ({_reason(e)}); if it uses a "
                "private CA, point BENCHKIT_CA_BUNDLE at its certificate"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise self.unreachable(e) from None
        if resp.status_code not in expect:
            raise self.error(resp, what)
        return resp

    def json(self, method: str, *segments: str, **kw: Any) -> Any:
        return self.request(method, self.path(*segments), **kw).json()

    def unreachable(self, e: Exception) -> StoreConnectionError:
        return StoreConnectionError(
            f"cannot reach the Bench server at {self.url} ({_reason(e)}): start it with "
            "`python -m benchkit server`, or check the URL with `benchkit project`"
        )

    def error(self, resp: requests.Response, what: str = "") -> StoreError:
        """The BenchKit error for an unexpected answer."""
        code, detail = resp.status_code, _detail(resp)
        on = f" ({what})" if what else ""
        if code == 401:
            project = f" for project {self.project_id}" if self.project_id else ""
            return CredentialsError(
                f"the Bench server at {self.url} rejected the API key{project}: it is wrong or "
                f"was revoked; log in again with `benchkit login {self.url} --project ID --key KEY`"
            )
        if code == 403:
            return StorePermissionError(
                f"the Bench server at {self.url} refused{on}: {detail}; ask its admin for a "
                "read-write key (`benchkit server keys create PROJECT`)"
            )
        if code == 400 and detail.startswith("invalid store key"):
            return InvalidKey(detail)
        if code >= 500:
            return StoreError(
                f"the Bench server at {self.url} failed{on} with HTTP {code}: {detail}; "
                "see the server's log"
            )
        return StoreError(f"the Bench server at {self.url} refused{on} with HTTP {code}: {detail}")

    # --- the handshake -------------------------------------------------------------------------

    def check_server(self) -> dict[str, Any]:
        """``GET /api/v1/info``: a Bench server of this API version, or a one-line error."""
        try:
            resp = self.session.get(
                self.path("info"),
                timeout=(CONNECT_TIMEOUT, 30),
                headers={"Authorization": None},
                verify=_verify(),
            )
        except requests.exceptions.SSLError as e:
            raise StoreConnectionError(
                f"TLS failed with the Bench server at {self.url} ({_reason(e)}); if it uses a "
                "private CA, point BENCHKIT_CA_BUNDLE at its certificate"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise self.unreachable(e) from None
        try:
            info = resp.json() if resp.status_code == 200 else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("service") != SERVICE:
            raise StoreError(
                f"{self.url} is not a Bench server (GET {API_PREFIX}/info answered HTTP "
                f"{resp.status_code}); check the URL (`benchkit project` shows it)"
            )
        version = info.get("api_version")
        if version != API_VERSION:
            raise StoreError(
                f"the Bench server at {self.url} speaks API version {version} (server "
                f"{info.get('server_version')}), this BenchKit {__version__} speaks version "
                f"{API_VERSION}: install matching versions (pip install -U benchkit on the older side)"
            )
        self._checked, self.info = True, info
        return info

    def whoami(self) -> dict[str, Any]:
        """The project and scope of this client's key."""
        return self.json("GET", "whoami", what="checking the API key")


class _Adapter(HTTPAdapter):
    """requests' adapter with urllib3 writing streamed bodies in ``SEND_BLOCK`` blocks (its
    default of 16 KiB costs a system call and a Python round per 16 KiB of an upload)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", SEND_BLOCK)
        super().init_poolmanager(*args, **kwargs)


def _verify() -> str | bool:
    """The CA bundle for TLS: ``BENCHKIT_CA_BUNDLE`` (a private CA), else the defaults. Passed on
    every request, since requests lets ``REQUESTS_CA_BUNDLE`` override a session's setting."""
    return os.environ.get("BENCHKIT_CA_BUNDLE") or True


def _reason(e: Exception) -> str:
    """A short reason from a requests exception (no URL, no headers)."""
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset by peer",
                   "Remote end closed", "certificate verify failed", "No route to host"):  # fmt: skip
        if marker.lower() in text.lower():
            return marker.lower()
    return type(e).__name__


class Catalog:
    """What a project holds, as the server indexes it (``store.catalog()`` of an HttpStore)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def datasets(self) -> list[dict[str, Any]]:
        """``{name, complete, samples, chunks, bytes, created}`` per dataset, by name."""
        return self.client.json("GET", "datasets", what="listing datasets")["datasets"]

    def versions(self) -> list[dict[str, Any]]:
        """The stored manifest of each whole code version, oldest number first."""
        return self.client.json("GET", "versions", what="listing code versions")["versions"]

    def runs(self) -> list[dict[str, Any]]:
        """Each run's record (``run.json``), oldest first."""
        return self.client.json("GET", "runs", what="listing runs")["runs"]

    def checkpoints(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """``{run_id, name, size, epoch, step, time}`` per checkpoint, as ``checkpoints list``
        orders them."""
        params = {"run": run_id} if run_id else None
        return self.client.json("GET", "checkpoints", params=params, what="listing checkpoints")[
            "checkpoints"
        ]

    # --- experiment tracking (what the dashboard shows) ---------------------------------------

    def tracked_runs(self, sort: str | None = None, query: str = "") -> dict[str, Any]:
        """The runs table: ``{"runs": [...], "columns", "sort", "monitor", ...}``; each run with
        its status as the server sees it (``lost`` included) and its metric summaries."""
        params = {k: v for k, v in (("sort", sort), ("q", query)) if v}
        return self.client.json("GET", "tracking", "runs", params=params, what="listing runs")

    def tracked_run(self, run_id: str) -> dict[str, Any]:
        """One run: record fields, status, metric summaries, checkpoints."""
        return self.client.json("GET", "tracking", "runs", run_id, what=f"run {run_id}")

    def chart(self, run_id: str, key: str, buckets: int) -> dict[str, Any]:
        """Metric ``key`` of a run in at most ``buckets`` buckets (``x``, ``last``, ...)."""
        params = {"key": key, "n": max(1, min(2000, buckets))}
        body = self.client.json("GET", "runs", run_id, "chart", params=params, what=f"run {run_id}")
        return body["series"][0] if body["series"] else {}

    def points(self, run_id: str, key: str) -> Iterator[dict[str, Any]]:
        """Every stored point ``{"step", "t", "value", "seq"}`` of metric ``key``, in order."""
        after = None
        while True:
            params = {"key": key, **({"after": after} if after else {})}
            page = self.client.json(
                "GET", "runs", run_id, "points", params=params, what=f"run {run_id}"
            )
            yield from page["points"]
            if page["next"] is None:
                return
            after = ",".join(str(p) for p in page["next"])

    def run_log(self, run_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """The run's messages ``{"t", "text"}`` in time order."""
        params = {"limit": limit}
        return self.client.json("GET", "runs", run_id, "log", params=params, what=f"run {run_id}")[
            "lines"
        ]


def check_login(url: str, api_key: str, project: str | None = None) -> dict[str, Any]:
    """Ask the server whose ``api_key`` is; with ``project`` (an id or name), also check that
    the key belongs to it. Returns ``{project_id, project_name, key_id, scope}``."""
    who = ApiClient(url, api_key, project).whoami()
    if project and project not in (who["project_id"], who["project_name"]):
        raise CredentialsError(
            f"that API key belongs to project {who['project_name']} ({who['project_id']}) on "
            f"{normalize_url(url)}, not to {project!r}: check --project"
        )
    return who
