"""Run ``gcp-storage-emulator`` (a local server speaking the GCS JSON API) with the parts of that
API it does not implement and BenchKit's GCS client, tensorstore's ``gcs`` driver, uses:

- ``objects.list`` with ``startOffset``/``endOffset``: tensorstore lists (and deletes) a key
  range with them and relies on the server to honour them; the emulator ignores them, so a
  range delete there would delete the whole bucket;
- ``ifGenerationMatch`` on uploads (``0``: create only if absent): tensorstore's conditional
  writes; the emulator ignores it, so every conditional write would succeed;
- a range that starts at or past the end of an object: GCS answers 416, the emulator a 206 with
  a malformed ``Content-Range`` (which tensorstore rightly refuses);
- and an empty object: the emulator fails on a media upload with no body.

Real GCS does all four. Requests are handled one at a time (on many connections), so the
generation check and the upload cannot interleave with another request. And the emulator
writes its whole object table as indented JSON after every upload and delete, which an
in-memory emulator never reads back: that made each of the 1,100 uploads of the listing test
slower than the last (177 s for the test), so in memory it is not written.

    python tests/store/gcs_emulator.py PORT        # serves http://127.0.0.1:PORT, in memory
"""

from __future__ import annotations

import re
import sys
from http import HTTPStatus
from typing import Any

# patch the handlers before the server module captures them in its routing table
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_list_objects = objects.ls
_insert_object = objects.insert
_download_object = objects.download


def _query(request: Any, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


class _OffsetListing:
    """The emulator's storage, with listings cut to ``[start, end)`` as GCS does."""

    def __init__(self, storage: Any, start: str | None, end: str | None) -> None:
        self._storage, self._start, self._end = storage, start, end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def _keep(self, name: str) -> bool:
        return (self._start is None or name >= self._start) and (
            self._end is None or name < self._end
        )

    def get_file_list(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any]]:
        files, prefixes = self._storage.get_file_list(*args, **kwargs)
        return [f for f in files if self._keep(f["name"])], [p for p in prefixes if self._keep(p)]


def list_objects(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
    view = _OffsetListing(storage, _query(request, "startOffset"), _query(request, "endOffset"))
    return _list_objects(request, response, view, *args, **kwargs)


def insert_object(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
    wanted = _query(request, "ifGenerationMatch")
    if wanted is not None:
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], _query(request, "name"))
            current = str(obj.get("generation") or "0")
        except NotFound:
            current = "0"
        if current != wanted:
            response.status = HTTPStatus.PRECONDITION_FAILED
            return None
    if _query(request, "uploadType") == "media" and request.data is None:
        request._data = b""  # the emulator reads an empty body as no body
    return _insert_object(request, response, storage, *args, **kwargs)


def download_object(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
    wanted = re.fullmatch(r"\s*bytes=([0-9]+)-([0-9]*)\s*", request.get_header("range", "") or "")
    if wanted:
        try:
            size = len(storage.get_file(request.params["bucket_name"], request.params["object_id"]))
        except NotFound:
            size = None
        if size is not None and int(wanted.group(1)) >= size:
            response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
            response["Content-Range"] = f"bytes */{size}"
            return None
    return _download_object(request, response, storage, *args, **kwargs)


objects.ls = list_objects
objects.insert = insert_object
objects.download = download_object  # get() with alt=media calls it too

from gcp_storage_emulator.storage import Storage  # noqa: E402

_write_config = Storage._write_config_to_file


def _write_config_unless_in_memory(self: Any) -> None:
    # the object table stays in the Storage's dicts; the file is only read when it starts
    if not self._use_memory_fs:
        _write_config(self)


Storage._write_config_to_file = _write_config_unless_in_memory

import http.server  # noqa: E402
import threading  # noqa: E402

from gcp_storage_emulator import server as _server  # noqa: E402

# one request handled at a time (the generation check above relies on it), but many
# connections open: tensorstore keeps several alive, and a single-threaded server would let
# each wait for the others to time out
_handling = threading.Lock()
_route = _server.Router.handle


def _route_one_at_a_time(self: Any, method: str) -> Any:
    with _handling:
        return _route(self, method)


_server.Router.handle = _route_one_at_a_time
_server.server.HTTPServer = http.server.ThreadingHTTPServer  # _server.server is http.server

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    port = sys.argv[1]
    sys.exit(main(["start", "--host", "127.0.0.1", "--port", port, "--in-memory", "--quiet"]))
