"""Settings: directories, precedence, and the credentials file."""

from __future__ import annotations

import os
import stat

import pytest

from benchkit.errors import ConfigError, CredentialsError
from benchkit.settings import (
    delete_credentials,
    get_paths,
    load_credentials,
    load_settings,
    save_credentials,
    write_user_setting,
)


def test_benchkit_home_moves_all_three_directories(isolated_home):
    paths = get_paths()
    assert paths.config == isolated_home / "config"
    assert paths.data == isolated_home / "data"
    assert paths.cache == isolated_home / "cache"
    assert load_settings().store == str(isolated_home / "data" / "store")


def test_default_store_without_anything_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.values["store"].source == "default"
    assert s.project == "default"


def test_precedence_flag_env_project_user_default(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    monkeypatch.chdir(project / "sub")

    write_user_setting("store", "/from/user")
    assert load_settings().values["store"].value == "/from/user"
    assert load_settings().values["store"].source.startswith("user settings")

    (project / "benchkit.toml").write_text('[project]\nname = "catdog"\nstore = "/from/project"\n')
    s = load_settings()
    assert (s.store, s.project) == ("/from/project", "catdog")
    assert s.values["store"].source.startswith("project file")
    assert s.project_root == project

    monkeypatch.setenv("BENCHKIT_STORE", "/from/env")
    assert load_settings().store == "/from/env"
    assert load_settings().values["store"].source == "environment (BENCHKIT_STORE)"

    s = load_settings({"store": "/from/flag"})
    assert s.store == "/from/flag"
    assert s.values["store"].source == "command line"


def test_relative_store_in_project_file_is_relative_to_the_project(tmp_path, monkeypatch):
    (tmp_path / "benchkit.toml").write_text('[project]\nstore = "shared-store"\n')
    (tmp_path / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "deep")
    assert load_settings().store == str(tmp_path / "shared-store")


def test_bad_project_file_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "benchkit.toml").write_text("[project\nname=")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="benchkit.toml is not valid TOML"):
        load_settings()


def test_unknown_project_setting_is_rejected_with_the_known_ones(tmp_path, monkeypatch):
    (tmp_path / "benchkit.toml").write_text('[project]\nstroe = "x"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="unknown setting.*stroe.*known: name, store"):
        load_settings()


def test_unknown_user_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        write_user_setting("nope", "1")


def test_credentials_file_is_private(isolated_home):
    path = save_credentials({"project_id": "p1", "api_key": "secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_credentials() == {"project_id": "p1", "api_key": "secret"}
    assert delete_credentials() is True
    assert load_credentials() is None
    assert delete_credentials() is False


def test_credentials_readable_by_others_are_refused(isolated_home):
    path = save_credentials({"api_key": "secret"})
    os.chmod(path, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials()
