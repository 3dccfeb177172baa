"""CI modes, Valkey, Portainer and the webhook relay under mocks: containers, wiring and secrets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components.constants import CI_NETWORK, CI_SUBNET, DOCKER_SUBNET
from components.services import ci, valkey
from components.services.spec import ServiceSpec
from components.settings import parse
from components.templates import FILES_DIR
from rehearsal.engine import ProgramRun, Registered, has_secret, run_program, stack_config

DRONE_CONFIG = {"forgestack:ci": "drone", "forgestack:droneGiteaClientId": "0b5c6f1e-1111-2222-3333-444455556666",
                "forgestack:droneGiteaClientSecret": "gto_drone_client_secret_value"}


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {
        "actions": run_program("dev", stack_config("dev", {"forgestack:ci": "actions"})),
        "drone": run_program("dev", stack_config("dev", DRONE_CONFIG)),
        "none": run_program("dev", stack_config("dev", {"forgestack:ci": "none"})),
    }


def containers(run: ProgramRun) -> dict[str, Registered]:
    return {c.inputs["name"].removeprefix("forgestack-"): c for c in run.of_type("docker:index/container:Container")}


def env(container: Registered) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in container.inputs.get("envs") or [])


def uploads_of(spec: ServiceSpec) -> dict[str, str]:
    return {f.path: f.content for f in spec.config_files}


def uploads(container: Registered) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container.inputs.get("uploads") or []}


@pytest.mark.parametrize(("mode", "present", "absent"), [
    ("actions", {"runner"}, {"drone", "drone-runner"}),
    ("drone", {"drone", "drone-runner"}, {"runner"}),
    ("none", set(), {"runner", "drone", "drone-runner"}),
])
def test_each_ci_mode_builds_its_containers(runs: dict[str, ProgramRun], mode: str, present: set[str], absent: set[str]) -> None:
    names = set(containers(runs[mode]))
    assert present <= names and not absent & names
    assert {"valkey", "relay", "gitea"} <= names  # every mode


@pytest.mark.parametrize("mode", ["actions", "drone", "none"])
def test_gitea_allows_webhooks_to_this_host_in_every_mode(runs: dict[str, ProgramRun], mode: str) -> None:
    gitea = env(containers(runs[mode])["gitea"])
    assert gitea["GITEA__webhook__ALLOWED_HOST_LIST"] == f"external,{DOCKER_SUBNET}"
    assert gitea["GITEA__actions__ENABLED"] == ("true" if mode == "actions" else "false")


def test_runner_registers_with_a_token_gitea_generates_at_deploy_time(runs: dict[str, ProgramRun]) -> None:
    run = runs["actions"]
    token_command = run.one("command:local:Command", name=f"services-{ci.RUNNER_TOKEN}")
    assert "gitea actions generate-runner-token" in token_command.inputs["create"]
    gitea_container = next(c for c in run.of_type("docker:index/container:Container") if c.name == "services-gitea")
    assert gitea_container.urn in token_command.depends_on  # generated once Gitea runs
    runner = containers(run)["runner"]
    assert runner.raw_inputs is not None and has_secret(runner.raw_inputs["uploads"])
    assert uploads(runner)[ci.RUNNER_TOKEN_FILE] == token_command.outputs["stdout"]  # the command's output, as a file
    runner_env = env(runner)
    assert runner_env["GITEA_INSTANCE_URL"] == "https://git.dev.forge.example.com/"  # the public ROOT_URL
    assert runner_env["GITEA_RUNNER_REGISTRATION_TOKEN_FILE"] == ci.RUNNER_TOKEN_FILE
    assert {v["containerPath"] for v in runner.inputs["volumes"]} >= {"/data", "/var/run/docker.sock"}  # .runner persisted


def test_runner_jobs_are_unprivileged_and_memory_capped(runs: dict[str, ProgramRun]) -> None:
    config = yaml.safe_load(uploads(containers(runs["actions"])["runner"])[ci.RUNNER_CONFIG])
    container = config["container"]
    assert container["privileged"] is False and container["valid_volumes"] == []
    assert container["docker_host"] == "-"  # the runner never mounts the Docker engine into jobs or their services
    options = container["options"].split()
    assert {"--security-opt=no-new-privileges", f"--pids-limit={ci.JOB_PIDS_LIMIT}", "--cap-drop=NET_RAW"} <= set(options)
    assert any(option.startswith("--memory=") for option in options)
    assert config["runner"]["labels"] == [f"{ci.JOB_LABEL}:docker://node:22.21.1-bookworm"]


def test_jobs_share_a_network_with_the_runner_and_its_cache_and_nothing_else(runs: dict[str, ProgramRun]) -> None:
    """Jobs reach the runner's cache (by its name on their network) but not PostgreSQL, Valkey or the exporters."""
    run = runs["actions"]
    config = yaml.safe_load(uploads(containers(run)["runner"])[ci.RUNNER_CONFIG])
    networks = {n.inputs["name"]: n for n in run.of_type("docker:index/network:Network")}
    assert config["container"]["network"] == CI_NETWORK in networks
    assert networks[CI_NETWORK].inputs["ipamConfigs"] == [{"subnet": CI_SUBNET}]
    members = {name: [n["name"] for n in c.inputs["networksAdvanced"]] for name, c in containers(run).items()}
    assert [name for name, joined in members.items() if CI_NETWORK in joined] == ["runner"]
    (runner_network,) = containers(run)["runner"].inputs["networksAdvanced"]
    assert config["cache"]["host"] in runner_network["aliases"] and config["cache"]["port"] == ci.CACHE_PORT


