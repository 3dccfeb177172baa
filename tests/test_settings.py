"""Settings: every stack file loads, every kind of bad value is rejected with key, value and expectation."""

from __future__ import annotations

import re
import typing

import pulumi
import pytest
import yaml

from components import settings as stack_settings
from components.settings import ConfigError, config_keys, instance_architecture, instance_memory_gib, parse
from rehearsal.engine import REPO, ForgeMocks, run_program, stack_config

VALID = {
    "aws:region": "eu-west-1",
    "forgestack:domain": "forge.example.com",
    "forgestack:hostedZone": "example.com",
    "forgestack:acmeEmail": "ops@example.com",
    "forgestack:sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfxFDxQ+I7FlTZatsccAF0j1Mvobp9pEetqzIu0tQgE op@laptop",
}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_load(stack: str) -> None:
    settings = parse(stack_config(stack), stack=stack)
    assert settings.stack == stack
    assert settings.is_aws


def test_defaults_apply_when_keys_are_absent() -> None:
    settings = parse(VALID)
    assert settings.instance_type == "t3.large"  # the whole stack with a CI job needs 8 GiB
    assert settings.admin_cidrs == ()
    assert settings.ci == "actions"
    assert settings.protect is False


def test_prod_protects_and_dev_does_not() -> None:
    assert parse(stack_config("prod")).protect is True
    assert parse(stack_config("dev")).protect is False


def test_config_strings_are_converted() -> None:
    settings = parse({**VALID, "forgestack:rootVolumeGb": "40", "forgestack:acmeStaging": "false",
                      "forgestack:adminCidrs": '["203.0.113.7/32", "198.51.100.0/24"]'})
    assert settings.root_volume_gb == 40
    assert settings.acme_staging is False
    assert settings.admin_cidrs == ("203.0.113.7/32", "198.51.100.0/24")


def test_mock_floats_are_whole_numbers() -> None:
    assert parse({**VALID, "forgestack:dataVolumeGb": 30.0}).data_volume_gb == 30


