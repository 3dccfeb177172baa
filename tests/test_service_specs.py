"""Service specs: pure functions from settings; Gitea, PostgreSQL and the proxy configured as documented."""

from __future__ import annotations

import dataclasses

import pytest

from components.constants import DOCKER_SUBNET
from components.services import gitea, postgres
from components.services.catalog import (
    MIN_SHARE_MB,
    OS_RESERVED_MB,
    SHARE_OF_REST,
    ci_job_memory_mb,
    memory_plan,
    routed_hostnames,
    service_specs,
)
from components.services.spec import Route, ServiceSpec
from components.settings import ConfigError, Settings, parse
from rehearsal.engine import stack_config


@pytest.fixture(scope="module")
def dev() -> Settings:
    return parse(stack_config("dev"), stack="dev")


@pytest.fixture(scope="module")
def local() -> Settings:
    return parse(stack_config("local"), stack="local")


def _by_name(settings: Settings) -> dict[str, ServiceSpec]:
    return {spec.name: spec for spec in service_specs(settings)}


OBSERVABILITY = ["loki", "alloy", "alertmanager", "node-exporter", "cadvisor", "postgres-exporter", "blackbox", "prometheus", "grafana"]


CORE = ["postgres", "valkey", "gitea"]


def test_aws_stacks_run_everything_local_has_no_certbot_or_probes(dev: Settings, local: Settings) -> None:
    assert list(_by_name(dev)) == [*CORE, "runner", "relay", "portainer", *OBSERVABILITY, "proxy", "certbot"]
    local_core = [*CORE[:2], "mailpit", "minio", *CORE[2:]]  # Mailpit catches the local stack's mail, MinIO keeps its backups
    assert list(_by_name(local)) == [*local_core, "runner", "relay", "portainer", *[n for n in OBSERVABILITY if n != "blackbox"], "proxy"]


def test_monitoring_logging_ci_and_portainer_switch_their_containers(dev: Settings) -> None:
    bare = dev.model_copy(update={"monitoring": False, "logging": False, "ci": "none", "portainer": False})
    assert list(_by_name(bare)) == [*CORE, "relay", "proxy", "certbot"]
    logs_only = bare.model_copy(update={"logging": True})
    assert list(_by_name(logs_only)) == [*CORE, "relay", "loki", "alloy", "proxy", "certbot"]
    assert set(memory_plan(bare)) == {*CORE, "relay", "proxy", "certbot"}


def test_an_instance_too_small_for_the_services_is_a_config_error(dev: Settings) -> None:
    with pytest.raises(ConfigError, match=r"forgestack:instanceType: got 't3\.medium' \(4096 MiB\); expected at least 4304 MiB"):
        service_specs(dev.model_copy(update={"instance_type": "t3.medium"}))
    without_logs = dev.model_copy(update={"instance_type": "t3.medium", "logging": False, "portainer": False})
    assert service_specs(without_logs)  # 4 GiB holds the forge, CI and monitoring without Loki and Alloy


@pytest.mark.parametrize("instance_type", ["t3.medium", "t3.large", "m7g.large", "m7g.2xlarge"])
@pytest.mark.parametrize("switches", [{}, {"logging": False}, {"ci": "none"}, {"monitoring": False, "logging": False}])
def test_the_plan_never_overcommits_and_keeps_a_ci_job_free(dev: Settings, instance_type: str, switches: dict[str, object]) -> None:
    settings = dev.model_copy(update={"instance_type": instance_type, "portainer": False, **switches})
    try:
        plan = memory_plan(settings)
    except ConfigError:
        assert instance_type == "t3.medium" and switches in ({}, {"ci": "none"})
        return
    job = ci_job_memory_mb(settings) if settings.ci != "none" else 0
    assert sum(plan.values()) + OS_RESERVED_MB + job <= settings.instance_memory_mib
    assert all(plan[name] >= MIN_SHARE_MB for name in SHARE_OF_REST if name in plan)