@pytest.mark.parametrize(("stack", "staging"), [("dev", True), ("prod", False)])
def test_only_a_staging_certificate_makes_the_runner_and_jobs_skip_verification(stack: str, staging: bool) -> None:
    """Dev serves Let's Encrypt's staging CA, which nothing trusts: without this the runner never registers and
    checkout never clones. Prod verifies (and retries registration while the bootstrap certificate is up)."""
    settings = parse(stack_config(stack), stack=stack)
    config = yaml.safe_load(uploads_of(ci.runner_spec(settings, 256, 512))[ci.RUNNER_CONFIG])
    assert config["runner"].get("insecure", False) is staging
    assert ("GIT_SSL_NO_VERIFY" in config["runner"].get("envs", {})) is staging


def test_drone_is_wired_to_gitea_and_served_through_the_proxy(runs: dict[str, ProgramRun]) -> None:
    run = runs["drone"]
    server = containers(run)["drone"]
    server_env = env(server)
    assert server_env["DRONE_GITEA_SERVER"] == "https://git.dev.forge.example.com"
    assert server_env["DRONE_GITEA_CLIENT_ID"] == DRONE_CONFIG["forgestack:droneGiteaClientId"]
    assert "DRONE_GITEA_CLIENT_SECRET" not in server_env and "DRONE_RPC_SECRET" not in server_env  # files only
    files = uploads(server)
    assert files["/run/secrets/drone_gitea_client_secret"] == "gto_drone_client_secret_value"
    rpc_secret = files["/run/secrets/drone_rpc_secret"]
    assert uploads(containers(run)["drone-runner"])["/run/secrets/drone_rpc_secret"] == rpc_secret  # the same generated secret
    assert "ci.dev.forge.example.com" in run.outputs["hostnames"]
    nginx = uploads(containers(run)["proxy"])["/etc/nginx/conf.d/default.conf"]
    assert "server_name ci.dev.forge.example.com;" in nginx and "drone:80" in nginx


def test_drone_without_oauth_credentials_or_single_sign_on_is_a_config_error() -> None:
    from components.settings import ConfigError

    with pytest.raises(ConfigError, match=r"forgestack:droneGiteaClientId.*or ssoOrganization set"):
        run_program("dev", stack_config("dev", {"forgestack:ci": "drone", "forgestack:ssoOrganization": ""}))
    with pytest.raises(ConfigError, match=r"forgestack:droneGiteaClientId.*or neither"):
        run_program("dev", stack_config("dev", {"forgestack:ci": "drone", "forgestack:droneGiteaClientId": "0b5c6f1e"}))


