"""Shared fixtures: whole-program runs under mocks, computed once per test session (per xdist worker)."""

from __future__ import annotations

import functools

import pytest

from rehearsal.engine import ProgramRun, run_program, stack_config


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