def test_postgres_is_pinned_private_and_reads_its_password_from_a_file(dev: Settings) -> None:
    spec = _by_name(dev)["postgres"]
    assert spec.image == "postgres:18.4"
    assert spec.ports == ()
    assert spec.env["POSTGRES_PASSWORD_FILE"] == postgres.PASSWORD_FILE
    assert [f.credential for f in spec.secret_files] == ["postgresPassword"]
    assert [(v.name, v.target) for v in spec.volumes] == [("postgres", "/var/lib/postgresql")]
    assert spec.healthcheck is not None and spec.healthcheck.test[1:] == ("pg_isready", "-U", "gitea", "-d", "gitea")


def test_postgres_memory_settings_follow_the_instance(dev: Settings) -> None:
    small = _by_name(dev)["postgres"]
    large = _by_name(dev.model_copy(update={"instance_type": "m7g.2xlarge"}))["postgres"]
    assert large.memory_mb > small.memory_mb
    assert f"shared_buffers={small.memory_mb // 4}MB" in small.command
    assert f"shared_buffers={large.memory_mb // 4}MB" in large.command


@pytest.mark.parametrize("instance_type", ["t3.large", "m7g.large", "m7g.2xlarge"])
def test_memory_plan_fits_the_instance(dev: Settings, instance_type: str) -> None:
    settings = dev.model_copy(update={"instance_type": instance_type})
    plan = memory_plan(settings)
    assert sum(plan.values()) + 1024 <= settings.instance_memory_mib  # the OS keeps its GiB
    assert set(plan) == {spec.name for spec in service_specs(settings)}


def test_gitea_environment(dev: Settings) -> None:
    env = _by_name(dev)["gitea"].env
    assert env["GITEA__database__DB_TYPE"] == "postgres"
    assert env["GITEA__database__HOST"] == "postgres:5432"
    assert env["GITEA__server__ROOT_URL"] == "https://git.dev.forge.example.com/"
    assert (env["GITEA__server__SSH_PORT"], env["GITEA__server__SSH_LISTEN_PORT"]) == ("22", "22")  # dev: no adminCidrs
    assert env["GITEA__security__INSTALL_LOCK"] == "true"
    assert env["GITEA__security__REVERSE_PROXY_TRUSTED_PROXIES"] == DOCKER_SUBNET
    assert env["GITEA__metrics__ENABLED"] == "true"
    assert env["GITEA__service__DISABLE_REGISTRATION"] == "true"


def test_gitea_secrets_arrive_as_files_only(dev: Settings) -> None:
    spec = _by_name(dev)["gitea"]
    file_env = {key: value for key, value in spec.env.items() if key.endswith("__FILE")}
    assert set(file_env) == {"GITEA__database__PASSWD__FILE", "GITEA__security__SECRET_KEY__FILE",
                             "GITEA__security__INTERNAL_TOKEN__FILE", "GITEA__metrics__TOKEN__FILE",
                             "GITEA__cache__HOST__FILE", "GITEA__session__PROVIDER_CONFIG__FILE", "GITEA__queue__CONN_STR__FILE",
                             "GITEA__mailer__USER__FILE", "GITEA__mailer__PASSWD__FILE"}
    uploaded = {f.path for f in spec.secret_files}
    assert set(file_env.values()) <= uploaded
    assert all(f.owner == gitea.GIT_UID for f in spec.secret_files)


@pytest.mark.parametrize(("policy", "email_confirm"), [("closed", "false"), ("approval", "true"), ("open", "true")])
def test_new_accounts_confirm_their_address_when_others_may_register(dev: Settings, policy: str, email_confirm: str) -> None:
    env = _by_name(dev.model_copy(update={"gitea_registration": policy}))["gitea"].env
    assert env["GITEA__service__REGISTER_EMAIL_CONFIRM"] == email_confirm
    assert env["GITEA__service__ENABLE_NOTIFY_MAIL"] == "true"


