"""Fixtures shared by the jobs/ tests."""
from __future__ import annotations

import logging

import pytest

from jobs.config import StoreConfig
from jobs.store import RunStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """One run's store, on local disk and on the moto S3 server (each test runs on both)."""
    if request.param == "local":
        return RunStore(StoreConfig(root=str(tmp_path / "store")), "run-1")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return RunStore(StoreConfig(root=f"s3://{bucket}/prefix", endpoint_url=endpoint,
                                access_key_id_env="AWS_ACCESS_KEY_ID", secret_access_key_env="AWS_SECRET_ACCESS_KEY"), "run-1")


@pytest.fixture
def cli_logging():
    """`baton` configures the root logger onto the captured stderr; undo it so later logs do not hit a closed stream."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    root.handlers[:] = before
