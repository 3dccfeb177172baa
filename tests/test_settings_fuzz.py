"""Property-based tests over the settings: every invalid value of every key is refused with a ConfigError
that names the key, and every valid combination loads. Config values arrive as strings, as the CLI passes them."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import (
    _DNS_NAME,
    _INSTANCE_TYPE,
    BACKUP_INTERVALS_HOURS,
    LOG_RETENTION_DAYS,
    ConfigError,
    config_keys,
    fargate_size_allowed,
    full_key,
    parse,
)
from rehearsal.engine import stack_config

INVALID_EXAMPLES = 1500
VALID_EXAMPLES = 300
CONTROL_CHARACTER_CONFIGS = 100  # each checked with a character in every one of its keys
BASE = stack_config("dev")
NOT_BOOLEAN = st.text(max_size=8).filter(lambda s: s.strip().lower() not in ("true", "false"))
# Characters no config value may hold (control, format, line and paragraph separators), and text without them.
FORBIDDEN = st.characters(whitelist_categories=("Cc", "Cf", "Zl", "Zp"))
PLAIN_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs")), max_size=40)


def with_forbidden_character(text: st.SearchStrategy[str] = PLAIN_TEXT) -> st.SearchStrategy[str]:
    """Text with a forbidden character somewhere (often at the end, like a pasted line break)."""
    return st.tuples(text, FORBIDDEN, text).map(lambda t: t[0] + t[1] + t[2])


INTERNET_SPLITS = st.integers(1, 4).map(
    lambda bits: json.dumps([str(n) for n in ipaddress.ip_network("0.0.0.0/0").subnets(prefixlen_diff=bits)]))


def out_of(low: int, high: int) -> st.SearchStrategy[str]:
    """Whole numbers outside [low, high], and things that are not whole numbers at all."""
    return st.one_of(
        st.integers(max_value=low - 1).map(str), st.integers(min_value=high + 1).map(str),
        st.sampled_from(["1.5", "ten", "", "true", "1e3", "0x10", "-"]),
    )


def not_matching(pattern: str) -> st.SearchStrategy[str]:
    return st.text(max_size=30).filter(lambda s: not re.fullmatch(pattern, s))


def ed25519_public_key(key: bytes) -> str:
    """An OpenSSH ed25519 public key line around `key` (valid when key is 32 bytes)."""
    name = b"ssh-ed25519"
    blob = len(name).to_bytes(4, "big") + name + len(key).to_bytes(4, "big") + key
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} op@laptop"


INVALID: dict[str, st.SearchStrategy[str]] = {
    "platform": st.text(max_size=10).filter(lambda s: s not in ("aws", "local")),
    "region": not_matching(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d").filter(bool),
    "domain": st.one_of(st.sampled_from(["Forge.Example.com", "forge", "-x.example.com", "x..example.com", "forge.example.c-"]),
                        st.text(max_size=30).filter(lambda s: not _DNS_NAME.match(s))),
    "hostedZone": st.sampled_from(["other.example.org", "example.net", "EXAMPLE.COM", "com-"]),
    "instanceType": st.one_of(st.sampled_from(["t3.micro", "t3.nano", "t4g.micro", "m7g", "large", "t3.Large", "t3-medium"]),
                              st.text(max_size=20).filter(lambda s: not _INSTANCE_TYPE.match(s))),
    "vpcCidr": st.one_of(st.sampled_from(["10.0.0.0/8", "8.8.8.0/24", "10.20.0.1/16", "192.168.0.0/25", "10.20.0.0", "x"]),
                         st.ip_addresses(v=4).filter(lambda a: not a.is_private).map(lambda a: f"{a}/24")),
    "adminCidrs": st.one_of(st.sampled_from(['["0.0.0.0/0"]', '["203.0.113.7/24"]', '"203.0.113.7/32"', "[1, 2]", "not json",
                                             '["203.0.113.7/32", "203.0.113.7/32"]', '["::/0"]', '{"a": 1}',
                                             '["0.0.0.0/1", "128.0.0.0/1"]', '["8.0.0.0/7"]', '["203.0.113.0/24\\n"]']),
                            INTERNET_SPLITS),
    "allowedCidrs": st.one_of(st.sampled_from(['["0.0.0.0/0"]', '["198.51.100.7/24"]', '"198.51.100.0/24"', "[1, 2]", "not json",
                                               '["198.51.100.0/24", "198.51.100.0/24"]', '["::/0"]', '["0.0.0.0/1", "128.0.0.0/1"]',
                                               json.dumps([f"198.51.{i}.0/24" for i in range(16)])]),
                              INTERNET_SPLITS),
    "expiresAt": st.sampled_from(["tomorrow", "2026-12-02", "2026-12-02T18:00:00", "2026-12-02 18:00:00Z", "2026-02-30T18:00:00Z",
                                  "2026-12-02T18:00:00+01:00", "2026-12-02T25:00:00Z"]),
    "rootVolumeGb": out_of(10, 500),
    "dataVolumeGb": out_of(10, 16384),
    "gitSshPort": st.one_of(st.integers().filter(lambda n: n not in (0, 22, 2222)).map(str), st.sampled_from(["ssh", "22.5", "-22"])),
    # dev is unprotected: compliance is refused there too
    "backupLockMode": st.one_of(st.just("compliance"), st.text(max_size=12).filter(lambda s: s not in ("governance", "compliance"))),
    "backupReplicaRegion": st.one_of(st.just("eu-west-1"), not_matching(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d").filter(bool)),
    "volumeKey": st.text(max_size=20).filter(lambda s: s not in ("customer-managed", "aws-managed")),
    "dataVolumeSnapshotId": st.one_of(st.sampled_from(["snap-123", "vol-0123456789abcdef0", "snap-0123456789ABCDEF0", "snap-"]),
                                      not_matching(r"snap-([0-9a-f]{8}|[0-9a-f]{17})").filter(bool)),
    # dev's region is eu-west-1: a zone of another region, a region, or no zone letter.
    "availabilityZone": st.one_of(st.sampled_from(["eu-west-1", "us-east-1a", "eu-west-2b", "eu-west-1-a", "EU-WEST-1A"]),
                                  not_matching(r"eu-west-1[a-z]").filter(bool)),
    "backupRetentionDays": out_of(1, 3650),
    "topology": st.text(max_size=10).filter(lambda s: s not in ("single", "ha")),
    "haZones": out_of(2, 3),
    "haNatGateways": st.text(max_size=10).filter(lambda s: s not in ("one", "per-zone")),
    "haGiteaTasks": out_of(2, 20),
    "haTaskSize": st.one_of(st.sampled_from(["256/512", "1024/1024", "1024", "4096/40960"]),
                            st.text(max_size=12).filter(lambda s: not fargate_size_allowed(s))),
    "haDatabaseClass": not_matching(r"db\.[a-z]+\d+[a-z]*\.(micro|small|medium|large|\d*xlarge)").filter(bool),
    "haDatabaseStorageGb": out_of(20, 16384),
    "haOpsVolumeGb": out_of(30, 16384),
    "workspaces": NOT_BOOLEAN,
    "workspacesInstanceType": st.sampled_from(["t3", "xlarge", "db.t3.xlarge", "T3.xlarge", "t3.xlarge "]),
    "workspacesSessions": out_of(1, 50),
    "workspacesVolumeGb": out_of(50, 16384),
    "workspacesRelease": st.one_of(st.sampled_from(["latest", "1.18", "1.18.0.09F70A", "1.18.0-09f70a", "v1.18.0"]),
                                   not_matching(r"\d+\.\d+\.\d+(\.[0-9a-f]{6})?").filter(bool)),
    "workspacesReleaseSha256": st.one_of(st.sampled_from(["abc", "AB" * 32, "g" * 64, "a" * 63]),
                                         st.from_regex(r"[0-9a-f]{1,63}|[0-9a-f]{65,70}", fullmatch=True)),
    "workspacesApiKey": st.one_of(st.sampled_from(["short", "key with space", "k-e-y-1234567", "ключ12345678"]),
                                  st.text(min_size=129, max_size=140, alphabet="ab")),
    "budgetMonthlyUsd": out_of(0, 1_000_000),
    "rebootWindow": st.sampled_from(["sunday 03:30", "Sun 03:30", "*-*-* 24:00", "Sun,, *-*-* 03:30", "daily", "Sun *-*-* 3:30"]),
    "haRunnerInstanceType": st.sampled_from(["t4g.small", "t3.micro", "c7g", "cache.t4g.medium"]),
    "haCacheNodeType": not_matching(r"cache\.[a-z]+\d+[a-z]*\.(micro|small|medium|large|\d*xlarge)").filter(bool),
    "haOpsInstanceType": st.one_of(st.sampled_from(["t4g.micro", "t3.nano", "m7g", "db.t4g.small"]),
                                   st.text(max_size=12).filter(lambda s: not re.fullmatch(r"[a-z]+\d+[a-z-]*\.[a-z0-9]+", s))),
    "backupArchiveAfterDays": st.one_of(st.integers(min_value=1, max_value=29).map(str), st.integers(min_value=7).map(str),
                                        st.sampled_from(["-1", "x", "1.5"])),  # dev keeps backups 7 days
    "backupIntervalHours": st.integers().filter(lambda n: n not in BACKUP_INTERVALS_HOURS).map(str),
    "snapshotRetentionDays": out_of(1, 365),
    "flowLogRetentionDays": st.integers().filter(lambda n: n not in LOG_RETENTION_DAYS).map(str),
    "metricsRetentionDays": out_of(1, 730),
    "logRetentionDays": out_of(1, 730),
    "acmeEmail": not_matching(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"),
    "acmeStaging": NOT_BOOLEAN,
    "giteaVersion": st.one_of(st.sampled_from(["latest", "1.26.9", "1.27", "v1.27.3", "1.27.3-rootless", "1.0.0"]),
                              st.tuples(st.integers(0, 1), st.integers(0, 26), st.integers(0, 99)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}")),
    "postgresVersion": st.one_of(st.sampled_from(["latest", "18", "17.6", "18.4.1", "16.10"]),
                                 st.integers(min_value=1, max_value=99).filter(lambda n: n != 18).map(lambda n: f"{n}.1")),
    "protect": NOT_BOOLEAN,
    "ci": st.text(max_size=10).filter(lambda s: s not in ("actions", "drone", "none")),
    "monitoring": NOT_BOOLEAN,
    "logging": NOT_BOOLEAN,
    "giteaAdminUser": st.one_of(st.sampled_from(["admin", "a", "Forge", "-forge", "forge admin", "x" * 40, "api", "user"]),
                                not_matching(r"[a-z0-9][a-z0-9._-]{1,38}")),
    "ssoOrganization": st.one_of(st.sampled_from(["Forge", "-forge", "forge stack", "x" * 40, "forge/stack"]),
                                 not_matching(r"[a-z0-9][a-z0-9._-]{0,38}").filter(bool)),
    "giteaRegistration": st.text(max_size=10).filter(lambda s: s not in ("closed", "approval", "open")),
    "sshPublicKey": st.one_of(not_matching(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( .*)?").filter(bool),
                              st.binary(max_size=40).filter(lambda b: len(b) != 32).map(ed25519_public_key)),
    "alertEmailTo": not_matching(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}").filter(bool),
    "alertSmtpSmarthost": st.sampled_from(["smtp.example.com", ":587", "smtp example.com:587", "SMTP.EXAMPLE.COM:587"]),
    "alertSmtpFrom": not_matching(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}").filter(bool),
    "alertWebhookUrl": st.sampled_from(["ftp://example.com/x", "example.com/hook", "https://", "http:// spaced", "javascript:x"]),
    "alertSlackWebhookUrl": st.sampled_from(["http://hooks.slack.com/services/T/B/x", "https://hooks.slack.com.evil.example/services/x",
                                             "https://hooks.slack.com/", "https://chat.example.com/hooks/x"]),
    "alertTeamsWebhookUrl": st.sampled_from(["http://x.logic.azure.com/workflows/a", "https://", "https://-x.example.com/a",
                                             "https://x.example.com", "javascript:x"]),
    "alarmHttpsEndpoints": st.sampled_from(['["http://events.example.com/sns"]', '["https://"]', '"https://x.example.com/a"',
                                            '["https://x.example.com/a", "https://x.example.com/a"]']),
    "alertPagerdutyRoutingKey": st.one_of(st.from_regex(r"[A-Za-z0-9]{1,31}|[A-Za-z0-9]{33,40}", fullmatch=True),
                                          st.sampled_from(["0123456789abcdef0123456789abcde!", "x" * 31 + " "])),
    "portainer": NOT_BOOLEAN,
    "adminUiAccess": st.one_of(st.sampled_from(["Public", "none", "admin_cidrs", "admin-cidrs"]),
                               st.text(max_size=12).filter(lambda s: s not in ("public", "admin-cidrs", "private"))),
    "proxyMaxBodySize": st.one_of(st.sampled_from(["512M", "0m", "101g", "512", "1k", "1.5g", "-1m", "512 m"]),
                                  st.integers(101, 10**5).map(lambda n: f"{n}g")),
    "relayTargets": st.sampled_from(['["ftp://chat.example.com"]', '"https://chat.example.com/x"', "[1]", "nope", '["https://"]']),
    "relayEvents": st.one_of(st.sampled_from(['["push", "push"]', '["deploy"]', '"push"', "[]x"]),
                             st.lists(st.text(min_size=1, max_size=8).filter(lambda e: e not in ("push", "release", "ci_failure")),
                                      min_size=1, max_size=3).map(json.dumps)),
}
# SMTP user names, passwords and OAuth2 client ids/secrets may be any text without control characters.
INVALID.update({key: with_forbidden_character() for key in
                ("alertSmtpUsername", "alertSmtpPassword", "droneGiteaClientId", "droneGiteaClientSecret",
                 "workspacesApiKeySecret")})


def test_every_key_has_an_invalid_strategy() -> None:
    assert set(INVALID) | {"region"} == set(config_keys()) | {"region"}


@st.composite
def invalid_case(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(st.sampled_from(sorted(INVALID)))
    return key, draw(INVALID[key])


def test_every_invalid_value_is_refused_naming_its_key() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=INVALID_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(case=invalid_case())
    def check(case: tuple[str, str]) -> None:
        key, value = case
        raw = {**BASE, full_key(key): value}
        try:
            parse(raw, "dev")
        except ConfigError as error:
            message = str(error)
            assert full_key(key) in message, f"{key}={value!r}: {message}"
            assert "\n" not in message
            seen[key] += 1
            return
        raise AssertionError(f"{full_key(key)}={value!r} was accepted")

    check()
    print(f"\nhypothesis: {sum(seen.values())} invalid values over {len(seen)} keys refused with the key named")
    assert set(seen) == set(INVALID), f"keys never exercised: {set(INVALID) - set(seen)}"


LOWER, DIGITS, HEX = "abcdefghijklmnopqrstuvwxyz", "0123456789", "0123456789abcdef"


def word(first: str, rest: str, min_rest: int, max_rest: int, last: str = "") -> st.SearchStrategy[str]:
    """A string of one character from `first`, min..max from `rest` and (if given) one from `last`: what the regexes
    [first][rest]{min,max}[last] match, drawn as plain text (hypothesis's from_regex took half the fuzz tests' time)."""
    parts = [st.sampled_from(first), st.text(rest, min_size=min_rest, max_size=max_rest)]
    return st.tuples(*parts, *([st.sampled_from(last)] if last else [])).map("".join)


def fixed(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size)


LABEL = word(LOWER, LOWER + DIGITS + "-", 0, 8, last=LOWER + DIGITS)
EMAIL = st.tuples(word(LOWER, LOWER + DIGITS + "._", 0, 10), word(LOWER, LOWER + DIGITS + "-", 0, 8),
                  st.sampled_from(["com", "org", "net", "io"])).map(lambda parts: f"{parts[0]}@{parts[1]}.{parts[2]}")
PUBLIC_NETWORK = st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(24, 32)).map(
    lambda t: str(ipaddress.ip_network(f"{t[0]}.{t[1]}.{t[2]}.0/{t[3]}", strict=False))
).filter(lambda n: ipaddress.ip_network(n).is_global)


@st.composite
def valid_config(draw: st.DrawFn) -> dict[str, Any]:
    zone = ".".join(draw(st.lists(LABEL, min_size=1, max_size=2))) + "." + draw(st.sampled_from(["com", "org", "dev", "io"]))
    domain = draw(st.sampled_from([zone, f"{draw(LABEL)}.{zone}"]))
    retention = draw(st.integers(1, 3650))
    archive = draw(st.sampled_from([0, *([draw(st.integers(30, retention - 1))] if retention > 30 else [])]))
    octets = draw(st.tuples(st.integers(0, 255), st.integers(0, 255)))
    prefix = draw(st.integers(16, 24))
    vpc = str(ipaddress.ip_network(f"10.{octets[0]}.{octets[1]}.0/{prefix}", strict=False))
    email_alerts = draw(st.booleans())
    topology = draw(st.sampled_from(["single", "ha"]))
    ci = draw(st.sampled_from(["actions", "none", *(["drone"] if topology == "single" else [])]))  # ha runs no Drone server
    admin_networks = sorted(set(draw(st.lists(PUBLIC_NETWORK, max_size=3))))
    config: dict[str, Any] = {
        "aws:region": draw(st.sampled_from(["eu-west-1", "us-east-1", "ap-southeast-2", "eu-central-1", "us-gov-west-1"])),
        "platform": "aws", "domain": domain, "hostedZone": zone,
        "instanceType": draw(st.sampled_from(["t3.small", "t3.medium", "t3.xlarge", "m7g.large", "c7g.2xlarge", "r6i.large",
                                              "t4g.large", "m7i-flex.large"])),
        "vpcCidr": vpc, "adminCidrs": json.dumps(admin_networks),
        # The allow-list exists for topology single only (ha would need a WAF IP set).
        "allowedCidrs": json.dumps(sorted(set(draw(st.lists(PUBLIC_NETWORK, max_size=3)))) if topology == "single" else []),
        "rootVolumeGb": draw(st.integers(10, 500)), "dataVolumeGb": draw(st.integers(10, 16384)),
        "volumeKey": draw(st.sampled_from(["customer-managed", "aws-managed"])),
        "backupReplicaRegion": draw(st.sampled_from(["", "ca-central-1"])),
        "gitSshPort": draw(st.sampled_from(["0", "2222", *(["22"] if not admin_networks else [])])),
        "dataVolumeSnapshotId": draw(st.one_of(st.just(""), fixed(HEX, 17).map("snap-".__add__))),
        "availabilityZone": draw(st.sampled_from(["", "a", "b", "c"])),
        "topology": topology, "haZones": draw(st.integers(2, 3)),
        "haNatGateways": draw(st.sampled_from(["one", "per-zone"])), "haGiteaTasks": draw(st.integers(2, 20)),
        "haTaskSize": draw(st.sampled_from(["512/1024", "1024/2048", "2048/8192", "4096/30720"])),
        "haDatabaseClass": draw(st.sampled_from(["db.t4g.medium", "db.m7g.large", "db.r6i.2xlarge"])),
        "haDatabaseStorageGb": draw(st.integers(20, 16384)),
        "haCacheNodeType": draw(st.sampled_from(["cache.t4g.small", "cache.m7g.large"])),
        "haOpsInstanceType": draw(st.sampled_from(["t4g.small", "t3.medium", "m7g.large"])),
        "haOpsVolumeGb": draw(st.integers(30, 16384)),
        "budgetMonthlyUsd": draw(st.integers(1, 1_000_000)),  # the fuzz stack has no estimate: an amount is required
        "rebootWindow": draw(st.sampled_from(["", "Sun *-*-* 03:30", "Mon,Thu *-*-* 02:00:00", "*-*-* 23:59"])),
        "haRunnerInstanceType": draw(st.sampled_from(["t4g.medium", "m7g.large", "t3.xlarge"])),
        "backupRetentionDays": retention, "backupArchiveAfterDays": archive,
        "backupIntervalHours": draw(st.sampled_from(BACKUP_INTERVALS_HOURS)), "snapshotRetentionDays": draw(st.integers(1, 365)),
        "flowLogRetentionDays": draw(st.sampled_from(LOG_RETENTION_DAYS)),
        "metricsRetentionDays": draw(st.integers(1, 730)), "logRetentionDays": draw(st.integers(1, 730)),
        "acmeEmail": draw(EMAIL), "acmeStaging": draw(st.sampled_from(["true", "false", "True"])),
        "giteaVersion": f"1.{draw(st.integers(27, 40))}.{draw(st.integers(0, 20))}",
        "postgresVersion": f"18.{draw(st.integers(0, 30))}",
        "protect": draw(st.sampled_from(["true", "false"])), "ci": ci,
        "droneGiteaClientId": draw(fixed(HEX + "-", 36)) if ci == "drone" else "",
        "droneGiteaClientSecret": draw(PLAIN_TEXT.filter(bool)) if ci == "drone" else "",
        "portainer": draw(st.sampled_from(["true", "false"])),
        "adminUiAccess": draw(st.sampled_from(["public", "private", *(["admin-cidrs"] if admin_networks else [])])),
        "proxyMaxBodySize": draw(st.sampled_from(["1m", "512m", "2g", "100g", f"{draw(st.integers(1, 102400))}m"])),
        "relayTargets": json.dumps(draw(st.lists(st.sampled_from([f"https://chat.{zone}/hooks/a", "http://10.0.0.5/x"]), max_size=2))),
        "relayEvents": json.dumps(draw(st.lists(st.sampled_from(["push", "release", "ci_failure"]), unique=True))),
        "monitoring": draw(st.sampled_from(["true", "false"])), "logging": draw(st.sampled_from(["true", "false"])),
        "giteaAdminUser": draw(word(LOWER + DIGITS, LOWER + DIGITS + "._-", 1, 38).filter(
            lambda u: u not in ("admin", "api", "assets", "user", "explore"))),
        "giteaRegistration": draw(st.sampled_from(["closed", "approval", "open"])),
        "sshPublicKey": draw(st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(ed25519_public_key))),
        "alertEmailTo": draw(EMAIL) if email_alerts else "",
        "alertSmtpSmarthost": f"smtp.{zone}:587" if email_alerts else "",
        "alertSmtpFrom": f"alerts@{zone}" if email_alerts else "",
        "alertSmtpUsername": draw(PLAIN_TEXT), "alertSmtpPassword": draw(PLAIN_TEXT),
        "alertWebhookUrl": draw(st.sampled_from(["", f"https://chat.{zone}/hooks/abc", "http://relay:8080/alerts"])),
        "alertSlackWebhookUrl": draw(st.sampled_from(["", "https://hooks.slack.com/services/T000/B000/XXXX"])),
        "alertTeamsWebhookUrl": draw(st.sampled_from(["", f"https://x.{zone}/workflows/a?sig=b"])),
        "alarmHttpsEndpoints": json.dumps(draw(st.sampled_from([[], [f"https://events.{zone}/sns"]]))),
        "alertPagerdutyRoutingKey": draw(st.one_of(st.just(""), fixed(LOWER + LOWER.upper() + DIGITS, 32))),
    }
    config["backupLockMode"] = draw(st.sampled_from(["governance", *(["compliance"] if config["protect"] == "true" else [])]))
    if config["availabilityZone"]:
        config["availabilityZone"] = config["aws:region"] + config["availabilityZone"]
    return {key if ":" in key else full_key(key): str(value) for key, value in config.items()}


def test_every_valid_combination_loads() -> None:
    ran = Counter[str]()

    @settings(max_examples=VALID_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(config=valid_config())
    def check(config: dict[str, str]) -> None:
        loaded = parse(config, "fuzz")
        assert loaded.domain == config["forgestack:domain"]
        assert loaded.backup_interval_hours == int(config["forgestack:backupIntervalHours"])
        ran["valid"] += 1

    check()
    print(f"\nhypothesis: {ran['valid']} valid combinations loaded")
    assert ran["valid"] >= VALID_EXAMPLES // 2


JSON_LIST_KEYS = {"forgestack:adminCidrs", "forgestack:allowedCidrs", "forgestack:relayTargets", "forgestack:relayEvents"}


def test_a_control_character_in_any_value_is_refused_naming_its_key() -> None:
    """Every key of each valid configuration in turn, with a forbidden character put into its value (into an item, for
    JSON lists): drawing a whole configuration costs hypothesis a hundred draws, so each one is used for all its keys."""
    seen: Counter[str] = Counter()

    @settings(max_examples=CONTROL_CHARACTER_CONFIGS, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(config=valid_config(), data=st.data())
    def check(config: dict[str, str], data: st.DataObject) -> None:
        for key in sorted(config):
            character = data.draw(FORBIDDEN, label=f"character for {key}")
            if key in JSON_LIST_KEYS:
                items = json.loads(config[key]) or ["x"]
                index = data.draw(st.integers(0, len(items) - 1))
                items[index] = items[index] + character
                value = json.dumps(items)
            else:
                value = data.draw(st.sampled_from([config[key] + character, character + config[key], config[key][:1] + character]))
            try:
                parse({**config, key: value}, "fuzz")
            except ConfigError as error:
                message = str(error)
                assert key in message and "\n" not in message, message
                seen[key] += 1
                continue
            raise AssertionError(f"{key}={value!r} was accepted")

    check()
    print(f"\nhypothesis: {sum(seen.values())} values with a control character refused over {len(seen)} keys")
    assert len(seen) >= len(config_keys()) // 2
