"""Outgoing mail: the SES identity with its DKIM, MAIL FROM and DMARC records and a send-only SMTP user (emulated
account), the credentials reaching Gitea and Alertmanager as files, and Alertmanager's mail path run for real:
Debian's Alertmanager with the rendered local configuration delivering to an SMTP server standing in for Mailpit."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from components.mail import SPF, dmarc_record, mail_from_mx
from components.services import mail, monitoring
from components.settings import parse
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse, ses_smtp_password_v4, stack_region
from rehearsal.engine import ProgramRun, Registered, stack_config
from tests.servers import free_port

Rehearsal = tuple[ProgramRun, EmulatedAccount]
MAIL_DOMAIN = "mail.forge.example.com"  # prod's domain is forge.example.com


@pytest.fixture(scope="module")
def rehearsed() -> Iterator[Rehearsal]:
    config = stack_config("prod")
    with emulated_account(stack_region(config), config["forgestack:hostedZone"]) as account:
        yield rehearse("prod", config, account), account


def zone_records(account: EmulatedAccount) -> dict[tuple[str, str], list[str]]:
    route53 = account.client("route53")
    zone_id = route53.list_hosted_zones()["HostedZones"][0]["Id"]
    return {(r["Name"].rstrip("."), r["Type"]): [v["Value"] for v in r.get("ResourceRecords", [])]
            for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]}


def test_the_identity_signs_with_dkim_published_in_the_zone(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    ses = account.client("ses")
    assert ses.list_identities(IdentityType="Domain")["Identities"] == [MAIL_DOMAIN]
    tokens = ses.get_identity_dkim_attributes(Identities=[MAIL_DOMAIN])["DkimAttributes"][MAIL_DOMAIN]["DkimTokens"]
    records = zone_records(account)
    assert len(tokens) == 3
    for token in tokens:
        assert records[(f"{token}._domainkey.{MAIL_DOMAIN}", "CNAME")] == [f"{token}.dkim.amazonses.com"]
    # The token SES answered to VerifyDomainIdentity (moto makes up a new one for every later query).
    assert records[(f"_amazonses.{MAIL_DOMAIN}", "TXT")] == [run.one("aws:ses/domainIdentity:DomainIdentity").outputs["verificationToken"]]


def test_mail_from_aligns_spf_and_dmarc_reports_to_the_operator(rehearsed: Rehearsal) -> None:
    _, account = rehearsed
    attributes = account.client("ses").get_identity_mail_from_domain_attributes(Identities=[MAIL_DOMAIN])
    assert attributes["MailFromDomainAttributes"][MAIL_DOMAIN]["MailFromDomain"] == f"bounce.{MAIL_DOMAIN}"
    records = zone_records(account)
    assert records[(f"bounce.{MAIL_DOMAIN}", "MX")] == [mail_from_mx("eu-west-1")] == ["10 feedback-smtp.eu-west-1.amazonses.com"]
    assert records[(f"bounce.{MAIL_DOMAIN}", "TXT")] == [SPF]
    assert records[(f"_dmarc.{MAIL_DOMAIN}", "TXT")] == [dmarc_record("ops@forge.example.com")]
    ours_at_the_apex = [(name, kind) for name, kind in records
                        if name in ("forge.example.com", "_dmarc.forge.example.com") and kind not in ("SOA", "NS")]
    assert ours_at_the_apex == []  # the operator's own apex records (their mail's SPF, DMARC) are never met


def test_the_smtp_user_may_only_send_as_the_identity(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    iam = account.client("iam")
    (user,) = [u for u in iam.list_users()["Users"] if u["UserName"] == "forgestack-prod-smtp"]
    # The user holds the key and nothing else; its one permission comes through its one group (CKV_AWS_40).
    assert iam.list_user_policies(UserName=user["UserName"])["PolicyNames"] == []
    assert not iam.list_attached_user_policies(UserName=user["UserName"])["AttachedPolicies"]
    (group,) = iam.list_groups_for_user(UserName=user["UserName"])["Groups"]
    assert group["GroupName"] == "forgestack-prod-smtp-senders"
    (policy_name,) = iam.list_group_policies(GroupName=group["GroupName"])["PolicyNames"]
    document = iam.get_group_policy(GroupName=group["GroupName"], PolicyName=policy_name)["PolicyDocument"]
    identity_arn = run.one("aws:ses/domainIdentity:DomainIdentity").outputs["arn"]
    assert [(s["Effect"], s["Action"], s["Resource"]) for s in document["Statement"]] == [("Allow", "ses:SendRawEmail", identity_arn)]
    assert not iam.list_attached_group_policies(GroupName=group["GroupName"])["AttachedPolicies"]


def test_the_smtp_password_is_ses_derivation_of_the_key_and_lives_in_the_secret(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    key = run.one("aws:iam/accessKey:AccessKey")
    stored = json.loads(account.client("secretsmanager").get_secret_value(SecretId=run.outputs["credentialsSecretArn"])["SecretString"])
    assert stored[mail.SMTP_USERNAME] == key.id
    assert stored[mail.SMTP_PASSWORD] == ses_smtp_password_v4(key.outputs["secret"], "eu-west-1")
    assert stored[mail.SMTP_PASSWORD] not in json.dumps(run.outputs)


def containers(run: ProgramRun) -> dict[str, Registered]:
    return {c.inputs["name"].removeprefix("forgestack-"): c for c in run.of_type("docker:index/container:Container")}


def uploads(container: Registered) -> dict[str, dict[str, Any]]:
    return {u["file"]: u for u in container.inputs["uploads"]}


def test_gitea_and_alertmanager_get_the_smtp_user_as_files_and_the_name_filled_in(prod_run: ProgramRun) -> None:
    key = prod_run.one("aws:iam/accessKey:AccessKey")
    password = prod_run.one("aws:iam/accessKey:AccessKey").outputs["sesSmtpPasswordV4"]
    gitea = uploads(containers(prod_run)["gitea"])
    assert (gitea[mail.SMTP_USERNAME_FILE]["content"], gitea[mail.SMTP_PASSWORD_FILE]["content"]) == (key.id, password)
    assert gitea[mail.SMTP_PASSWORD_FILE]["permissions"] == "0400"
    alertmanager = uploads(containers(prod_run)["alertmanager"])
    config = yaml.safe_load(alertmanager[monitoring.ALERTMANAGER_CONFIG]["content"])
    assert config["global"]["smtp_auth_username"] == key.id  # the placeholder filled by the deploy
    assert alertmanager[mail.SMTP_PASSWORD_FILE]["content"] == password
    assert password not in alertmanager[monitoring.ALERTMANAGER_CONFIG]["content"]


def test_the_local_stack_catches_mail_in_mailpit_behind_the_proxy(local_run: ProgramRun) -> None:
    mailpit = containers(local_run)["mailpit"]
    assert mailpit.inputs["image"].startswith("sha256:") and not mailpit.inputs.get("ports")  # reached through Nginx only
    assert "mail.forge.localhost" in local_run.outputs["hostnames"]
    assert not local_run.of_type("aws:ses/domainIdentity:DomainIdentity")


# ------------------------------------------------------------------ Alertmanager's mail path, run for real

class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.mark.validator
@pytest.mark.skipif(ALERTMANAGER is None, reason="Debian package prometheus-alertmanager not installed (.ci/run installs it)")
def test_an_alert_reaches_the_mailbox_through_the_rendered_local_config(tmp_path: Path) -> None:
    """The local stack's Alertmanager configuration, unchanged but for Mailpit's address (an SMTP server on loopback
    here), run by Debian's Alertmanager: a critical alert posted to it arrives as mail from alerts@mail.<domain>."""
    settings = parse(stack_config("local", {"forgestack:alertEmailTo": "ops@example.com"}), stack="local")
    inbox = Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    rendered = monitoring.alertmanager_config(settings).replace(mail.relay(settings).smarthost, f"127.0.0.1:{smtp_port}")
    assert f"127.0.0.1:{smtp_port}" in rendered
    document = yaml.safe_load(rendered)
    document["route"]["group_wait"] = "1s"  # the stack waits 30 s to group; the test need not
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(document))
    web_port = free_port()
    process = subprocess.Popen([str(ALERTMANAGER), f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path}",
                                f"--web.listen-address=127.0.0.1:{web_port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        alert = [{"labels": {"alertname": "PostgresDown", "severity": "critical", "instance": "test"},
                  "annotations": {"summary": "PostgreSQL does not accept connections"},
                  "startsAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}]
        deadline = time.monotonic() + 20
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{web_port}/api/v2/alerts", data=json.dumps(alert).encode(),
                                                 headers={"Content-Type": "application/json"}, method="POST")
                urllib.request.urlopen(request, timeout=2).close()  # noqa: S310 (a fixed http URL on loopback)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "alertmanager did not start"
                time.sleep(0.2)
        while not inbox.messages and time.monotonic() < deadline + 20:
            time.sleep(0.2)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
        controller.stop()
    assert inbox.messages, stderr.decode()[-2000:]
    sender, recipients, content = inbox.messages[0]
    assert (sender, recipients) == ("alerts@mail.forge.localhost", ["ops@example.com"])
    assert "PostgresDown" in str(message_from_bytes(content)["Subject"])


