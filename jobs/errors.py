"""Baton's exceptions, their exit codes, and the one table that maps storage errors to them.

Exit codes are a contract with scripts: 0 success, 1 an unexpected failure, 2 bad input (config, tables,
arguments), 3 the decision gate failed (a verdict other than migrate where the run asked to gate on it, or a
nightly drift alert with `nightly.gate_on_drift`, docs/drift.md), 4 storage unreachable or access denied. `baton submit` returns the job's own code, or 5 when it stopped waiting
(--timeout) while the job still runs.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_GATE = 3
EXIT_STORAGE = 4
EXIT_STILL_RUNNING = 5  # `baton submit --timeout`: the wait ended, the job did not


class BatonError(Exception):
    """Base of every error Baton reports to a user; the message is meant to be read as is."""

    exit_code = EXIT_FAILURE


class ConfigError(BatonError):
    """The run config is invalid (names the key path)."""

    exit_code = EXIT_BAD_INPUT


class ContractError(BatonError):
    """A table breaks its contract as a whole (names the file and column)."""

    exit_code = EXIT_BAD_INPUT


class StoreError(BatonError):
    """The run store cannot be read or written."""

    exit_code = EXIT_STORAGE


class StoreNotFound(StoreError):
    """A bucket, folder or object does not exist."""


class InputNotFound(StoreNotFound):
    """A local input file (config, traffic, labels, recorded scores) does not exist: bad input, exit 2.

    Still a StoreNotFound for code that asks "was it missing?"; only the exit code says whose mistake it is."""

    exit_code = EXIT_BAD_INPUT


class StoreAccessDenied(StoreError):
    """Credentials are missing, wrong or lack permission."""


class CorruptShard(StoreError):
    """A committed shard of the run store is damaged: its commit record does not parse, or its data file is missing,
    of the wrong size, fails its checksum or is not readable Parquet. Exit 4 (storage), not 2: the store broke,
    not the user's input. The shard has been set aside (uncommitted), so rerunning `baton run` redoes it."""

    def __init__(self, table: str, shard: str, path: str, reason: str, marker: str | None = None):
        self.table, self.shard, self.path, self.reason, self.marker = table, shard, path, reason, marker
        aside = (f"; it was set aside (uncommitted, see {marker}) and the next `baton run` with this run's config "
                 "redoes it" if marker else "")
        super().__init__(f"run store corrupt: table {table}, shard {shard}, {path}: {reason}{aside}")

    def __reduce__(self):  # crosses Ray's process boundary intact
        return type(self), (self.table, self.shard, self.path, self.reason, self.marker)


# botocore error codes -> (exception, what to tell the user). The one place storage errors are translated.
_S3_CODES: dict[str, tuple[type[StoreError], str]] = {
    "NoSuchBucket": (StoreNotFound, "bucket does not exist"),
    "NoSuchKey": (StoreNotFound, "object does not exist"),
    "404": (StoreNotFound, "not found"),
    "InvalidAccessKeyId": (StoreAccessDenied, "access key id is not known to the store (check the env var named by store.access_key_id_env)"),
    "SignatureDoesNotMatch": (StoreAccessDenied, "secret key is wrong (check the env var named by store.secret_access_key_env)"),
    "AccessDenied": (StoreAccessDenied, "access denied by the store's policy"),
    "403": (StoreAccessDenied, "access denied"),
    "ExpiredToken": (StoreAccessDenied, "session token has expired"),
    # Still failing after every retry (store.max_attempts, docs/s3-faults.md): S3 is overloaded or down.
    "SlowDown": (StoreError, "the store kept throttling (503 SlowDown) through every retry; rerun the same command later to resume"),
    "ServiceUnavailable": (StoreError, "the store kept answering 503 through every retry; rerun the same command later to resume"),
    "InternalError": (StoreError, "the store kept failing (500 InternalError) through every retry; rerun the same command later to resume"),
    "503": (StoreError, "the store kept answering 503 through every retry; rerun the same command later to resume"),
    "500": (StoreError, "the store kept answering 500 through every retry; rerun the same command later to resume"),
}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError",
                "ConnectionClosedError", "ReadTimeoutError", "ServerDisconnectedError"}


def storage_error(exc: BaseException, uri: str) -> BatonError:
    """Translate an exception from fsspec/s3fs/botocore/the OS into a BatonError naming the URI.

    Messages never include credential values: only the URI and the error code.
    """
    if isinstance(exc, BatonError):
        return exc
    code = _error_code(exc)
    if code in _S3_CODES:
        cls, what = _S3_CODES[code]
        return cls(f"{uri}: {what} ({code})")
    if isinstance(exc, FileNotFoundError):
        if _is_local(uri):  # a path on this machine that is not there is a typo, not an outage
            return InputNotFound(f"{uri}: does not exist (no such local file or folder)")
        return StoreNotFound(f"{uri}: does not exist")
    if isinstance(exc, PermissionError):
        return StoreAccessDenied(f"{uri}: permission denied")
    name = type(exc).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError"}:
        return StoreAccessDenied(f"{uri}: no credentials found (set store.access_key_id_env/secret_access_key_env or the AWS chain)")
    if name in _UNREACHABLE:
        return StoreError(f"{uri}: cannot reach the store endpoint ({name}, after every retry); rerun the same "
                          "command when it is back to resume: committed shards are kept")
    return StoreError(f"{uri}: {name}: {_first_line(exc)}")


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _error_code(exc: BaseException) -> str | None:
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
