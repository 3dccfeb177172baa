"""scripts/rehearse.py: the README's no-AWS command, run as a process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal.engine import REPO, ProgramRun, Registered
from scripts.rehearse import check_docker


def _rehearse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "rehearse.py"), *args], capture_output=True, text=True,
                          check=False, cwd="/")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_json_shows_ids_and_masks_nothing_secret(stack: str) -> None:
    result = _rehearse("--stack", stack, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["engine"] == "moto"
    ids = {resource["type"]: resource["id"] for resource in document["resources"]}
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", ids["aws:ec2/vpc:Vpc"])  # moto's ids, not the mocks' counters
    assert re.fullmatch(r"i-[0-9a-f]{17}", ids["aws:ec2/instance:Instance"])
    assert re.fullmatch(r"sg-[0-9a-f]{17}", ids["aws:ec2/securityGroup:SecurityGroup"])
    assert document["validated_not_emulated"] == ["aws:dlm/lifecyclePolicy:LifecyclePolicy snapshots-policy"]
    assert document["outputs"]["giteaUrl"].startswith("https://git.")
    assert document["problems"] == []


def test_graph_is_mermaid_derived_from_the_resources() -> None:
    result = _rehearse("--stack", "prod", "--graph", "mermaid")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  subgraph n_host["Host (host)"]' in lines
    assert "  n_host_eip --> n_host_instance" in lines  # the Elastic IP depends on the instance
    assert any("forgestack-gitea" in line for line in lines)
    assert f"```mermaid\n{result.stdout}```" in (REPO / "README.md").read_text(), "README's generated diagram is stale"


def test_local_stack_rehearses_without_aws() -> None:
    result = _rehearse("--stack", "local")
    assert result.returncode == 0, result.stderr
    assert "aws:" not in result.stdout and "forgestack-gitea" in result.stdout


def test_broken_stack_file_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "Pulumi.dev.yaml"
    broken.write_text((REPO / "Pulumi.dev.yaml").read_text().replace("10.20.0.0/16", "10.20.0.0/8"))
    result = _rehearse("--stack", "dev", "--stack-file", str(broken))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "invalid stack configuration" in line]
    assert len(error_lines) == 1 and "forgestack:vpcCidr: got '10.20.0.0/8'" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = _rehearse("--help")
    assert result.returncode == 0 and "--stack" in result.stdout


def _container(name: str, port: int) -> Registered:
    inputs = {"name": name, "ports": [{"ip": "0.0.0.0", "external": port, "internal": port}],
              "networksAdvanced": [{"name": "forgestack"}], "uploads": [{"file": "/x", "content": "x"}]}
    return Registered("docker:index/container:Container", name, inputs, name, inputs, True)


def test_docker_checks_catch_clashing_ports_missing_networks_and_floating_images() -> None:
    network = Registered("docker:index/network:Network", "n", {"name": "forgestack"}, "n", {}, True)
    image = Registered("docker:index/remoteImage:RemoteImage", "i", {"name": "nginx:latest"}, "i", {}, True)
    orphan = _container("c", 8080)
    orphan.inputs["networksAdvanced"] = [{"name": "elsewhere"}]
    run = ProgramRun([network, image, _container("a", 443), _container("b", 443), orphan], {}, set())
    problems = check_docker(run)
    assert "image nginx:latest is not pinned to an exact tag" in problems
    assert "host port 443 on 0.0.0.0 is published by 2 containers" in problems
    assert "c: network elsewhere does not exist" in problems


def test_docker_checks_catch_undeclared_volumes_and_writable_host_paths() -> None:
    network = Registered("docker:index/network:Network", "n", {"name": "forgestack"}, "n", {}, True)
    declared = Registered("docker:index/volume:Volume", "v", {"name": "forgestack-gitea"}, "v", {}, True)
    container = _container("c", 3000)
    container.inputs["volumes"] = [{"volumeName": "forgestack-gitea", "containerPath": "/data"},
                                   {"volumeName": "forgestack-typo", "containerPath": "/x"},
                                   {"hostPath": "/srv/forgestack/gitea", "containerPath": "/data"},
                                   {"hostPath": "/etc", "containerPath": "/host-etc"},
                                   {"hostPath": "/var/log/journal", "containerPath": "/var/log/journal", "readOnly": True}]
    problems = check_docker(ProgramRun([network, declared, container], {}, set()))
    assert problems == ["c: volume forgestack-typo is not declared", "c: host path /etc outside the data volume is mounted writable"]
