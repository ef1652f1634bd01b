"""Where BenchKit keeps things, and which store and project it uses.

Precedence for every setting: command-line flag > environment > project file
(``benchkit.toml``) > user settings (``settings.toml`` in the config directory) > default.
``benchkit config`` shows each effective value and where it came from.

``BENCHKIT_HOME`` moves the config, data and cache directories under one folder (the tests use
it so they never touch the real home).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from benchkit.errors import ConfigError, CredentialsError
from benchkit.fsutil import atomic_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP = "benchkit"
PROJECT_FILE = "benchkit.toml"
SETTINGS_FILE = "settings.toml"
CREDENTIALS_FILE = "credentials.json"

#: Settings a user may set, with their environment variable and meaning.
KNOWN_SETTINGS: dict[str, tuple[str, str]] = {
    "store": (
        "BENCHKIT_STORE",
        "store URL: a directory, s3://bucket/prefix, gs://..., http(s)://server",
    ),
    "project": ("BENCHKIT_PROJECT", "project name (names runs and code versions)"),
    "cache_limit": ("BENCHKIT_CACHE_LIMIT", "size limit of the chunk cache, e.g. 20GB"),
    "s3_endpoint": (
        "BENCHKIT_S3_ENDPOINT",
        "S3 endpoint URL for S3-compatible stores (MinIO, R2, ...)",
    ),
    "s3_region": ("BENCHKIT_S3_REGION", "S3 region (else AWS_REGION / AWS_DEFAULT_REGION)"),
}


@dataclass(frozen=True)
class Paths:
    """The three directories BenchKit owns."""

    config: Path
    data: Path
    cache: Path

    @property
    def settings_file(self) -> Path:
        return self.config / SETTINGS_FILE

    @property
    def credentials_file(self) -> Path:
        return self.config / CREDENTIALS_FILE

    @property
    def default_store(self) -> Path:
        return self.data / "store"


def get_paths() -> Paths:
    """Config, data and cache directories (``BENCHKIT_HOME`` overrides all three)."""
    home = os.environ.get("BENCHKIT_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Paths(root / "config", root / "data", root / "cache")
    return Paths(
        Path(platformdirs.user_config_dir(APP)),
        Path(platformdirs.user_data_dir(APP)),
        Path(platformdirs.user_cache_dir(APP)),
    )


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from."""

    key: str
    value: Any
    source: str


@dataclass
class Settings:
    """The effective settings; ``sources`` says where each came from."""

    values: dict[str, Setting] = field(default_factory=dict)
    paths: Paths = field(default_factory=get_paths)
    project_root: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def get(self, key: str, default: Any = None) -> Any:
        s = self.values.get(key)
        return default if s is None or s.value is None else s.value

    @property
    def store(self) -> str:
        return str(self.values["store"].value)

    @property
    def project(self) -> str:
        return str(self.values["project"].value)


def find_project_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``benchkit.toml`` in ``start`` or its parents."""
    here = Path(start or os.getcwd()).resolve()
    if here.is_file():
        here = here.parent
    for d in (here, *here.parents):
        candidate = d / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid TOML: {e}. Fix or delete it.") from e
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e


def read_project_file(path: Path) -> dict[str, Any]:
    """The ``[project]`` table of a project file (top-level keys are accepted too)."""
    data = _read_toml(path, "project file")
    table = data.get("project", {})
    if not isinstance(table, dict):
        raise ConfigError(f"project file {path}: [project] must be a table")
    merged = {k: v for k, v in data.items() if k in KNOWN_SETTINGS and not isinstance(v, dict)}
    merged.update(table)
    if "name" in merged:
        merged.setdefault("project", merged.pop("name"))
    unknown = sorted(set(merged) - set(KNOWN_SETTINGS))
    if unknown:
        raise ConfigError(
            f"project file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: name, {', '.join(k for k in KNOWN_SETTINGS if k != 'project')}"
        )
    return merged


def read_user_settings(paths: Paths | None = None) -> dict[str, Any]:
    """The user's ``settings.toml``, or an empty dict."""
    paths = paths or get_paths()
    if not paths.settings_file.is_file():
        return {}
    return _read_toml(paths.settings_file, "settings file")


def write_user_setting(key: str, value: str | None, paths: Paths | None = None) -> Path:
    """Set (or with ``None`` remove) one user setting; returns the settings file."""
    if key not in KNOWN_SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; known: {', '.join(KNOWN_SETTINGS)}")
    paths = paths or get_paths()
    current = read_user_settings(paths)
    if value is None:
        current.pop(key, None)
    else:
        current[key] = value
    text = "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in sorted(current.items()))
    with atomic_file(paths.settings_file) as f:
        f.write(text.encode())
    return paths.settings_file


def load_settings(
    flags: dict[str, Any] | None = None, project_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """Resolve every setting by precedence: flag > environment > project file > user > default."""
    paths = get_paths()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    project_file = find_project_file(project_dir)
    project_values = read_project_file(project_file) if project_file else {}
    user_values = read_user_settings(paths)
    defaults: dict[str, Any] = {
        "store": str(paths.default_store),
        "project": project_file.parent.name if project_file else "default",
        "cache_limit": "20GB",
        "s3_endpoint": None,
        "s3_region": None,
    }
    values: dict[str, Setting] = {}
    for key, (env, _) in KNOWN_SETTINGS.items():
        if key in flags:
            values[key] = Setting(key, flags[key], "command line")
        elif os.environ.get(env):
            values[key] = Setting(key, os.environ[env], f"environment ({env})")
        elif key in project_values:
            values[key] = Setting(key, project_values[key], f"project file ({project_file})")
        elif key in user_values:
            values[key] = Setting(key, user_values[key], f"user settings ({paths.settings_file})")
        else:
            values[key] = Setting(key, defaults[key], "default")
    store = values["store"]
    if (
        project_file
        and store.source.startswith("project file")
        and "://" not in str(store.value)
        and not os.path.isabs(os.path.expanduser(str(store.value)))
    ):
        # a relative directory in benchkit.toml is relative to the project, not the cwd
        values["store"] = Setting(
            "store", str(project_file.parent / str(store.value)), store.source
        )
    return Settings(values, paths, project_file.parent if project_file else None)


# --- credentials -------------------------------------------------------------------------------


def save_credentials(creds: dict[str, Any], paths: Paths | None = None) -> Path:
    """Write the credentials file, readable by the user only (mode 0600)."""
    paths = paths or get_paths()
    paths.config.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.config, 0o700)
    with atomic_file(paths.credentials_file, mode=0o600) as f:
        f.write(json.dumps(creds, indent=1, sort_keys=True).encode())
    return paths.credentials_file


def load_credentials(paths: Paths | None = None) -> dict[str, Any] | None:
    """The stored credentials, or None. Refuses a file others can read."""
    paths = paths or get_paths()
    path = paths.credentials_file
    if not path.is_file():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CredentialsError(
            f"credentials file {path} is readable by other users (mode {mode:o}); "
            f"run: chmod 600 {path}"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CredentialsError(
            f"credentials file {path} is unreadable ({e}); run `benchkit logout` and log in again"
        ) from e


def delete_credentials(paths: Paths | None = None) -> bool:
    """Remove the credentials file; False if there was none."""
    paths = paths or get_paths()
    try:
        paths.credentials_file.unlink()
    except FileNotFoundError:
        return False
    return True