BAD_VALUES = [
    # (key, bad value, words the expectation must contain)
    ("forgestack:domain", "Forge.Example.com", "lowercase DNS name"),
    ("forgestack:domain", "no_underscores.example.com", "lowercase DNS name"),
    ("forgestack:hostedZone", "other.org", "parent domains"),
    ("forgestack:instanceType", "t3-medium", "EC2 instance type"),
    ("forgestack:instanceType", "t3.micro", "at least 2 GiB"),
    ("forgestack:vpcCidr", "10.0.0.0/8", "/16 to /24"),
    ("forgestack:vpcCidr", "10.20.0.0/25", "/16 to /24"),
    ("forgestack:vpcCidr", "52.0.0.0/16", "private IPv4"),
    ("forgestack:vpcCidr", "10.20.0.1/16", "private IPv4"),
    ("forgestack:vpcCidr", "not-a-cidr", "private IPv4"),
    ("forgestack:adminCidrs", '["0.0.0.0/0"]', "never the Internet"),
    ("forgestack:adminCidrs", '["0.0.0.0/1", "128.0.0.0/1"]', "at most 2^24 addresses"),
    ("forgestack:adminCidrs", '["8.0.0.0/7"]', "at most 2^24 addresses"),
    ("forgestack:proxyMaxBodySize", "512M", "an Nginx size from 1m to 100g"),
    ("forgestack:proxyMaxBodySize", "200g", "an Nginx size from 1m to 100g"),
    ("forgestack:adminUiAccess", "cidrs", "public, admin-cidrs (needs adminCidrs) or private"),
    ("forgestack:adminCidrs", '["203.0.113.7/24"]', "host bits zero"),
    ("forgestack:adminCidrs", '"203.0.113.7/32"', "JSON list"),
    ("forgestack:adminCidrs", "[not json", "JSON list"),
    ("forgestack:adminCidrs", '["203.0.113.7/32", "203.0.113.7/32"]', "JSON list"),
    ("forgestack:rootVolumeGb", "5", "10 to 500"),
    ("forgestack:rootVolumeGb", "twenty", "integer"),
    ("forgestack:rootVolumeGb", "20.5", "integer"),
    ("forgestack:dataVolumeGb", "20000", "10 to 16384"),
    ("forgestack:backupRetentionDays", "0", "1 to 3650"),
    ("forgestack:backupRetentionDays", "-3", "1 to 3650"),
    ("forgestack:backupArchiveAfterDays", "10", "30 to 3650"),
    ("forgestack:flowLogRetentionDays", "10", "retention periods"),
    ("forgestack:acmeEmail", "ops-at-example.com", "email address"),
    ("forgestack:acmeStaging", "yes", "true or false"),
    ("forgestack:protect", "1", "true or false"),
    ("forgestack:giteaVersion", "latest", "exact release"),
    ("forgestack:giteaVersion", "1.22.6", "1.27.0 or newer"),
    ("forgestack:giteaVersion", "1.27", "exact release"),
    ("forgestack:postgresVersion", "18", "MAJOR.MINOR"),
    ("forgestack:postgresVersion", "17.6", "major 18"),
    ("forgestack:postgresVersion", "latest", "never latest"),
    ("forgestack:ci", "jenkins", "actions, drone, none"),
    ("forgestack:platform", "gcp", "aws, local"),
    ("forgestack:monitoring", "on", "true or false"),
    ("forgestack:sshPublicKey", "not a key", "OpenSSH public key"),
    # The example key the stack files once shipped; a key cut short; an RSA blob under an ed25519 name; not base64.
    ("forgestack:sshPublicKey",
     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL6n3l4ln/yKt/HZWnO/L6yfYalg73rgX+eBOym925m0 replace-with-your-own-key",
     "the published example key"),
    ("forgestack:sshPublicKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfxFDxQ+I7FlTZatsccAF0j op@laptop", "an ed25519 key is 32 bytes"),
    ("forgestack:sshPublicKey", "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQAB op@laptop", "not an ssh-ed25519 key"),
    ("forgestack:sshPublicKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A op@laptop", "not valid base64"),
    ("aws:region", "Europe", "AWS region"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_key_value_and_expectation(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse({**VALID, key: value})
    message = str(error.value)
    assert f"{key}: got {value!r}" in message
    assert expected in message


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("forgestack:alertSlackWebhookUrl", "https://hooks.slack.com.evil.example/services/T0/B0/x", "https://hooks.slack.com/"),
    ("forgestack:alertSlackWebhookUrl", "http://hooks.slack.com/services/T0/B0/x", "https://hooks.slack.com/"),
    ("forgestack:alertTeamsWebhookUrl", "http://example.logic.azure.com/workflows/x", "an https URL"),
    ("forgestack:alertTeamsWebhookUrl", "https:///workflows/x", "an https URL"),
    ("forgestack:alertPagerdutyRoutingKey", "0123456789abcdef", "32-character integration key"),
    ("forgestack:alarmHttpsEndpoints", '["http://events.example.com/sns"]', "https URLs"),
    ("forgestack:alarmHttpsEndpoints", '["https://a.example.com/x", "https://a.example.com/x"]', "https URLs"),
])
def test_a_bad_receiver_secret_is_named_but_never_shown(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse({**VALID, key: value})
    message = str(error.value)
    assert f"{key}: got [secret]; expected" in message and expected in message
    assert value not in message


def test_config_error_is_a_run_error() -> None:
    # RunError makes the Pulumi CLI print the message alone, without a Python traceback.
    assert issubclass(ConfigError, pulumi.RunError)


def test_unknown_key_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"forgestack:instanceTyp: unknown key \(did you mean forgestack:instanceType\?\)"):
        parse({**VALID, "forgestack:instanceTyp": "t3.large"})


def test_keys_of_other_namespaces_are_left_alone() -> None:
    assert parse({**VALID, "aws:profile": "ops", "pulumi:template": "x"}).region == "eu-west-1"


@pytest.mark.parametrize("missing", ["forgestack:domain", "forgestack:acmeEmail"])
def test_missing_required_key(missing: str) -> None:
    config = {key: value for key, value in VALID.items() if key != missing}
    with pytest.raises(ConfigError, match=f"{missing}: missing; expected"):
        parse(config)


@pytest.mark.parametrize("missing", ["aws:region", "forgestack:hostedZone"])
def test_aws_stacks_need_region_and_zone(missing: str) -> None:
    config = {key: value for key, value in VALID.items() if key != missing}
    with pytest.raises(ConfigError, match=f"{missing}: got ''; expected"):
        parse(config)


def test_compliance_locked_backups_need_a_protected_stack() -> None:
    assert parse(VALID).backup_lock_mode == "governance"
    with pytest.raises(ConfigError, match="forgestack:backupLockMode: got 'compliance'; expected governance on a stack without "
                                          "protect: compliance-locked backups cannot be removed by anyone for backupRetentionDays"):
        parse({**VALID, "forgestack:backupLockMode": "compliance"})
    assert parse({**VALID, "forgestack:backupLockMode": "compliance", "forgestack:protect": "true"}).backup_lock_mode == "compliance"


def test_archive_must_come_before_expiry() -> None:
    with pytest.raises(ConfigError, match="forgestack:backupArchiveAfterDays: got 60; expected 0 or fewer days than backupRetentionDays"):
        parse({**VALID, "forgestack:backupRetentionDays": "30", "forgestack:backupArchiveAfterDays": "60"})


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as error:
        parse({**VALID, "forgestack:vpcCidr": "1.2.3.4", "forgestack:rootVolumeGb": "1"})
    assert "forgestack:vpcCidr" in str(error.value) and "forgestack:rootVolumeGb" in str(error.value)


@pytest.mark.parametrize(
    ("instance_type", "architecture", "memory_gib"),
    [("t3.medium", "x86_64", 4), ("t4g.large", "arm64", 8), ("m7g.large", "arm64", 8), ("c7gn.xlarge", "arm64", 8),
     ("m7i.2xlarge", "x86_64", 32), ("r6i.large", "x86_64", 16), ("m7i-flex.large", "x86_64", 8), ("a1.large", "arm64", 8)],
)
def test_instance_type_facts(instance_type: str, architecture: str, memory_gib: float) -> None:
    assert instance_architecture(instance_type) == architecture
    assert instance_memory_gib(instance_type) == memory_gib


def _yaml_type(annotation: object) -> str:
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if typing.get_origin(annotation) is tuple:
        return "array"
    return "string"


def test_pulumi_yaml_declares_exactly_the_settings_keys() -> None:
    """Pulumi.yaml is what the CLI validates against; it must match the model key for key."""
    declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    fields = config_keys()
    assert set(declared) == set(fields)
    for key, field in fields.items():
        assert declared[key]["type"] == _yaml_type(field.annotation), key
        assert declared[key]["description"] == field.description, key
        if field.is_required():
            assert "default" not in declared[key], key
        else:
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            assert declared[key]["default"] == default, key


def test_stack_files_use_only_declared_keys() -> None:
    keys = set(config_keys())
    for stack_file in REPO.glob("Pulumi.*.yaml"):
        config = yaml.safe_load(stack_file.read_text())["config"]
        for key in config:
            namespace, _, name = key.partition(":")
            assert namespace in ("aws", "forgestack"), f"{stack_file.name}: {key}"
            if namespace == "forgestack":
                assert name in keys, f"{stack_file.name}: {key}"


@pytest.mark.parametrize(
    "override",
    [{"forgestack:vpcCidr": "10.0.0.0/8"}, {"forgestack:instanceTpye": "t3.large"}, {"forgestack:giteaVersion": "latest"},
     {"forgestack:adminCidrs": '["0.0.0.0/0"]'}, {"forgestack:protect": "maybe"}],
)
def test_bad_config_registers_no_resource(override: dict[str, str]) -> None:
    """The whole program stops at settings.load(): not one resource reaches the engine."""
    mocks = ForgeMocks()
    with pytest.raises(ConfigError, match=next(iter(override))):
        run_program("dev", stack_config("dev", override), mocks=mocks)
    assert mocks.registered == []


def test_load_reads_the_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """load() sees keys set by the CLI (PULUMI_CONFIG) as well as by set_all_config, and the stack name."""
    pulumi.runtime.set_all_config({})
    monkeypatch.setenv("PULUMI_CONFIG", '{"forgestack:domain": "x.example.com", "forgestack:hostedZone": "example.com", '
                                        '"forgestack:acmeEmail": "a@example.com", "aws:region": "us-east-1", '
                                        '"forgestack:ci": "none", "forgestack:budgetMonthlyUsd": "50"}')  # qa has no estimate
    pulumi.runtime.set_mocks(ForgeMocks(), project="forgestack", stack="qa", preview=False)
    settings = stack_settings.load()
    assert (settings.ci, settings.region, settings.stack, settings.budget_usd) == ("none", "us-east-1", "qa", 50)


# ------------------------------------------------------------ full matches, control characters, quoting

PATTERN_EXAMPLES = {
    "_DNS_NAME": "forge.example.com", "_EMAIL": "ops@example.com", "_INSTANCE_TYPE": "t3.medium", "_REGION": "eu-west-1",
    "_REBOOT_WINDOW": "Sun *-*-* 03:30", "_GITEA_VERSION": "1.27.3", "_POSTGRES_VERSION": "18.1", "_HTTP_URL": "https://chat.example.com/hooks/x",
    "_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey op@host", "_NGINX_SIZE": "512m",
    "_HTTPS_URL": "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
    "_SLACK_WEBHOOK": "https://hooks.slack.com/services/T000/B000/XXXX", "_PAGERDUTY_KEY": "0123456789abcdef0123456789abcdef",
    "_SES_SMTP_HOST": "email-smtp.eu-west-1.amazonaws.com:587", "_SNAPSHOT_ID": "snap-0123456789abcdef0",
    "_AVAILABILITY_ZONE": "eu-west-1b", "_DATABASE_CLASS": "db.m7g.large", "_CACHE_NODE_TYPE": "cache.t4g.small",
    "_KASM_RELEASE": "1.18.0.09f70a", "_SHA256": "ab" * 32, "_KASM_API_TOKEN": "bMjMwTT0JKUQ",
}


@pytest.mark.parametrize("name", sorted(PATTERN_EXAMPLES))
def test_every_pattern_matches_whole_values_only(name: str) -> None:
    """On their own, without the control-character check in front: `$` would let a trailing newline through."""
    pattern = getattr(stack_settings, name)
    example = PATTERN_EXAMPLES[name]
    assert pattern.fullmatch(example)
    for suffix in ("\n", "\r", "\r\nbootcmd: [id]"):
        assert not pattern.fullmatch(example + suffix)


def test_the_instance_type_helpers_refuse_a_trailing_newline() -> None:
    with pytest.raises(ValueError, match="malformed instance type"):
        instance_memory_gib("t3.medium\n")
    with pytest.raises(ValueError, match="malformed instance type"):
        instance_architecture("m7g.large\n")


def test_every_config_pattern_is_compiled_in_the_examples() -> None:
    compiled = {name for name, value in vars(stack_settings).items() if isinstance(value, re.Pattern)}
    assert compiled == set(PATTERN_EXAMPLES)  # a new pattern gets its trailing-newline case here


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("forgestack:domain", "forge.example.com\n", "U+000A"),
    ("forgestack:acmeEmail", "ops@example.com\u2028", "U+2028"),
    ("forgestack:giteaVersion", "1.27.3\r", "U+000D"),
    ("forgestack:rootVolumeGb", "20\n", "U+000A"),  # the number check strips whitespace: refused before it
    ("forgestack:alertSmtpPassword", "s3cr\u202eet", "U+202E"),
    ("forgestack:relayTargets", '[\n  "https://chat.example.com/x\\u0000"\n]', "U+0000"),
])
def test_control_characters_are_refused_with_the_key_and_the_character(key: str, value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse({**VALID, key: value})
    message = str(error.value)
    assert key in message and f"contains the control character {shown}" in message
    assert "s3cr" not in message  # a secret's value is never shown, not even with the character named


def test_a_json_list_may_span_lines() -> None:
    assert parse({**VALID, "forgestack:adminCidrs": '[\n  "203.0.113.0/24",\n  "198.51.100.7/32"\n]'}).admin_cidrs == (
        "203.0.113.0/24", "198.51.100.7/32")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("forgestack:volumeKey", "aws", "one of: customer-managed, aws-managed"),
    ("forgestack:dataVolumeSnapshotId", "snap-123", "an EBS snapshot id such as snap-0123456789abcdef0"),
    ("forgestack:dataVolumeSnapshotId", "vol-0123456789abcdef0", "an EBS snapshot id"),
    ("forgestack:availabilityZone", "eu-west-1", "a zone of the stack's region such as eu-west-1b"),
    ("forgestack:availabilityZone", "us-east-1a", "a zone of the stack's region eu-west-1, such as eu-west-1b"),
])
def test_volume_and_zone_settings_are_checked(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key) + ".*" + re.escape(expected)):
        parse({**VALID, key: value})


