"""Dns: an A and a CAA record for every service hostname.

The CAA records sit on the hostnames themselves, never on `domain`: when domain is the hosted zone's apex, the
operator's own apex CAA (mail, other services) would collide with ours, and ours would decide for all of them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.constants import ACME_CA_DOMAIN

RECORD_TTL = 300


def public_zone_id(hosted_zone: str, opts: pulumi.InvokeOutputOptions | None = None) -> pulumi.Output[str]:
    """The operator's public hosted zone, looked up once; every record of the stack goes there."""
    return aws.route53.get_zone_output(name=hosted_zone, private_zone=False, opts=opts).zone_id


@dataclass(frozen=True)
class DnsArgs:
    zone_id: pulumi.Input[str]
    domain: str
    hostnames: tuple[str, ...]  # fully qualified, all under `domain`
    public_ip: pulumi.Input[str]
    acme_email: str


def caa_records(acme_email: str, ca_domain: str = ACME_CA_DOMAIN) -> list[str]:
    """Only the stack's CA (Let's Encrypt; Amazon for the ha load balancer) may issue for the name; no wildcard
    certificates; report to the operator."""
    return [f'0 issue "{ca_domain}"', '0 issuewild ";"', f'0 iodef "mailto:{acme_email}"']


class Dns(pulumi.ComponentResource):
    records: dict[str, aws.route53.Record]

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Dns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        outside = [hostname for hostname in args.hostnames if not hostname.endswith("." + args.domain)]
        if outside:
            raise ValueError(f"hostnames outside {args.domain}: {outside}")
        self.zone_id = pulumi.Output.from_input(args.zone_id)

        self.records = {}
        self.caa: dict[str, aws.route53.Record] = {}
        for hostname in args.hostnames:
            label = hostname.removesuffix("." + args.domain).replace(".", "-")
            # allow_overwrite: these names are the forge's by construction; a stack rebuilt elsewhere (a lost region,
            # scripts/recover.py) takes them over instead of failing on the records its lost predecessor left.
            self.records[hostname] = aws.route53.Record(
                f"{name}-{label}-a", zone_id=self.zone_id, name=hostname, type="A", ttl=RECORD_TTL,
                records=[args.public_ip], allow_overwrite=True, opts=child,
            )
            self.caa[hostname] = aws.route53.Record(
                f"{name}-{label}-caa", zone_id=self.zone_id, name=hostname, type="CAA", ttl=RECORD_TTL,
                records=caa_records(args.acme_email), allow_overwrite=True, opts=child,
            )

        self.register_outputs({"zoneId": self.zone_id, "hostnames": list(args.hostnames)})
