"""RunnerHost (topology ha, ci actions): the Gitea Runner on an Amazon Linux 2023 instance of its own in a private subnet,
starting CI jobs as containers on the instance's Docker engine, configured exactly as on the single host (jobs never get
the Docker socket, memory and process caps, no new privileges; services.ci.runner_config).

Its own host, not the ops host: the jobs run code from pull requests, so the machine they run on reaches the Internet
but no data tier (its security group has no rule to the database, the cache or the file system, and nothing reaches it),
and its role reads one secret: the runner registration token. Gitea reads the same token at start
(GITEA_RUNNER_REGISTRATION_TOKEN_FILE) as its global registration token, so the runner registers itself without anyone
copying a token. The host keeps nothing of its own: replaced, it registers again."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Final, Literal

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import templates
from components.constants import CI_NETWORK, CONTAINER_PREFIX, DOCKER_NETWORKS
from components.host import SSM_AGENT_STATEMENTS, encode_user_data
from components.kms import rotating_key
from components.private_instance import PrivateInstanceArgs, private_instance
from components.services import ci, images

RUNNER_CONTAINER: Final = f"{CONTAINER_PREFIX}{ci.RUNNER}"
UNIT: Final = "forgestack-runner"
CONFIG_PATH: Final = "/etc/forgestack/runner.yaml"
TOKEN_DIR: Final = f"/run/{UNIT}"  # the unit's RuntimeDirectory: root only, gone when the unit stops
TOKEN_LENGTH: Final = 48  # letters and digits; Gitea wants a long random global token
RUNNER_MEMORY: Final = "512m"
RUNNER_PIDS_LIMIT: Final = 2048
HOST_RESERVED_MIB: Final = 1024  # the OS, Docker and the runner itself; the rest is shared by the jobs
VOLUME_GB: Final = 40  # job images and their layers


def job_memory_mb(instance_memory_mib: int) -> int:
    """Memory per job: what the host leaves after itself, shared by the runner's capacity."""
    return (instance_memory_mib - HOST_RESERVED_MIB) // ci.RUNNER_CAPACITY


@dataclass(frozen=True)
class RunnerService:
    """What the runner's systemd unit needs; nothing in it is secret."""

    stack: str
    region: str
    token_secret_arn: str
    instance_url: str  # Gitea's public URL (the runner registers against ROOT_URL, and jobs clone from it)

    @property
    def docker_run(self) -> list[str]:
        return [
            "/usr/bin/docker", "run", "--rm", "--name", RUNNER_CONTAINER,
            "--network", CI_NETWORK, "--network-alias", ci.RUNNER,  # the jobs reach its cache at this name
            "--memory", RUNNER_MEMORY, "--pids-limit", str(RUNNER_PIDS_LIMIT), "--security-opt", "no-new-privileges",
            "--env", f"GITEA_INSTANCE_URL={self.instance_url}",
            "--env", f"GITEA_RUNNER_REGISTRATION_TOKEN_FILE={ci.RUNNER_TOKEN_FILE}",
            "--env", f"GITEA_RUNNER_NAME={CONTAINER_PREFIX}{self.stack}",
            "--env", f"CONFIG_FILE={ci.RUNNER_CONFIG}",
            "--volume", f"{CONFIG_PATH}:{ci.RUNNER_CONFIG}:ro",
            "--volume", f"{TOKEN_DIR}/token:{ci.RUNNER_TOKEN_FILE}:ro",
            "--volume", f"{RUNNER_CONTAINER}:/data",  # its registration (.runner) and the action cache
            "--volume", f"{ci.DOCKER_SOCKET}:{ci.DOCKER_SOCKET}",  # the runner starts the jobs; the jobs never get it
            images.locked(images.GITEA_RUNNER),
        ]  # fmt: skip

    def fetch_token(self, token_dir: str = TOKEN_DIR) -> str:
        """Shell writing the token into the unit's private runtime directory; the token never appears in a command line."""
        fetch = shlex.join(["aws", "secretsmanager", "get-secret-value", "--region", self.region, "--secret-id",
                            self.token_secret_arn, "--query", "SecretString", "--output", "text"])  # fmt: skip
        return f"umask 077 && {fetch} > {token_dir}/token"