def test_volume_and_zone_settings_default_to_the_stacks_key_a_blank_volume_and_the_first_zone() -> None:
    settings = parse(VALID)
    assert (settings.volume_key, settings.data_volume_snapshot_id, settings.availability_zone) == ("customer-managed", "", "")
    chosen = parse({**VALID, "forgestack:dataVolumeSnapshotId": "snap-0123456789abcdef0", "forgestack:availabilityZone": "eu-west-1c"})
    assert (chosen.data_volume_snapshot_id, chosen.availability_zone) == ("snap-0123456789abcdef0", "eu-west-1c")


def test_git_ssh_takes_22_only_where_no_admin_ssh_and_no_laptop_sshd_needs_it() -> None:
    assert (parse(VALID).git_ssh_port, parse(VALID).host_sshd_loopback_only) == (22, True)
    with_admins = parse({**VALID, "forgestack:adminCidrs": '["203.0.113.0/24"]'})
    assert (with_admins.git_ssh_port, with_admins.host_sshd_loopback_only) == (2222, False)
    kept = parse({**VALID, "forgestack:gitSshPort": "2222"})  # an existing stack keeps its clone URLs
    assert (kept.git_ssh_port, kept.host_sshd_loopback_only) == (2222, False)
    local = parse({"forgestack:platform": "local", "forgestack:domain": "forge.localhost", "forgestack:acmeEmail": "ops@example.com"})
    assert local.git_ssh_port == 2222
    with pytest.raises(ConfigError, match="forgestack:gitSshPort: got 22; expected 0 or 2222 here: port 22 belongs to the host's"):
        parse({**VALID, "forgestack:gitSshPort": "22", "forgestack:adminCidrs": '["203.0.113.0/24"]'})
    with pytest.raises(ConfigError, match=r"forgestack:gitSshPort.*0 \(automatic\), 22 \(AWS without adminCidrs\) or 2222"):
        parse({**VALID, "forgestack:gitSshPort": "2200"})


