"""scripts/credentials.py against Secrets Manager on moto."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest

from rehearsal.engine import REPO
from scripts import credentials as credentials_script


@pytest.fixture
def secret_arn(moto_account: str) -> str:
    client = boto3.client("secretsmanager", region_name=moto_account)
    return str(client.create_secret(Name="forge", SecretString=json.dumps({"giteaAdminPassword": "s3cret", "metricsToken": "t"}))["ARN"])


def test_prints_one_value(secret_arn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert credentials_script.main(["--secret-arn", secret_arn, "--key", "giteaAdminPassword"]) == 0
    assert capsys.readouterr().out == "s3cret\n"


def test_lists_names_without_values(secret_arn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert credentials_script.main(["--secret-arn", secret_arn, "--list"]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["giteaAdminPassword", "metricsToken"] and "s3cret" not in out


def test_unknown_key_is_one_clear_line(secret_arn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert credentials_script.main(["--secret-arn", secret_arn, "--key", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no key 'nope'" in err and "giteaAdminPassword" in err


def test_missing_secret_is_one_clear_line(secret_arn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert credentials_script.main(["--secret-arn", secret_arn.replace("forge", "gone"), "--key", "x"]) == 1
    assert capsys.readouterr().err.startswith("credentials: cannot read")


def test_help_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, "scripts/credentials.py", "--help"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--secret-arn" in result.stdout
