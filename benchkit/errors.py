"""BenchKit's exception family.

Every message names the thing involved (file, dataset, chunk, key, store) and, where there is
one, the command or setting that fixes it. The CLI prints these without a traceback.
"""

from __future__ import annotations


class BenchKitError(Exception):
    """Base class of every error BenchKit raises on purpose."""


class ConfigError(BenchKitError):
    """A setting, project file or command-line value is invalid."""


class CredentialsError(BenchKitError):
    """Credentials are missing, unreadable or rejected."""


class LockTimeout(BenchKitError):
    """Another process holds a BenchKit lock file for longer than we may wait."""


# --- store -------------------------------------------------------------------------------------


class StoreError(BenchKitError):
    """An operation on a store failed."""


class UnsupportedStoreURL(StoreError, ValueError):
    """The store URL has a scheme no backend handles."""


class InvalidKey(StoreError, ValueError):
    """A store key is empty, absolute, or tries to leave the store."""


class ObjectNotFound(StoreError, KeyError):
    """The key does not exist in the store."""

    def __init__(self, key: str, store: str, hint: str = "") -> None:
        self.key = key
        self.store = store
        msg = f"'{key}' does not exist in store {store}"
        super().__init__(msg + (f". {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class StorePermissionError(StoreError, PermissionError):
    """The store refused the operation (credentials, bucket policy, file mode)."""


class StoreConnectionError(StoreError, ConnectionError):
    """The store's endpoint could not be reached."""


# --- data --------------------------------------------------------------------------------------


class DataError(BenchKitError):
    """A dataset could not be declared, chunked, uploaded or streamed."""


class DatasetNotFound(DataError, KeyError):
    """No dataset of that name in the store or the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class SchemaError(DataError, TypeError):
    """A sample holds a value BenchKit cannot store, or does not match the dataset's schema."""


class CorruptChunk(DataError):
    """A chunk failed its checksum or could not be parsed."""


# --- training, checkpoints, code -------------------------------------------------------------


class TrainError(BenchKitError):
    """A training run could not be set up or failed."""


class CheckpointError(BenchKitError):
    """A checkpoint could not be saved, found or loaded."""


class CodePackageError(BenchKitError):
    """Code could not be packaged, stored, pulled or verified."""


# --- remote jobs -----------------------------------------------------------------------------


class JobError(BenchKitError):
    """A remote job could not be submitted, prepared, followed or stopped."""


class EngineUnavailable(JobError):
    """The engine that runs jobs cannot be reached right now (a retry may succeed)."""