def test_admin_uis_limited_to_admin_cidrs_need_admin_cidrs() -> None:
    with pytest.raises(ConfigError, match="forgestack:adminUiAccess: got 'admin-cidrs'; expected public or private while adminCidrs"):
        parse({**VALID, "forgestack:adminUiAccess": "admin-cidrs"})
    settings = parse({**VALID, "forgestack:adminUiAccess": "admin-cidrs", "forgestack:adminCidrs": '["203.0.113.0/24"]'})
    assert settings.admin_ui_access == "admin-cidrs" and not settings.admin_ui_private
    assert parse(VALID).admin_ui_private  # private unless the stack says otherwise


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("forgestack:topology", "cluster", "one of: single, ha"),
    ("forgestack:haZones", "1", "2 or 3"),
    ("forgestack:haGiteaTasks", "1", "an integer from 2 to 20"),
    ("forgestack:haTaskSize", "1024/1024", "a Fargate size CPU/MEMORY such as 1024/2048"),
    ("forgestack:haTaskSize", "256/512", "a Fargate size"),  # Gitea needs more than the smallest size
    ("forgestack:haTaskSize", "1024/2048\n", "U+000A"),
    ("forgestack:haDatabaseClass", "m7g.large", "an RDS instance class such as db.t4g.medium"),
    ("forgestack:haCacheNodeType", "db.t4g.small", "an ElastiCache node type such as cache.t4g.small"),
    ("forgestack:haOpsInstanceType", "t4g.micro", "at least 2 GiB of memory"),
    ("forgestack:haOpsInstanceType", "small", "an EC2 instance type such as t4g.small"),
    ("forgestack:haOpsVolumeGb", "20", "an integer from 30 to 16384"),
    ("forgestack:haRunnerInstanceType", "t4g.small", "at least 4 GiB of memory"),
    ("forgestack:haNatGateways", "two", "one of: one, per-zone"),
    ("forgestack:haDatabaseStorageGb", "10", "an integer from 20 to 16384"),
])
def test_ha_settings_are_checked(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key) + ".*" + re.escape(expected)):
        parse({**VALID, key: value})


def test_ha_is_aws_only_and_its_sizes_are_read() -> None:
    with pytest.raises(ConfigError, match="forgestack:topology: got 'ha'; expected single on the local stack"):
        parse({"forgestack:platform": "local", "forgestack:domain": "forge.localhost", "forgestack:acmeEmail": "ops@example.com",
               "forgestack:topology": "ha"})
    assert parse(VALID).topology == "single"
    with pytest.raises(ConfigError, match="forgestack:ci: got 'drone'; expected actions or none with topology ha"):
        parse({**VALID, "forgestack:topology": "ha", "forgestack:ci": "drone", "forgestack:droneGiteaClientId": "0b5c6f1e-1111",
               "forgestack:droneGiteaClientSecret": "s"})
    ha = parse({**VALID, "forgestack:topology": "ha", "forgestack:haTaskSize": "2048/6144"})
    assert (ha.topology, ha.task_cpu, ha.task_memory_mib, ha.ha_gitea_tasks, ha.ha_zones) == ("ha", 2048, 6144, 2, 2)
