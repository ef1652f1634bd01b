"""What a job does before it trains (``job-run``'s preparation), on a real store: the version
is checked out with every checksum verified, a version replaced since the job was submitted is
refused, a damaged archive is refused with nothing extracted, an unknown version is a clear
error naming the job."""

from __future__ import annotations

import pytest

from benchkit.code.package import archive_key, get_manifest
from benchkit.errors import CodePackageError, JobError
from benchkit.remote.jobrun import prepare, run_arguments
from benchkit.remote.spec import JobSpec
from benchkit.store import LocalStore


def test_the_version_is_checked_out_verified_and_a_changed_one_is_refused(
    tmp_path, tiny_version, env_cache
):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    sha = get_manifest(store, version).archive_sha256
    spec = JobSpec(job_id="prep", store=str(store.root), version=version, archive_sha256=sha,
                   config=["steps=2"])  # fmt: skip
    env, entry = prepare(spec, tmp_path / "work", env_cache)
    assert entry == tmp_path / "work" / "code" / "train.py" and "bench.train" in entry.read_text()
    args = run_arguments(spec, entry)
    assert args[:4] == [str(entry), "--store", str(store.root), "--run-id"] and "--cpu" in args

    replaced = JobSpec(job_id="prep2", store=str(store.root), version=version,
                       archive_sha256="0" * 64)  # fmt: skip
    with pytest.raises(JobError, match="changed after the job was submitted"):
        prepare(replaced, tmp_path / "work2", env_cache)
    assert not (tmp_path / "work2" / "code").exists()

    with pytest.raises(JobError, match="job prep3: .*code version 99"):
        prepare(JobSpec(job_id="prep3", store=str(store.root), version=99), tmp_path, env_cache)


def test_a_damaged_archive_is_refused_and_nothing_is_extracted(tmp_path, tiny_version, env_cache):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    data = bytearray(store.get(archive_key(version)))
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    store.put(archive_key(version), bytes(data))
    spec = JobSpec(job_id="bad", store=str(store.root), version=version)
    with pytest.raises(CodePackageError, match="damaged or was altered"):
        prepare(spec, tmp_path / "work", env_cache)
    code = tmp_path / "work" / "code"
    assert not code.exists() or not any(code.iterdir())


def test_a_machine_without_the_raw_data_trains_on_the_stored_dataset(catdog_project, tmp_path):
    """A job checks its datasets out of the store; the images they were made from are on the
    user's machine. Not being able to compare them with the declaration is no reason to fail
    (it is under --strict)."""
    from benchkit.errors import DataError
    from benchkit.registry import import_user_module
    from benchkit.training import runner

    store = LocalStore(tmp_path / "store")
    module = import_user_module(str(catdog_project / "train.py"))
    assert sorted(runner.migrate_missing_datasets(module, store, catdog_project)) == [
        "train",
        "val",
    ]
    assert runner.migrate_missing_datasets(module, store, catdog_project, strict=True) == []
    module.DATA = tmp_path / "elsewhere"  # the job's machine: no images
    assert runner.migrate_missing_datasets(module, store, catdog_project) == []
    with pytest.raises(DataError, match="cannot be checked here"):
        runner.migrate_missing_datasets(module, store, catdog_project, strict=True)
