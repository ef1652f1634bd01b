"""The services alone, without HTTP: keys, upload sessions and their expiry, on a database and a
store in a temporary directory."""

from __future__ import annotations

import hashlib
import os

import pytest

from benchkit.server.app import Services
from benchkit.server.config import ServerConfig
from benchkit.server.db.migrate import current_revision, head_revision
from benchkit.server.services.errors import BadRequest, Conflict, NotFound, Unauthorized


@pytest.fixture
def services(tmp_path):
    s = Services.open(ServerConfig(data_dir=tmp_path / "srv"))
    yield s
    s.close()


def test_migrations_bring_a_new_database_to_the_head(services):
    assert current_revision(services.db) == head_revision() is not None


def test_keys_authenticate_only_their_own_secret(services):
    project, key = services.keys.create_project("p1")
    principal = services.keys.authenticate(key.token)
    assert principal.project_id == project.id and principal.can_write
    key_id = key.info.id
    for bad in (None, "", "bk_", f"bk_{key_id}", f"bk_{key_id}_" + "A" * 43, key.token + "x"):
        with pytest.raises(Unauthorized):
            services.keys.authenticate(bad)
    reader = services.keys.create_key("p1", "read")
    assert not services.keys.authenticate(reader.token).can_write
    services.keys.revoke_key(key.token)
    with pytest.raises(Unauthorized):
        services.keys.authenticate(key.token)
    with pytest.raises(BadRequest):
        services.keys.create_project("../etc")
    with pytest.raises(Conflict):
        services.keys.create_project("p1")


def test_only_a_digest_of_the_secret_is_stored(services):
    from sqlalchemy import text

    _, key = services.keys.create_project("p2")
    secret = key.token.split("_", 2)[2]
    with services.db.engine.connect() as conn:
        dump = repr(conn.execute(text("SELECT * FROM api_keys")).fetchall())
    assert secret not in dump and key.info.id in dump


def _write(blobs, project_id: str, upload_id: str, offset: int, data: bytes) -> int:
    sink, lock = blobs.begin_part(project_id, upload_id, offset, len(data))
    sink.write([data])
    return blobs.finish_part(project_id, upload_id, sink, lock, len(data)).received


def test_upload_sessions_resume_and_verify(services):
    project, _ = services.keys.create_project("p3")
    blobs = services.blobs
    u = blobs.create_upload(project.id, "big/x.bin")
    assert _write(blobs, project.id, u.id, 0, b"a" * 10) == 10
    with pytest.raises(Conflict) as info:  # a gap
        _write(blobs, project.id, u.id, 20, b"c")
    assert info.value.details["received"] == 10
    assert _write(blobs, project.id, u.id, 5, b"b" * 10) == 15  # a resent tail overwrites
    data = b"a" * 5 + b"b" * 10
    with pytest.raises(BadRequest):  # wrong checksum: discarded
        blobs.complete_upload(project.id, u.id, "0" * 64, 15)
    with pytest.raises(NotFound):
        blobs.get_upload(project.id, u.id)
    u = blobs.create_upload(project.id, "big/x.bin")
    _write(blobs, project.id, u.id, 0, data)
    digest = hashlib.sha256(data).hexdigest()
    assert blobs.complete_upload(project.id, u.id, digest, 15) == 15
    assert blobs.complete_upload(project.id, u.id, digest, 15) == 15  # idempotent
    assert services.store.get(f"projects/{project.id}/big/x.bin") == data


def test_a_staged_file_shorter_than_recorded_resumes_from_what_it_holds(services):
    """Parts are not fsynced one by one: after a power cut the staged file may hold less than
    the recorded offset. The session then offers the shorter offset, the client resends from
    there, and the object is whole; nothing is visible before that."""
    project, _ = services.keys.create_project("p5")
    blobs = services.blobs
    data = bytes(range(256)) * 64  # 16 KiB
    u = blobs.create_upload(project.id, "cut/x.bin")
    assert _write(blobs, project.id, u.id, 0, data[:8192]) == 8192
    assert _write(blobs, project.id, u.id, 8192, data[8192:12288]) == 12288
    blobs._hashes.clear()  # a restarted server has no running hash
    os.truncate(blobs.staging.upload_path(u.id), 5000)  # the unsynced tail was lost
    assert blobs.get_upload(project.id, u.id).received == 5000
    with pytest.raises(Conflict) as info:  # the bytes beyond what the file holds are gone
        _write(blobs, project.id, u.id, 12288, data[12288:])
    assert info.value.details["received"] == 5000
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(Conflict):  # cannot complete with bytes missing
        blobs.complete_upload(project.id, u.id, digest, len(data))
    assert not services.store.exists(f"projects/{project.id}/cut/x.bin")
    assert _write(blobs, project.id, u.id, 5000, data[5000:]) == len(data)
    assert blobs.complete_upload(project.id, u.id, digest, len(data)) == len(data)
    assert services.store.get(f"projects/{project.id}/cut/x.bin") == data


def test_idle_upload_sessions_expire_with_their_bytes(services):
    project, _ = services.keys.create_project("p4")
    blobs = services.blobs
    u = blobs.create_upload(project.id, "old/x")
    _write(blobs, project.id, u.id, 0, b"abc")
    path = blobs.staging.upload_path(u.id)
    assert path.exists()
    assert blobs.expire_uploads(ttl_s=3600) == 0
    assert blobs.expire_uploads(ttl_s=0) == 1
    assert not path.exists() and blobs.list_uploads(project.id) == []


def test_stray_single_put_files_are_swept_at_start(services):
    stray = services.blobs.staging.put_path()
    stray.write_bytes(b"half a body")
    services.recover()
    assert not stray.exists()
