"""The deploy mapping under mocks for dev, prod and local, and the invariants every container keeps."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components import templates
from components.constants import DATA_MOUNT, DOCKER_SUBNET
from components.services.deploy import HostConnection, aws_connection, host_ready_command, local_connection, pids_limits_command
from policy.forgestack_rules import ACCEPTED_RISKS, ADDABLE_CAPABILITIES, PINNED_IMAGE
from rehearsal.engine import ProgramRun, Registered, has_secret, run_program, stack_config
from tests.shims import install_shim

PUBLIC_PORTS = {80, 443, 2222}


def _containers(run: ProgramRun) -> dict[str, Registered]:
    return {c.inputs["name"]: c for c in run.of_type("docker:index/container:Container")}


def test_each_stack_builds_its_containers(dev_run: ProgramRun, prod_run: ProgramRun, local_run: ProgramRun) -> None:
    aws_names = {f"forgestack-{name}" for name in ("postgres", "valkey", "gitea", "runner", "relay", "proxy", "certbot", "loki",
                                                   "alloy", "alertmanager", "node-exporter", "cadvisor", "postgres-exporter",
                                                   "blackbox", "prometheus", "grafana")}
    assert set(_containers(dev_run)) == aws_names | {"forgestack-portainer"}  # portainer: on in dev, off in prod
    assert set(_containers(prod_run)) == aws_names
    assert set(_containers(local_run)) == aws_names - {"forgestack-certbot", "forgestack-blackbox"} | {
        "forgestack-portainer", "forgestack-mailpit", "forgestack-minio"}  # locally mail goes to Mailpit (on AWS: SES), backups to MinIO


def test_local_stack_has_no_aws_resources(local_run: ProgramRun) -> None:
    assert [r.type for r in local_run.resources if r.type.startswith("aws:") or r.type == "pulumi:providers:aws"] == []
    assert "hostPublicIp" not in local_run.outputs
    assert local_run.one("pulumi:providers:docker").inputs["host"] == "unix:///var/run/docker.sock"


def test_invariants_of_every_container(any_run: ProgramRun) -> None:
    images = {image.outputs["imageId"]: image.inputs["name"] for image in any_run.of_type("docker:index/remoteImage:RemoteImage")}
    credentials = [r.outputs["result"] for r in any_run.of_type("random:index/randomPassword:RandomPassword")]
    for name, container in _containers(any_run).items():
        inputs = container.inputs
        assert PINNED_IMAGE.match(images[inputs["image"]]), f"{name}: image not pinned"
        assert inputs["restart"] == "unless-stopped", name
        assert inputs["logDriver"] == "json-file" and inputs["logOpts"]["max-size"], name
        assert inputs["memory"] > 0, name
        assert inputs["privileged"] is False, name
        volumes = inputs.get("volumes") or []
        host_paths = [v for v in volumes if (v.get("hostPath") or "").startswith("/var/run") or v.get("hostPath") == "/"]
        if ("container-no-docker-socket", container.name) not in ACCEPTED_RISKS:  # the listed exceptions, each with its reason
            assert not [v for v in volumes if "docker.sock" in (v.get("hostPath") or "")], f"{name}: Docker socket mounted"
            assert not [v for v in volumes if (v.get("hostPath") or "") == "/var/run"], f"{name}: /var/run mounted"
        assert all(v.get("readOnly") for v in host_paths), f"{name}: host system path mounted writable"
        for port in inputs.get("ports") or []:
            if port.get("ip") in (None, "", "0.0.0.0"):
                assert port["external"] in PUBLIC_PORTS, f"{name}: {port['external']} published to all interfaces"
        env = " ".join(inputs.get("envs") or [])
        assert not [value for value in credentials if value in env], f"{name}: plaintext credential in env"


def test_every_container_drops_capabilities_and_has_a_process_limit(any_run: ProgramRun) -> None:
    pids = any_run.one("command:local:Command", "services-pids-limits")
    containers = _containers(any_run)
    for name, container in containers.items():
        assert container.inputs["securityOpts"] == ["no-new-privileges:true"], name
        assert container.inputs["capabilities"]["drops"] == ["ALL"], name
        assert set(container.inputs["capabilities"].get("adds") or []) <= set(ADDABLE_CAPABILITIES), name
    assert set(pids.inputs["triggers"]) == {container.id for container in containers.values()}  # re-run on replacement
    assert {container.urn for container in containers.values()} <= set(pids.depends_on)


def test_the_docker_provider_is_configured_without_its_startup_ping(any_run: ProgramRun) -> None:
    """So that `pulumi preview` (no refresh, no commands) never needs a path to the host."""
    (provider,) = any_run.of_type("pulumi:providers:docker")
    assert provider.inputs["disableDockerDaemonCheck"] in (True, "true")


def test_the_pids_limits_command_updates_every_container(tmp_path: Path) -> None:
    """The command line as the deploy runs it, with a `docker` on PATH that records its calls."""
    install_shim(tmp_path, "docker", f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    line = pids_limits_command(local_connection(), {"gitea": 2048, "postgres": 512, "relay": 512})
    subprocess.run(["sh", "-c", line], check=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (tmp_path / "calls").read_text().splitlines() == [
        "update --pids-limit=512 forgestack-postgres forgestack-relay",
        "update --pids-limit=2048 forgestack-gitea",
    ]


def test_secret_files_are_secret_uploads(dev_run: ProgramRun) -> None:
    gitea = _containers(dev_run)["forgestack-gitea"]
    # A secret file makes the whole uploads property secret: the engine stores it encrypted.
    assert gitea.raw_inputs is not None and has_secret(gitea.raw_inputs["uploads"])
    uploads = {u["file"]: u for u in gitea.inputs["uploads"]}
    for path in ("/run/secrets/postgres_password", "/run/secrets/gitea_secret_key", "/run/secrets/gitea_admin_password"):
        assert uploads[path]["permissions"] == "0400" and uploads[path]["owner"] == "1000"
        assert uploads[path]["content"]


def _published(run: ProgramRun, ips: set[str]) -> dict[str, list[int]]:
    return {
        name: sorted(int(p["external"]) for p in c.inputs.get("ports") or [] if p["ip"] in ips)
        for name, c in _containers(run).items() if any(p["ip"] in ips for p in c.inputs.get("ports") or [])
    }


def test_only_the_proxy_publishes_80_and_443(any_run: ProgramRun) -> None:
    """On the stack's public face (all interfaces on AWS, loopback locally): the proxy and git over SSH, nothing else.
    Git on 22 (AWS without adminCidrs) binds the host's private address only: the host's sshd keeps loopback:22."""
    if "forge.localhost" in any_run.outputs["giteaUrl"]:
        # and the backup store's S3 API, for scripts/local_backup.py on this machine
        assert _published(any_run, {"127.0.0.1"}) == {"forgestack-gitea": [2222], "forgestack-proxy": [80, 443], "forgestack-minio": [9000]}
        return
    private_ip = any_run.one("aws:ec2/instance:Instance").outputs["privateIp"]
    assert _published(any_run, {"0.0.0.0"}) == {"forgestack-proxy": [80, 443]}
    assert _published(any_run, {private_ip}) == {"forgestack-gitea": [22]}
    assert any_run.outputs["gitSshUrl"] == f"ssh://git@{any_run.outputs['giteaUrl'].split('/')[2]}/"


def test_with_admin_networks_git_stays_on_2222_on_every_interface() -> None:
    run = run_program("dev", stack_config("dev", {"forgestack:adminCidrs": ["203.0.113.7/32"]}))
    assert _published(run, {"0.0.0.0"}) == {"forgestack-gitea": [2222], "forgestack-proxy": [80, 443]}
    assert run.outputs["gitSshUrl"] == "ssh://git@git.dev.forge.example.com:2222/"


def test_private_admin_uis_are_only_on_the_hosts_loopback(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    assert _published(dev_run, {"127.0.0.1"}) == {}  # dev: adminUiAccess public, routed by the proxy
    assert _published(prod_run, {"127.0.0.1"}) == {"forgestack-grafana": [3000]}  # prod: private (Portainer is off)
    assert prod_run.outputs["grafanaUrl"] == "http://localhost:3000/"
    assert not [name for name in prod_run.outputs["hostnames"] if name.startswith("grafana.")]


def test_local_ports_bind_to_loopback_aws_to_all(local_run: ProgramRun, dev_run: ProgramRun) -> None:
    assert {p["ip"] for c in _containers(local_run).values() for p in c.inputs.get("ports") or []} == {"127.0.0.1"}
    private_ip = dev_run.one("aws:ec2/instance:Instance").outputs["privateIp"]  # git on 22 beside the host's loopback sshd
    assert {p["ip"] for c in _containers(dev_run).values() for p in c.inputs.get("ports") or []} == {"0.0.0.0", private_ip}


def test_data_lives_on_the_data_volume_on_aws(dev_run: ProgramRun, local_run: ProgramRun) -> None:
    postgres = _containers(dev_run)["forgestack-postgres"]
    assert postgres.inputs["volumes"] == [{"hostPath": f"{DATA_MOUNT}/postgres", "containerPath": "/var/lib/postgresql",
                                           "readOnly": False}]
    local_postgres = _containers(local_run)["forgestack-postgres"]
    assert local_postgres.inputs["volumes"][0]["volumeName"] == "forgestack-postgres"


def test_gitea_starts_after_a_healthy_postgres(any_run: ProgramRun) -> None:
    containers = _containers(any_run)
    postgres, gitea = containers["forgestack-postgres"], containers["forgestack-gitea"]
    assert postgres.inputs["wait"] is True  # Pulumi waits for the healthcheck before creating dependants
    assert postgres.urn in gitea.depends_on


def test_containers_wait_for_the_host_on_aws(dev_run: ProgramRun) -> None:
    ready = dev_run.one("command:local:Command", "services-host-ready")
    for name, container in _containers(dev_run).items():
        assert ready.urn in container.depends_on, name
    for network in dev_run.of_type("docker:index/network:Network"):
        assert ready.urn in network.depends_on, network.name


def test_network_subnet_is_the_trusted_proxy_range(any_run: ProgramRun) -> None:
    network = any_run.one("docker:index/network:Network", "services-network")
    assert network.inputs["ipamConfigs"] == [{"subnet": DOCKER_SUBNET}]


def test_admin_bootstrap_runs_after_gitea_without_a_password(any_run: ProgramRun) -> None:
    bootstrap = any_run.one("command:local:Command", "services-gitea-admin")
    gitea = _containers(any_run)["forgestack-gitea"]
    assert gitea.urn in bootstrap.depends_on
    assert "forgestack-bootstrap-admin" in bootstrap.inputs["create"]
    passwords = [r.outputs["result"] for r in any_run.of_type("random:index/randomPassword:RandomPassword")]
    assert not [p for p in passwords if p in bootstrap.inputs["create"]]


def test_commands_whose_output_is_secret_log_nothing(any_run: ProgramRun) -> None:
    """pulumi-command prints stdout to the deploy log by default: a secret stdout must switch that off."""
    secret = [c for c in any_run.of_type("command:local:Command") if c.additional_secret_outputs]
    assert secret, "every stack runs Gitea Actions: its runner registration token comes from a command"
    assert {c.name: c.inputs.get("logging") for c in secret} == {c.name: "none" for c in secret}


def test_aws_docker_provider_goes_over_ssh_through_ssm(dev_run: ProgramRun) -> None:
    provider = dev_run.one("pulumi:providers:docker")
    instance_id = dev_run.outputs["instanceId"]
    assert provider.inputs["host"] == f"ssh://ubuntu@{instance_id}"
    assert any("ProxyCommand=aws ssm start-session" in option for option in json.loads(provider.inputs["sshOpts"]))


def test_ssh_goes_direct_when_admin_networks_exist() -> None:
    connection = aws_connection("eu-west-1", via_ssm=False, public_ip="203.0.113.10", instance_id="i-1")
    assert connection.docker_host == "ssh://ubuntu@203.0.113.10"
    assert not any("ProxyCommand" in option for option in connection.ssh_opts)


@pytest.mark.validator
@pytest.mark.parametrize("connection", [
    aws_connection("eu-west-1", True, "203.0.113.10", "i-0123"), aws_connection("eu-west-1", False, "203.0.113.10", "i-0123"),
    local_connection(),
])
def test_host_ready_command_is_valid_shell(tmp_path: Path, connection: HostConnection) -> None:
    script = tmp_path / "ready.sh"
    script.write_text("#!/bin/sh\n" + host_ready_command(connection) + "\n")
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck
    result = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.validator
@pytest.mark.parametrize("script", sorted(p.name for p in templates.FILES_DIR.glob("*.sh")))
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck
    result = subprocess.run([shellcheck, str(templates.FILES_DIR / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_local_volumes_are_declared_and_kept_on_destroy(local_run: ProgramRun) -> None:
    volumes = {v.inputs["name"]: v for v in local_run.of_type("docker:index/volume:Volume")}
    used = {m["volumeName"] for c in local_run.of_type("docker:index/container:Container") for m in c.inputs.get("volumes") or []
            if m.get("volumeName")}
    assert used == set(volumes) and "forgestack-postgres" in volumes
    assert all(v.retain_on_delete for v in volumes.values())
