"""Shared fixtures: whole-program runs under mocks, computed once per test session (per xdist worker)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from moto import mock_aws

from rehearsal.engine import ProgramRun, run_program, stack_config

MOTO_REGION = "eu-west-1"


@pytest.fixture
def moto_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh in-process AWS account (moto) for one test: fake credentials, no endpoint override. Yields the region."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": MOTO_REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield MOTO_REGION


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


@pytest.fixture(scope="session", params=["dev", "prod", "local"])
def any_run(request: pytest.FixtureRequest) -> ProgramRun:
    return _cached_run(request.param)
