"""A damaged dataset in the store is found and repaired as the errors say: ``datasets verify
[--repair]``, uploads that stat every chunk (and check checksums with ``--verify``), no
leftovers of killed uploads, and ``migrate data --clean``. Faults are injected for real:
bytes flipped, files truncated or deleted in the store, a ``migrate data`` process killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchkit.cli.main import main
from benchkit.data.index import load_index
from benchkit.data.stream import open_dataset
from benchkit.errors import CorruptChunk
from benchkit.store import LocalStore

TRAIN_PY = """
from pathlib import Path
import benchkit as bench

HERE = Path(__file__).resolve().parent

@bench.dataset("train", chunk_bytes="4KB")
def train_samples():
    for p in sorted((HERE / "files").glob("*.bin")):
        yield bench.File(p), int(p.stem)
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def project(make_project):
    """A project whose dataset 'train' (6+ chunks) is migrated into ./store."""
    root = make_project(TRAIN_PY)
    (root / "files").mkdir()
    for i in range(16):
        (root / "files" / f"{i:03d}.bin").write_bytes(os.urandom(1500 + 37 * i))
    code = main(["migrate", "data", "--chunk", "--upload", "--workers", "1"])
    assert code == 0
    return root


def chunk_paths(root: Path) -> list[Path]:
    store = LocalStore(root / "store")
    return [root / "store/datasets/train" / c.file for c in load_index(store, "train").chunks]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def read_all(root: Path) -> int:
    return sum(1 for _ in open_dataset("train", store=str(root / "store"), shuffle=False))


# --- upload notices what it must not skip ------------------------------------------------------


def test_upload_sends_a_missing_or_truncated_chunk_again_although_the_index_lists_it(
    project, capsys
):
    first, second = chunk_paths(project)[:2]
    first.unlink()
    second.write_bytes(second.read_bytes()[:-10])
    code, out, _ = run(capsys, "migrate", "data", "--upload")
    assert code == 0
    out = flat(out)
    assert "2 chunks" in out and "uploaded" in out and "unchanged" not in out
    assert f"chunk {first.name}: the store's copy was missing" in out
    assert f"chunk {second.name}: the store's copy was wrong size" in out
    assert read_all(project) == 16


def test_a_flipped_byte_is_found_by_upload_verify_and_not_by_a_plain_upload(project, capsys):
    victim = chunk_paths(project)[3]
    flip_a_byte(victim)
    code, out, _ = run(capsys, "migrate", "data", "--upload")
    assert code == 0 and "unchanged, nothing uploaded" in flat(out) and "sizes checked" in out
    code, out, _ = run(capsys, "migrate", "data", "--upload", "--verify")
    assert code == 0
    assert f"chunk {victim.name}: the store's copy was checksum mismatch" in flat(out)
    assert "checksums verified" in flat(out)
    assert read_all(project) == 16


# --- the read error names the command, and the command repairs ---------------------------------


def test_a_corrupt_chunk_is_repaired_as_the_read_error_says(project, capsys):
    victim = chunk_paths(project)[2]
    flip_a_byte(victim)
    with pytest.raises(CorruptChunk) as info:
        read_all(project)
    message = str(info.value)
    assert victim.name in message and "benchkit datasets verify" in message
    command = message.split("`python -m benchkit ")[1].split("`")[0].split()
    command = [("train" if a == "<dataset>" else a) for a in command]
    assert command == ["datasets", "verify", "train", "--repair"]
    code, out, err = run(capsys, *command)
    assert code == 0, out + err
    assert "re-uploaded" in flat(out) and "repaired 'train': 1 chunks re-uploaded" in flat(out)
    assert read_all(project) == 16


