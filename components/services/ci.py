"""CI next to Gitea, chosen by forgestack:ci: Gitea Actions with a Gitea Runner, Drone (server + runner), or none.

Both runners start job containers on the host's Docker engine, so the runners themselves mount the Docker
socket (accepted in policy/forgestack_rules.ACCEPTED_RISKS). The jobs do not: the Gitea Runner never mounts
it into job or service containers (docker_host "-"), and Drone mounts host paths only into trusted
repositories' pipelines, a flag only a Drone admin sets (README, CI).
"""

from __future__ import annotations

import yaml

from components.constants import CI_NETWORK, CONTAINER_PREFIX, SECRETS_DIR
from components.services import gitea, images, sso
from components.services.spec import ConfigFile, HostMount, Route, SecretFile, ServiceSpec, Volume
from components.settings import Settings
from components.templates import read

RUNNER = "runner"
RUNNER_CONFIG = "/etc/gitea-runner/config.yaml"
RUNNER_TOKEN = "runnerRegistrationToken"  # noqa: S105 (a key name; the token is generated at deploy time by Gitea)
RUNNER_TOKEN_FILE = f"{SECRETS_DIR}/runner_registration_token"
RUNNER_CAPACITY = 2
JOB_LABEL = "ubuntu-24.04"
CACHE_PORT = 8088  # the runner's action cache, reached by the jobs on the CI network
JOB_PIDS_LIMIT = 4096  # builds fork a lot (compilers, test runners); a fork bomb still stops there
DRONE = "drone"
DRONE_RUNNER = "drone-runner"
DRONE_PORT = 80
DRONE_SUBDOMAIN = "ci"
DRONE_CLIENT_SECRET_FILE = f"{SECRETS_DIR}/drone_gitea_client_secret"
DRONE_CLIENT_ID_FILE = f"{SECRETS_DIR}/drone_gitea_client_id"
# Credentials keys: the operator's settings (droneGiteaClientSecret) or, registered by the deploy, its command's output.
DRONE_CLIENT_ID_CREDENTIAL = "droneGiteaClientId"
DRONE_CLIENT_SECRET_CREDENTIAL = "droneGiteaClientSecret"  # noqa: S105 (a credentials key)
DRONE_RPC_SECRET_FILE = f"{SECRETS_DIR}/drone_rpc_secret"
ENV_FROM_FILES = "/usr/local/bin/env-from-files"
DOCKER_SOCKET = "/var/run/docker.sock"


def runner_config(job_memory_mb: int, untrusted_certificate: bool) -> str:
    """Jobs in containers on the CI network (with the runner and its cache, nothing else), memory-capped, never
    privileged. With untrusted_certificate (Let's Encrypt's staging CA in dev) the runner and the jobs' git and
    Node skip certificate checks for the forge's own URL, or nothing could register or clone at all."""
    runner: dict[str, object] = {"file": "/data/.runner", "capacity": RUNNER_CAPACITY, "timeout": "3h",
                                 "labels": [f"{JOB_LABEL}:docker://{images.locked(images.CI_JOB_IMAGE)}"]}
    if untrusted_certificate:
        runner["insecure"] = True
        runner["envs"] = {"GIT_SSL_NO_VERIFY": "true", "NODE_TLS_REJECT_UNAUTHORIZED": "0"}
    return yaml.safe_dump({
        "log": {"level": "info"},
        "runner": runner,
        # Jobs reach the cache at the runner's name on the CI network, on a fixed port (not a random one).
        "cache": {"enabled": True, "dir": "/data/cache", "host": RUNNER, "port": CACHE_PORT},
        # "-": the runner finds the engine for itself but never mounts it into job or service containers, so a
        # workflow cannot start containers on the host (no `docker build` in jobs; README, CI).
        "container": {"network": CI_NETWORK, "privileged": False, "docker_host": "-",
                      "options": f"--memory={job_memory_mb}m --memory-swap={job_memory_mb}m --cpus=1 "
                                 f"--pids-limit={JOB_PIDS_LIMIT} --security-opt=no-new-privileges "
                                 "--cap-drop=NET_RAW --cap-drop=MKNOD --cap-drop=AUDIT_WRITE",
                      "valid_volumes": [], "force_pull": False},
    }, sort_keys=False)


