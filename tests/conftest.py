"""Shared fixtures: whole-program runs under mocks, computed once per test session (per xdist worker)."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from components.host_tools.backup import CHECKSUM_ALGORITHM
from rehearsal.emulated import (
    EmulatedAccount,
    emulated_account,
    import_ec2_with_lazy_offerings,
    kms_private_keys_on_first_use,
    rehearse,
    shared_service_models,
)
from rehearsal.engine import HA_OVERRIDES, ProgramRun, run_program, stack_config
from tests.backup_support import backup, make_data_dir, new_bucket, s3_of, scripts_env, seed
from tests.servers import PostgresServer, moto_s3_server, postgres_server

MOTO_REGION = "eu-west-1"


def pytest_configure(config: pytest.Config) -> None:
    """The rehearsal's own speed-ups (rehearsal/emulated.py, each checked in test_rehearsal_speedups.py to change no
    answer) for every test in this process: a botocore model parsed once, not once per client (a third of a moto
    test's time), KMS keys' RSA keys made when used, EC2 offerings read per region."""
    # The cyclic collector walks every object moto, botocore and Pulumi keep alive; run every 100,000 allocations
    # instead of 700 it costs a tenth of the suite's time less, for a few hundred MB more per worker.
    gc.set_threshold(100_000, 50, 50)
    speedups = contextlib.ExitStack()
    speedups.enter_context(shared_service_models())
    speedups.enter_context(kms_private_keys_on_first_use())
    import_ec2_with_lazy_offerings()
    config.add_cleanup(speedups.close)


@pytest.fixture
def moto_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh in-process AWS account (moto) for one test: fake credentials, no endpoint override. Yields the region."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": MOTO_REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield MOTO_REGION


@pytest.fixture(scope="module")
def ha_rehearsal() -> Iterator[tuple[ProgramRun, EmulatedAccount]]:
    """prod with topology ha rehearsed against a fresh emulated account, once per test module that asks."""
    with emulated_account(MOTO_REGION, "forge.example.com") as account:
        yield rehearse("prod", stack_config("prod", HA_OVERRIDES), account), account


@functools.cache
def _cached_run(stack: str) -> ProgramRun:
    return run_program(stack, stack_config(stack))


@pytest.fixture(scope="session")
def dev_run() -> ProgramRun:
    return _cached_run("dev")


@pytest.fixture(scope="session")
def prod_run() -> ProgramRun:
    return _cached_run("prod")


@pytest.fixture(scope="session", params=["dev", "prod"])
def aws_run(request: pytest.FixtureRequest) -> ProgramRun:
    return _cached_run(request.param)


@pytest.fixture(scope="session")
def local_run() -> ProgramRun:
    return _cached_run("local")


@pytest.fixture(scope="session")
def staging_run() -> ProgramRun:
    return _cached_run("staging")


@pytest.fixture(scope="session", params=["dev", "staging", "prod", "local"])
def any_run(request: pytest.FixtureRequest) -> ProgramRun:
    return _cached_run(request.param)


# ------------------------------------------------------------ backup and restore (tests/backup_support.py)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(s3_endpoint: str) -> dict[str, str]:
    return scripts_env(s3_endpoint)


@pytest.fixture
def bucket(aws_env: dict[str, str]) -> str:
    return new_bucket(aws_env)


@pytest.fixture
def seeded(postgres: PostgresServer) -> PostgresServer:
    return seed(postgres)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)


@pytest.fixture(scope="module")
def pristine(s3_endpoint: str, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One real backup (backup.py of the seeded database and a data directory), made once for the module: its bucket
    and id. Each case copies it into a bucket of its own and plants there."""
    env = scripts_env(s3_endpoint)
    source = new_bucket(env)
    return source, backup(env, source, seed(postgres), make_data_dir(tmp_path_factory.mktemp("pristine")))


@pytest.fixture
def backup_id(aws_env: dict[str, str], bucket: str, pristine: tuple[str, str]) -> str:
    """The pristine backup, every object of it (manifest, parts, latest pointer), in this test's bucket. Read and
    written again rather than copied: moto's copy_object keeps a multipart object's checksum that no longer fits."""
    source, backup_id = pristine
    s3 = s3_of(aws_env)
    for listed in s3.list_objects_v2(Bucket=source)["Contents"]:
        stored = s3.get_object(Bucket=source, Key=listed["Key"])
        s3.put_object(Bucket=bucket, Key=listed["Key"], Body=stored["Body"].read(), Metadata=stored["Metadata"],
                      ChecksumAlgorithm=CHECKSUM_ALGORITHM)
    return backup_id