def test_verify_tells_missing_wrong_size_and_mismatch_apart_then_repairs(project, capsys):
    paths = chunk_paths(project)
    paths[0].unlink()
    paths[1].write_bytes(paths[1].read_bytes()[:100])
    flip_a_byte(paths[2])
    code, out, _ = run(capsys, "datasets", "verify", "train", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["chunks"] == len(paths)
    assert {p["file"]: p["problem"] for p in report["problems"]} == {
        paths[0].name: "missing",
        paths[1].name: "wrong size",
        paths[2].name: "checksum mismatch",
    }
    code, out, _ = run(capsys, "datasets", "verify", "train")
    assert code == 1 and "Bad chunks of dataset 'train'" in out
    code, out, _ = run(capsys, "datasets", "verify", "train", "--repair", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run(capsys, "datasets", "verify", "train")
    assert code == 0 and "every checksum matches" in flat(out)
    assert read_all(project) == 16


def test_without_a_staged_copy_repair_says_how_to_rebuild_and_that_command_works(project, capsys):
    code, out, _ = run(capsys, "migrate", "data", "--upload", "--clean")
    assert code == 0 and "staging copy" in flat(out) and "removed" in flat(out)
    assert not (project / ".benchkit/staging/datasets/train").exists()
    victim = chunk_paths(project)[1]
    flip_a_byte(victim)
    code, out, _ = run(capsys, "datasets", "verify", "train", "--repair", "--json")
    assert code == 1
    [problem] = json.loads(out)["problems"]
    assert (problem["file"], problem["repaired"]) == (victim.name, False)
    assert problem["note"] == "no staged copy"
    code, out, err = run(capsys, "datasets", "verify", "train", "--repair")
    assert code == 1 and "no staged copy" in out
    rebuild = flat(err).split("in the project: `")[1].split("`")[0]
    assert rebuild == "python -m benchkit migrate data train.py train --verify --yes"
    code, out, err = run(capsys, *rebuild.split()[3:])
    assert code == 0, out + err
    code, out, _ = run(capsys, "datasets", "verify", "train")
    assert code == 0
    assert read_all(project) == 16


# --- leftovers of interrupted uploads ----------------------------------------------------------


def test_upload_sweeps_temporary_files_a_killed_local_upload_left(project, capsys):
    folder = project / "store/datasets/train"
    # what atomic_file leaves when its process is killed mid-copy
    leftover = folder / f".{chunk_paths(project)[0].name}.k1ll3d.tmp"
    leftover.write_bytes(os.urandom(3000))
    code, out, _ = run(capsys, "migrate", "data", "--upload")
    assert code == 0 and "1 leftovers of interrupted uploads removed" in flat(out)
    assert not leftover.exists()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


BIG_PY = """
from pathlib import Path
import benchkit as bench

@bench.dataset("big")
def big():
    yield bench.File(Path(__file__).resolve().parent / "blob.bin"), 0
"""


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_killed_local_upload_leaves_no_temporary_files_once_an_upload_succeeds(make_project):
    """A real SIGKILL while `migrate data` copies a 72 MiB chunk into a local store leaves
    the copy's hidden temporary file; the next successful upload removes it."""
    root = make_project(BIG_PY)
    (root / "blob.bin").write_bytes(os.urandom(72 * 1024 * 1024))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "benchkit", "migrate", "data", "train.py"]
    proc = subprocess.run([*cmd, "--chunk", "--workers", "1"], cwd=root, env=env, timeout=120)
    assert proc.returncode == 0
    folder = root / "store/datasets/big"
    hidden = lambda: [p.name for p in folder.iterdir() if p.name.startswith(".")]  # noqa: E731
    for _attempt in range(5):  # the copy is caught while it runs, or the upload is run again
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        up = subprocess.Popen([*cmd, "--upload"], cwd=root, env=env, stdout=subprocess.DEVNULL)
        try:
            while not hidden() and up.poll() is None:
                time.sleep(0.001)
            if up.poll() is None:
                up.send_signal(signal.SIGKILL)
        finally:
            up.wait()
        if up.returncode == -signal.SIGKILL and hidden():
            break
    else:
        pytest.fail("five uploads of a 72 MiB chunk all finished before their copy was seen")
    left = hidden()
    assert all(n.endswith(".tmp") for n in left), left  # atomic_file's .<name>.<random>.tmp
    assert not (folder / "index.json").exists()  # the killed upload never made it visible
    proc = subprocess.run(
        [*cmd, "--upload"], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(left)} leftovers of interrupted uploads removed" in flat(proc.stdout)
    assert hidden() == []
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "datasets", "verify", "big"],
        cwd=root, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def kill_upload_once(argv: list[str], cwd: Path, env: dict, wrote_a_part) -> None:
    """Start ``argv`` (an upload) and SIGKILL it as soon as ``wrote_a_part()`` is true."""
    up = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not wrote_a_part():
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "the upload never wrote a part"
            time.sleep(0.02)
        up.send_signal(signal.SIGKILL)
        up.wait()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == -signal.SIGKILL