def runner_spec(settings: Settings, memory_mb: int, job_memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=RUNNER, image=images.GITEA_RUNNER, memory_mb=memory_mb,
        env={
            # Registered against the public ROOT_URL, as Gitea's docs require (jobs clone from it too). While Nginx still
            # serves the bootstrap certificate (the first minutes of a prod stack) registration fails and the image
            # retries; Docker restarts it after that (unless-stopped) until the real certificate is in place.
            "GITEA_INSTANCE_URL": f"{gitea.public_url(settings)}/",
            "GITEA_RUNNER_REGISTRATION_TOKEN_FILE": RUNNER_TOKEN_FILE,
            "GITEA_RUNNER_NAME": f"{CONTAINER_PREFIX}{settings.stack}",
            "CONFIG_FILE": RUNNER_CONFIG,
        },
        config_files=(ConfigFile(RUNNER_CONFIG, runner_config(job_memory_mb, untrusted_certificate=settings.acme_staging)),),
        secret_files=(SecretFile(RUNNER_TOKEN, RUNNER_TOKEN_FILE),),
        volumes=(Volume(RUNNER, "/data"),),  # the .runner registration survives container replacement
        host_mounts=(HostMount(DOCKER_SOCKET, DOCKER_SOCKET),),
        depends_on=(gitea.NAME,),
        networks=(CI_NETWORK,),  # with its jobs; it reaches Gitea by the public URL, so needs nothing of the services'
    )


def runner_token_command(gitea_container: str) -> list[str]:
    """docker exec that prints a fresh instance-level registration token (used only while .runner is absent)."""
    return ["docker", "exec", "--user", "git", gitea_container, "gitea", "actions", "generate-runner-token"]


def drone_oauth_client(settings: Settings) -> sso.OAuthClient:
    """Drone's OAuth2 application in Gitea (Drone signs everyone in through it; its callback is /login)."""
    return sso.OAuthClient(application=DRONE, redirect_uri=f"https://{settings.hostname(DRONE_SUBDOMAIN)}/login",
                           client_id_credential=DRONE_CLIENT_ID_CREDENTIAL,
                           client_secret_credential=DRONE_CLIENT_SECRET_CREDENTIAL)


def drone_client_registered_by_deploy(settings: Settings) -> bool:
    """No client id in the settings: with single sign-on on, the deploy registers Drone's application in Gitea."""
    return sso.enabled(settings) and not settings.drone_gitea_client_id


def drone_server_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    hostname = settings.hostname(DRONE_SUBDOMAIN)
    client_id: dict[str, str] = {"DRONE_GITEA_CLIENT_ID": settings.drone_gitea_client_id}
    client_files: tuple[SecretFile, ...] = ()
    if drone_client_registered_by_deploy(settings):
        client_id = {"DRONE_GITEA_CLIENT_ID_FILE": DRONE_CLIENT_ID_FILE}
        client_files = (SecretFile(DRONE_CLIENT_ID_CREDENTIAL, DRONE_CLIENT_ID_FILE),)
    return ServiceSpec(
        name=DRONE, image=images.DRONE_SERVER, memory_mb=memory_mb,
        env={
            "DRONE_GITEA_SERVER": gitea.public_url(settings),
            **client_id,
            "DRONE_GITEA_CLIENT_SECRET_FILE": DRONE_CLIENT_SECRET_FILE,
            "DRONE_RPC_SECRET_FILE": DRONE_RPC_SECRET_FILE,
            "DRONE_SERVER_HOST": hostname, "DRONE_SERVER_PROTO": "https",
            "DRONE_USER_CREATE": f"username:{settings.gitea_admin_user},admin:true",
            "DRONE_REGISTRATION_CLOSED": "true",
        },
        secret_files=(*client_files, SecretFile(DRONE_CLIENT_SECRET_CREDENTIAL, DRONE_CLIENT_SECRET_FILE),
                      SecretFile("droneRpcSecret", DRONE_RPC_SECRET_FILE)),
        config_files=(ConfigFile(ENV_FROM_FILES, read("env-from-files.sh"), executable=True),),
        volumes=(Volume(DRONE, "/data"),),
        entrypoint=(ENV_FROM_FILES,),
        command=("/bin/drone-server",),
        route=Route(DRONE_SUBDOMAIN, DRONE_PORT, health_path="/healthz"),
        depends_on=(gitea.NAME,),
    )


def drone_runner_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=DRONE_RUNNER, image=images.DRONE_RUNNER, memory_mb=memory_mb,
        env={"DRONE_RPC_PROTO": "http", "DRONE_RPC_HOST": f"{DRONE}:{DRONE_PORT}", "DRONE_RPC_SECRET_FILE": DRONE_RPC_SECRET_FILE,
             "DRONE_RUNNER_CAPACITY": str(RUNNER_CAPACITY), "DRONE_RUNNER_NAME": f"{CONTAINER_PREFIX}{settings.stack}"},
        secret_files=(SecretFile("droneRpcSecret", DRONE_RPC_SECRET_FILE),),
        config_files=(ConfigFile(ENV_FROM_FILES, read("env-from-files.sh"), executable=True),),
        host_mounts=(HostMount(DOCKER_SOCKET, DOCKER_SOCKET),),
        entrypoint=(ENV_FROM_FILES,),
        command=("/bin/drone-runner-docker",),
        depends_on=(DRONE,),
    )
