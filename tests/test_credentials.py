"""Credentials: generated once, kept secret, stored as one JSON document in a KMS-encrypted secret."""

from __future__ import annotations

import json

from components.credentials import CREDENTIAL_KEYS
from components.services import mail
from rehearsal.engine import ProgramRun


def test_one_generated_value_per_credential(dev_run: ProgramRun) -> None:
    passwords = dev_run.of_type("random:index/randomPassword:RandomPassword")
    assert sorted(p.name.removeprefix("credentials-") for p in passwords) == sorted(CREDENTIAL_KEYS)
    for password in passwords:
        assert password.inputs["length"] >= 24
        assert password.inputs["special"] is False  # safe in URLs and ini files


def test_secret_is_encrypted_with_a_rotating_customer_key(dev_run: ProgramRun) -> None:
    key = dev_run.one("aws:kms/key:Key", "credentials-key")
    assert key.inputs["enableKeyRotation"] is True
    secret = dev_run.one("aws:secretsmanager/secret:Secret")
    assert secret.inputs["kmsKeyId"] == key.outputs["arn"]


def test_secret_version_holds_every_credential_as_json(dev_run: ProgramRun) -> None:
    version = dev_run.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert version.inputs["secretId"] == dev_run.one("aws:secretsmanager/secret:Secret").id
    document = json.loads(version.inputs["secretString"])
    assert sorted(document) == sorted((*CREDENTIAL_KEYS, mail.SMTP_USERNAME, mail.SMTP_PASSWORD))  # the SES SMTP user too


def test_secret_string_reaches_the_engine_as_a_secret(dev_run: ProgramRun) -> None:
    from rehearsal.engine import has_secret  # the raw (wrapped) inputs are what the engine would store

    version = dev_run.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert version.raw_inputs is not None and has_secret(version.raw_inputs["secretString"])


def test_prod_protects_key_and_secret(prod_run: ProgramRun, dev_run: ProgramRun) -> None:
    assert prod_run.one("aws:kms/key:Key", "credentials-key").protect
    assert prod_run.one("aws:secretsmanager/secret:Secret").protect
    assert not dev_run.one("aws:secretsmanager/secret:Secret").protect


def test_no_output_carries_a_credential(aws_run: ProgramRun) -> None:
    version = aws_run.one("aws:secretsmanager/secretVersion:SecretVersion")
    values = json.loads(version.inputs["secretString"]).values()
    exported = json.dumps(aws_run.outputs)
    assert not [value for value in values if value in exported]
    assert "credentialsSecretArn" in aws_run.outputs