def test_gitea_mails_through_ses_on_aws_and_mailpit_locally(dev: Settings, local: Settings) -> None:
    aws = _by_name(dev)["gitea"].env
    assert (aws["GITEA__mailer__PROTOCOL"], aws["GITEA__mailer__SMTP_ADDR"], aws["GITEA__mailer__SMTP_PORT"]) == (
        "smtp+starttls", "email-smtp.eu-west-1.amazonaws.com", "587")
    assert aws["GITEA__mailer__FROM"] == "Forgestack <gitea@mail.dev.forge.example.com>"
    local_env = _by_name(local)["gitea"].env
    assert (local_env["GITEA__mailer__PROTOCOL"], local_env["GITEA__mailer__SMTP_ADDR"], local_env["GITEA__mailer__SMTP_PORT"]) == (
        "smtp", "mailpit", "1025")
    assert "GITEA__mailer__PASSWD__FILE" not in local_env  # Mailpit on the Docker network needs no login


@pytest.mark.parametrize(("policy", "disabled", "confirm"), [("approval", "false", "true"), ("open", "false", "false")])
def test_registration_policy_from_config(dev: Settings, policy: str, disabled: str, confirm: str) -> None:
    env = _by_name(dev.model_copy(update={"gitea_registration": policy}))["gitea"].env
    assert (env["GITEA__service__DISABLE_REGISTRATION"], env["GITEA__service__REGISTER_MANUAL_CONFIRM"]) == (disabled, confirm)


def test_gitea_waits_for_postgres_and_publishes_git_ssh(dev: Settings) -> None:
    spec = _by_name(dev)["gitea"]
    assert spec.depends_on == ("postgres", "valkey")
    assert [(p.host, p.container, p.private_address) for p in spec.ports] == [(22, 22, True)]
    assert spec.healthcheck is not None and spec.healthcheck.test[-1].endswith("/api/healthz")
    assert spec.route == Route("git", gitea.HTTP_PORT, limits=gitea.GITEA_RATE_LIMITS, health_path="/api/healthz")


def test_admin_bootstrap_passes_no_password(dev: Settings) -> None:
    argv = gitea.admin_bootstrap_command(dev, "forgestack-gitea")
    assert argv[:4] == ["docker", "exec", "--user", "git"]
    assert dev.gitea_admin_user in argv
    assert not any("password" in part.lower() for part in argv)


def test_only_the_proxy_publishes_web_ports(dev: Settings) -> None:
    published = {spec.name: sorted(p.host for p in spec.ports) for spec in service_specs(dev) if spec.ports}
    assert published == {"gitea": [22], "proxy": [80, 443]}


def test_certbot_covers_every_routed_hostname(dev: Settings) -> None:
    specs = service_specs(dev)
    certbot = _by_name(dev)["certbot"]
    assert certbot.env["CERT_DOMAINS"].split(",") == list(routed_hostnames(dev, specs))
    assert certbot.env["ACME_STAGING"] == "true"
    prod = parse(stack_config("prod"), stack="prod")
    assert _by_name(prod)["certbot"].env["ACME_STAGING"] == "false"


def test_hostnames_derive_from_routes(dev: Settings) -> None:
    specs = list(service_specs(dev))
    extra = dataclasses.replace(specs[1], name="extra", route=Route("extra", 8080, health_path="/healthz"), ports=())
    assert routed_hostnames(dev, [*specs, extra]) == tuple(f"{name}.dev.forge.example.com" for name in (
        "git", "hooks", "portainer", "grafana", "extra"))


@pytest.mark.parametrize("image", ["nginx", "nginx:latest", "nginx:alpine", "gitea/gitea:stable"])
def test_floating_images_are_refused(image: str) -> None:
    with pytest.raises(ValueError, match="not pinned"):
        ServiceSpec(name="x", image=image, memory_mb=64)


def test_plain_secrets_in_env_are_refused() -> None:
    with pytest.raises(ValueError, match="secret_files"):
        ServiceSpec(name="x", image="nginx:1.28.3", memory_mb=64, env={"DB_PASSWORD": "hunter2"})


def test_a_route_names_a_health_path_that_nginx_lets_through() -> None:
    """The probes ask it: a route without one, or one its exact paths would 404, is refused where it is written."""
    with pytest.raises(ValueError, match="health_path must be a path"):
        Route("extra", 8080)
    with pytest.raises(ValueError, match="must be one of its routed paths"):
        Route("hooks", 8080, paths=("/hooks/gitea",), health_path="/healthz")
    assert Route("hooks", 8080, paths=("/hooks/gitea", "/healthz"), health_path="/healthz").health_path == "/healthz"