def _hidden_keys(s3, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys |= {o["Key"] for o in page.get("Contents", []) if "/." in o["Key"]}
    return keys


def _unfinished_parts(s3, bucket: str) -> dict[str, int]:
    """Upload id -> parts already sent, of the multipart uploads never completed nor aborted."""
    found = {}
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        found[u["UploadId"]] = len(parts.get("Parts", []))
    return found


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_killed_migrate_upload_leaves_no_hidden_parts_once_an_upload_succeeds(
    make_project, moto_server, s3_bucket
):
    """`migrate data` SIGKILLed while it uploads a chunk bigger than a part leaves an unfinished
    multipart upload in the bucket (parts S3 keeps, and bills, but never shows); the next
    successful upload of the dataset aborts it, and the chunk is one plain object."""
    import boto3

    from benchkit.store import open_store
    from benchkit.store.tensorstore import MAGIC

    root = make_project(BIG_PY, store=None)
    (root / "blob.bin").write_bytes(os.urandom(72 * 1024 * 1024))  # 3 parts of 32 MiB
    url = f"s3://{s3_bucket}/p?endpoint={moto_server}&region=us-east-1"
    env = {**os.environ, "BENCHKIT_STORE": url, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "benchkit", "migrate", "data", "train.py"]
    proc = subprocess.run(
        [*cmd, "--chunk", "--workers", "1"], cwd=root, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    kill_upload_once(
        [*cmd, "--upload"], root, env, lambda: any(_unfinished_parts(s3, s3_bucket).values())
    )
    assert _unfinished_parts(s3, s3_bucket), "the killed upload left its parts"
    store = open_store(url)
    assert not store.exists("datasets/big/index.json")

    proc = subprocess.run(
        [*cmd, "--upload"], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    assert "leftovers of interrupted uploads removed" in flat(proc.stdout)
    [chunk] = load_index(store, "big").chunks
    assert _unfinished_parts(s3, s3_bucket) == {} and _hidden_keys(s3, s3_bucket) == set()
    head = s3.get_object(Bucket=s3_bucket, Key=f"p/datasets/big/{chunk.file}", Range="bytes=0-63")
    assert not head["Body"].read().startswith(MAGIC)  # a plain object, not a manifest
    assert int(head["ContentRange"].rsplit("/", 1)[1]) == chunk.bytes
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "datasets", "verify", "big"],
        cwd=root, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _gcs_hidden_keys(bucket: str) -> set[str]:
    """Keys with a hidden segment in a bucket of the GCS emulator, listed by its JSON API."""
    import urllib.request

    keys, token = set(), ""
    base = os.environ["TENSORSTORE_GCS_HTTP_URL"]
    while True:
        with urllib.request.urlopen(
            f"{base}/storage/v1/b/{bucket}/o?pageToken={token}", timeout=30
        ) as resp:
            page = json.load(resp)
        keys |= {item["name"] for item in page.get("items", [])}
        token = page.get("nextPageToken", "")
        if not token:
            return {k for k in keys if "/." in k}


@pytest.mark.gcs
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_killed_gcs_upload_leaves_no_hidden_parts_once_an_upload_succeeds(
    make_project, gs_store_url
):
    """On GCS (tensorstore's gcs driver, on the emulator) a chunk bigger than a part is sent
    as hidden parts and a manifest; `migrate data` SIGKILLed half way leaves parts, and the
    next successful upload removes every one the manifest does not name."""
    from benchkit.store import open_store
    from benchkit.store.tensorstore import MAGIC

    root = make_project(BIG_PY, store=None)
    (root / "blob.bin").write_bytes(os.urandom(72 * 1024 * 1024))  # 3 parts of 32 MiB
    bucket = gs_store_url.split("/")[2]
    env = {**os.environ, "BENCHKIT_STORE": gs_store_url, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "benchkit", "migrate", "data", "train.py"]
    proc = subprocess.run(
        [*cmd, "--chunk", "--workers", "1"], cwd=root, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    kill_upload_once([*cmd, "--upload"], root, env, lambda: _gcs_hidden_keys(bucket))
    killed = _gcs_hidden_keys(bucket)
    assert killed, "the killed upload left parts"
    store = open_store(gs_store_url)
    assert not store.exists("datasets/big/index.json")

    proc = subprocess.run(
        [*cmd, "--upload"], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    assert "leftovers of interrupted uploads removed" in flat(proc.stdout)
    [chunk] = load_index(store, "big").chunks
    manifest = store._store().read(f"datasets/big/{chunk.file}").result().value
    assert manifest.startswith(MAGIC)
    named = {f"prefix/{part}" for part, _ in json.loads(manifest[len(MAGIC) :])["parts"]}
    assert _gcs_hidden_keys(bucket) == named and not (killed & named)
    proc = subprocess.run(
        [sys.executable, "-m", "benchkit", "datasets", "verify", "big"],
        cwd=root, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