def test_with_single_sign_on_the_deploy_registers_drone_in_gitea() -> None:
    run = run_program("dev", stack_config("dev", {"forgestack:ci": "drone"}))
    client = run.one("command:local:Command", name="services-droneGiteaClientId")
    assert "forgestack-sso-client forgeadmin forgestack drone https://ci.dev.forge.example.com/login" in client.inputs["create"]
    client_id, client_secret = client.outputs["stdout"].split()
    server = containers(run)["drone"]
    server_env = env(server)
    assert server_env["DRONE_GITEA_CLIENT_ID_FILE"] == ci.DRONE_CLIENT_ID_FILE  # env-from-files exports it for Drone
    assert "DRONE_GITEA_CLIENT_ID" not in server_env
    files = uploads(server)
    assert (files[ci.DRONE_CLIENT_ID_FILE], files[ci.DRONE_CLIENT_SECRET_FILE]) == (client_id, client_secret)
    assert server.raw_inputs is not None and has_secret(server.raw_inputs["uploads"])


def test_gitea_uses_valkey_with_the_password_only_in_files(runs: dict[str, ProgramRun]) -> None:
    run = runs["actions"]
    password = next(r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")
                    if r.name == "credentials-valkeyPassword")
    gitea = containers(run)["gitea"]
    gitea_env = env(gitea)
    assert gitea_env["GITEA__cache__ADAPTER"] == "redis" and gitea_env["GITEA__queue__TYPE"] == "redis"
    assert gitea_env["GITEA__session__PROVIDER"] == "redis"
    assert password not in " ".join(gitea.inputs["envs"])
    files = uploads(gitea)
    assert files["/run/secrets/valkey_cache"] == f"redis://default:{password}@valkey:6379/0"
    assert files["/run/secrets/valkey_queue"] == f"redis://default:{password}@valkey:6379/2"
    store = containers(run)["valkey"]
    assert not store.inputs.get("ports")  # never published
    assert uploads(store)[valkey.ACL_FILE] == f"user default on >{password} ~* &* +@all\n"


def test_portainer_on_in_dev_off_in_prod(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    assert "portainer.dev.forge.example.com" in dev_run.outputs["hostnames"]
    assert not [c for c in prod_run.of_type("docker:index/container:Container") if c.inputs["name"] == "forgestack-portainer"]
    portainer = next(c for c in dev_run.of_type("docker:index/container:Container") if c.inputs["name"] == "forgestack-portainer")
    assert "--admin-password-file" in portainer.inputs["command"]
    assert not portainer.inputs.get("ports")  # reachable through the proxy only


def test_relay_runs_behind_the_proxy_with_its_targets_secret(prod_run: ProgramRun) -> None:
    run = run_program("prod", stack_config("prod", {"forgestack:relayTargets": json.dumps(["https://chat.example.com/hooks/t0k3n"])}))
    relay = next(c for c in run.of_type("docker:index/container:Container") if c.inputs["name"] == "forgestack-relay")
    assert relay.inputs["user"] == "65534:65534" and not relay.inputs.get("ports")
    assert json.loads(uploads(relay)["/run/secrets/relay_targets"]) == ["https://chat.example.com/hooks/t0k3n"]
    assert "t0k3n" not in " ".join(relay.inputs["envs"]) and "t0k3n" not in str(run.outputs)
    assert "hooks.forge.example.com" in run.outputs["hostnames"]
    assert uploads(relay)["/app/webhook_relay.py"].startswith('"""forgestack webhook relay')


def test_env_from_files_exports_secrets_and_drops_the_file_variables(tmp_path: Path) -> None:
    """The entrypoint Drone's containers run: NAME_FILE=path becomes NAME=<content>, then the real program runs."""
    secret = tmp_path / "rpc"
    secret.write_text("s3cret-value")
    env = {"PATH": os.environ["PATH"], "DRONE_RPC_SECRET_FILE": str(secret), "PLAIN": "kept"}
    show = 'echo "$DRONE_RPC_SECRET|${DRONE_RPC_SECRET_FILE-unset}|$PLAIN"'
    result = subprocess.run(["sh", str(FILES_DIR / "env-from-files.sh"), "sh", "-c", show], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "s3cret-value|unset|kept"
    env["DRONE_RPC_SECRET_FILE"] = str(tmp_path / "missing")
    refused = subprocess.run(["sh", str(FILES_DIR / "env-from-files.sh"), "true"], capture_output=True, text=True, env=env, check=False)
    assert refused.returncode == 1 and "not readable" in refused.stderr
