"""Mail: an Amazon SES identity for mail.<domain>, its DNS records, and an SMTP user that may send only as it.

- Easy DKIM: SES signs every message; three CNAMEs publish its keys (they also verify the identity).
- A custom MAIL FROM domain (bounce.mail.<domain>, MX to SES's feedback endpoint, SPF for SES), so SPF aligns.
- DMARC on mail.<domain>: receivers quarantine mail that fails both, and report to the operator.
- An IAM user whose only permission, through its group, is ses:SendRawEmail as this identity (SES's SMTP
  interface authenticates IAM users' keys only, so it cannot be a role); its SMTP password is SES's SigV4
  derivation of the access key (`ses_smtp_password_v4`), a secret Gitea and Alertmanager read from files.
A new SES account is in the sandbox: it sends only to verified addresses until production access is granted
(README, Mail).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

RECORD_TTL: Final = 300
DKIM_RECORDS: Final = 3  # SES Easy DKIM always publishes three keys
MAIL_FROM_LABEL: Final = "bounce"
SPF: Final = "v=spf1 include:amazonses.com ~all"


@dataclass(frozen=True)
class MailArgs:
    stack: str
    region: str
    domain: str  # the identity: mail.<stack domain>
    zone_id: pulumi.Input[str]
    report_to: str  # DMARC aggregate reports


def dmarc_record(report_to: str) -> str:
    return f"v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:{report_to}"


def mail_from_mx(region: str) -> str:
    return f"10 feedback-smtp.{region}.amazonses.com"


def smtp_user_policy(identity_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "SendAsTheStacksIdentityOnly", "Effect": "Allow", "Action": "ses:SendRawEmail", "Resource": identity_arn},
    ]})


def _nth(index: int) -> Callable[[Sequence[str]], str]:
    return lambda tokens: tokens[index]


class Mail(pulumi.ComponentResource):
    smtp_username: pulumi.Output[str]
    smtp_password: pulumi.Output[str]

    def __init__(self, name: str, args: MailArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Mail", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def record(label: str, record_name: pulumi.Input[str], record_type: str, value: pulumi.Input[str]) -> aws.route53.Record:
            # The forge's own names under mail.<domain>: taken over by a stack rebuilt elsewhere (see dns.py).
            return aws.route53.Record(f"{name}-{label}", zone_id=args.zone_id, name=record_name, type=record_type, ttl=RECORD_TTL,
                                      records=[value], allow_overwrite=True, opts=child)

        self.identity = aws.ses.DomainIdentity(f"{name}-identity", domain=args.domain, opts=child)
        record("verification", f"_amazonses.{args.domain}", "TXT", self.identity.verification_token)
        dkim = aws.ses.DomainDkim(f"{name}-dkim", domain=self.identity.domain, opts=child)
        for index in range(DKIM_RECORDS):
            token = dkim.dkim_tokens.apply(_nth(index))
            record(f"dkim-{index}", token.apply(lambda t: f"{t}._domainkey.{args.domain}"), "CNAME",
                   token.apply(lambda t: f"{t}.dkim.amazonses.com"))
        mail_from = f"{MAIL_FROM_LABEL}.{args.domain}"
        aws.ses.MailFrom(f"{name}-mail-from", domain=self.identity.domain, mail_from_domain=mail_from,
                         behavior_on_mx_failure="UseDefaultValue", opts=child)
        record("mail-from-mx", mail_from, "MX", mail_from_mx(args.region))
        record("mail-from-spf", mail_from, "TXT", SPF)
        record("dmarc", f"_dmarc.{args.domain}", "TXT", dmarc_record(args.report_to))

        # The permission belongs to a group, never to the user itself (CKV_AWS_40): the user only holds the key.
        senders = aws.iam.Group(f"{name}-smtp-senders", name=f"forgestack-{args.stack}-smtp-senders", opts=child)
        aws.iam.GroupPolicy(f"{name}-smtp-policy", group=senders.name, policy=self.identity.arn.apply(smtp_user_policy), opts=child)
        user = aws.iam.User(f"{name}-smtp-user", name=f"forgestack-{args.stack}-smtp", opts=child)
        aws.iam.UserGroupMembership(f"{name}-smtp-membership", user=user.name, groups=[senders.name], opts=child)
        key = aws.iam.AccessKey(f"{name}-smtp-key", user=user.name, opts=child)
        self.smtp_username = key.id
        self.smtp_password = pulumi.Output.secret(key.ses_smtp_password_v4)
        self.register_outputs({"identity": self.identity.arn, "smtpUsername": key.id})
