"""The command-line skeleton: --version, --help, config, startproject, project, logout."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from benchkit import __version__
from benchkit.cli.main import build_parser, main
from benchkit.settings import get_paths


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_version_prints_the_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert f"benchkit {__version__}" in r.stdout


def test_help_lists_the_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for command in ("config", "startproject", "project", "logout", "migrate"):
        assert command in r.stdout


def test_every_command_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) >= 5
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
        assert "usage:" in capsys.readouterr().out


def test_config_shows_values_and_sources(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHKIT_STORE", str(tmp_path / "envstore"))
    assert main(["config", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["store"] == {
        "value": str(tmp_path / "envstore"),
        "source": "environment (BENCHKIT_STORE)",
    }
    assert main(["config", "--store", "/x", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["store"]["source"] == "command line"


def test_config_set_and_unset(capsys):
    assert main(["config", "set", "cache_limit", "5GB"]) == 0
    assert "saved" in capsys.readouterr().out
    main(["config", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["cache_limit"]["value"] == "5GB"
    assert main(["config", "unset", "cache_limit"]) == 0
    capsys.readouterr()
    main(["config", "--json"])
    assert json.loads(capsys.readouterr().out)["settings"]["cache_limit"]["source"] == "default"


@pytest.mark.parametrize(
    "url,says",
    [
        ("ftp://host/x", "supported: a directory path"),
        ("s3://", "names no bucket"),
        ("s3://Bad_Bucket/p", "not a valid bucket name"),
        ("s3://bkt/p?endpoint=localhost:9000", "not an http(s) URL with a host"),
        ("s3://bkt/p?endpont=http://127.0.0.1:9000", "unknown option(s) endpont"),
        ("s3://bkt/p?region=Not A Region", "not a region name"),
        ("gs://b", "not a valid bucket name"),
        ("gs://bkt/p?endpoint=http://x", "TENSORSTORE_GCS_HTTP_URL"),
        ("file://relative/dir", "absolute path"),
        ("http://:8000", "not an http(s) URL with a host"),
    ],
)
def test_config_set_store_rejects_a_malformed_url_and_saves_nothing(url, says, capsys):
    assert main(["config", "set", "store", url]) == 1
    assert says in " ".join(capsys.readouterr().err.split())
    assert not get_paths().settings_file.exists()


def test_config_set_store_rejects_an_unusable_directory(tmp_path, capsys, read_only):
    (tmp_path / "a-file").write_text("x")
    assert main(["config", "set", "store", str(tmp_path / "a-file")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        for target in (locked, locked / "new" / "store"):
            assert main(["config", "set", "store", str(target)]) == 1
            assert "writable" in " ".join(capsys.readouterr().err.split())
    assert not get_paths().settings_file.exists()


def test_config_set_store_accepts_good_urls_and_makes_a_directory_absolute(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for url in (
        "s3://my-bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1",
        "gs://my-bucket/benchkit",
        "http://127.0.0.1:8000",
        "memory://x",
        f"file://{tmp_path}/store",
    ):
        assert main(["config", "set", "store", url]) == 0, capsys.readouterr().err
        capsys.readouterr()
        main(["config", "--json"])
        assert json.loads(capsys.readouterr().out)["settings"]["store"]["value"] == url
    assert main(["config", "set", "store", "rel/store"]) == 0
    assert str(tmp_path / "rel" / "store") in " ".join(capsys.readouterr().out.split())
    main(["config", "--json"])
    assert json.loads(capsys.readouterr().out)["settings"]["store"]["value"] == str(
        tmp_path / "rel" / "store"
    )


def test_config_set_checks_endpoints_and_sizes(capsys):
    assert main(["config", "set", "s3_endpoint", "127.0.0.1:9000"]) == 1
    assert main(["config", "set", "cache_limit", "lots"]) == 1
    assert "invalid size" in capsys.readouterr().err
    assert main(["config", "set", "s3_endpoint", "http://127.0.0.1:9000"]) == 0


def test_startproject_creates_the_template(tmp_path):
    target = tmp_path / "myproj"
    r = run_cli("startproject", str(target))
    assert r.returncode == 0, r.stderr
    assert (target / "manage.py").is_file()
    assert 'name = "myproj"' in (target / "benchkit.toml").read_text()
    r = run_cli("project", "--json", cwd=target)
    assert json.loads(r.stdout)["project"] == "myproj"


def test_startproject_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = run_cli("startproject", str(tmp_path))
    assert r.returncode == 1
    assert "is not empty" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "manage.py").exists()
    r = run_cli("startproject", str(tmp_path), "--force")
    assert r.returncode == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert (tmp_path / "manage.py").is_file()


def test_original_startproject_form_stores_private_credentials(tmp_path):
    r = run_cli("startproject", "proj42", "key-abc", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "proj42" / "manage.py").is_file()
    creds = get_paths().credentials_file
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())["api_key"] == "key-abc"
    r = run_cli("project", "--json", cwd=tmp_path / "proj42")
    info = json.loads(r.stdout)
    assert info["credentials"] is True and info["project_id"] == "proj42"
    assert "key-abc" not in r.stdout  # the secret is never shown


def test_logout_removes_credentials(tmp_path):
    run_cli("startproject", "p", "k", cwd=tmp_path)
    assert get_paths().credentials_file.exists()
    r = run_cli("logout")
    assert r.returncode == 0 and "removed" in r.stdout
    assert not get_paths().credentials_file.exists()
    r = run_cli("logout")
    assert "no credentials" in r.stdout


def test_bad_store_url_is_a_clear_error(capsys):
    from benchkit.errors import UnsupportedStoreURL
    from benchkit.store import open_store

    with pytest.raises(UnsupportedStoreURL, match="supported: .*s3://"):
        open_store("ftp://host/x")