def service_unit(service: RunnerService) -> str:
    subnet = DOCKER_NETWORKS[CI_NETWORK]
    return f"""[Unit]
Description=forgestack Gitea Runner: CI jobs as containers on this host's Docker
Wants=network-online.target
After=network-online.target docker.service
Requires=docker.service

[Service]
RuntimeDirectory={UNIT}
RuntimeDirectoryMode=0700
ExecStartPre=/bin/sh -c {shlex.quote(service.fetch_token())}
ExecStartPre=-/usr/bin/docker network create --subnet {subnet} {CI_NETWORK}
ExecStartPre=-/usr/bin/docker rm --force {RUNNER_CONTAINER}
ExecStart={shlex.join(service.docker_run)}
ExecStop=/usr/bin/docker stop {RUNNER_CONTAINER}
Restart=always
RestartSec=30

[Install]
WantedBy=multi-user.target
"""


def render_user_data(service: RunnerService, job_memory: int, ssh_public_key: str = "") -> str:
    return templates.render(
        "runner-cloud-init.yaml.j2",
        ssh_public_key=ssh_public_key,
        config_path=CONFIG_PATH,
        config=ci.runner_config(job_memory, untrusted_certificate=False),  # ACM's certificate: publicly trusted
        unit=UNIT,
        unit_text=service_unit(service),
    )


def runner_policy(token_secret_arn: str, token_key_arn: str) -> str:
    """The SSM agent's needs and the registration token; nothing else of the stack."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                *SSM_AGENT_STATEMENTS,
                {"Sid": "ReadTheRunnerToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": token_secret_arn},
                {"Sid": "DecryptTheRunnerToken", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": token_key_arn},
            ],
        }
    )


class RunnerToken(pulumi.ComponentResource):
    """The global runner registration token: generated once, kept in a secret of its own (the runner host reads this one
    and no other), written for Gitea by its task's secrets container."""

    secret: aws.secretsmanager.Secret
    key: aws.kms.Key

    def __init__(self, name: str, stack: str, protect: bool, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:RunnerToken", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        value = random.RandomPassword(f"{name}-value", length=TOKEN_LENGTH, special=False, opts=child)
        self.key = rotating_key(f"{name}-key", f"forgestack {stack} runner registration token", self, protect)
        self.secret = aws.secretsmanager.Secret(
            f"{name}-secret", description="forgestack Gitea Runner registration token", kms_key_id=self.key.arn, opts=child
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-secret-version",
            secret_id=self.secret.id,
            secret_string=value.result,
            opts=child,  # result is secret
        )
        self.register_outputs({"secretArn": self.secret.arn})


@dataclass(frozen=True)
class RunnerHostArgs:
    stack: str
    region: str
    instance_type: str
    instance_memory_mib: int
    architecture: Literal["x86_64", "arm64"]
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    token_secret_arn: pulumi.Input[str]
    token_key_arn: pulumi.Input[str]
    instance_url: str
    ssh_public_key: str = ""
    protect: bool = False


class RunnerHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance

    def __init__(self, name: str, args: RunnerHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:RunnerHost", name, None, opts)
        user_data = pulumi.Output.from_input(args.token_secret_arn).apply(
            lambda arn: encode_user_data(
                render_user_data(
                    RunnerService(args.stack, args.region, arn, args.instance_url),
                    job_memory_mb(args.instance_memory_mib),
                    args.ssh_public_key,
                )
            )
        )
        # Nothing to keep on it: a replaced host registers again with the same token.
        self.instance, self.role = private_instance(
            self,
            name,
            PrivateInstanceArgs(
                stack=args.stack,
                purpose="runner",
                instance_type=args.instance_type,
                architecture=args.architecture,
                subnet_id=args.subnet_id,
                security_group_id=args.security_group_id,
                volume_gb=VOLUME_GB,
                user_data_base64=user_data,
                policies=(
                    ("policy", pulumi.Output.all(args.token_secret_arn, args.token_key_arn).apply(lambda arns: runner_policy(*arns))),
                ),
                protect=args.protect,
            ),
        )
        self.register_outputs({"instanceId": self.instance.id})
