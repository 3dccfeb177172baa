"""The one place that turns service specs into Docker resources on the host (or the local engine)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_tls as tls

from components.constants import CONTAINER_PREFIX, DATA_MOUNT, DOCKER_NETWORK, DOCKER_NETWORKS, HOST_USER
from components.host_files import HostBundle
from components.services import images
from components.services.proxy import BOOTSTRAP_CERT, BOOTSTRAP_KEY
from components.services.spec import PublishedPort, ServiceSpec

RESTART_POLICY = "unless-stopped"
# Rotated json-file logs; `labels` writes each container's forgestack.service label into every line,
# which is how Grafana Alloy names the service without access to the Docker socket.
LOG_OPTIONS = {"max-size": "10m", "max-file": "5", "labels": "forgestack.service"}
WAIT_TIMEOUT_SECONDS = 600  # first start of Gitea migrates the database
BOOTSTRAP_CERT_VALIDITY_HOURS = 24 * 825
HOST_READY_ATTEMPTS = 60
HOST_READY_PAUSE_SECONDS = 10
# `cloud-init status --wait` exits 0 when done, 2 when done with recoverable errors ("degraded": a deprecated key,
# a warning of a module), 1 on failure. Degraded still means the packages and the mount ran: go on, but say so.
CLOUD_INIT_DONE = (
    "cloud-init status --wait >/dev/null; status=$?; "
    "if [ \"$status\" -eq 2 ]; then echo 'cloud-init finished degraded (recoverable errors):' >&2; "
    "cloud-init status --long >&2; elif [ \"$status\" -ne 0 ]; then exit 1; fi; "
    "docker info >/dev/null"
)


@dataclass(frozen=True)
class HostConnection:
    """How Pulumi reaches the Docker engine, and how the operator's machine runs a command there."""

    docker_host: str  # ssh://ubuntu@203.0.113.10 or unix:///var/run/docker.sock
    ssh_opts: tuple[str, ...] = ()
    ssh_target: str = ""  # empty: commands run locally
    volume_root: str | None = None  # bind mounts below this path; None: named Docker volumes
    bind_ip: str = "0.0.0.0"  # noqa: S104 (the host's published ports are the forge's public face)
    private_ip: str = ""  # the host's primary private address (AWS); empty: bind_ip

    def published_ip(self, port: PublishedPort) -> str:
        if port.loopback:
            return "127.0.0.1"
        if port.private_address and self.private_ip:
            return self.private_ip
        return self.bind_ip

    def remote(self, argv: Sequence[str]) -> list[str]:
        """argv run on the Docker host: through ssh on AWS, as is on the local stack."""
        if not self.ssh_target:
            return list(argv)
        return ["ssh", *self.ssh_opts, self.ssh_target, shlex.join(argv)]


def ssh_options(region: str, via_ssm: bool) -> tuple[str, ...]:
    options: tuple[str, ...] = ("-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=15", "-o", "BatchMode=yes")
    if via_ssm:
        # No port 22 is open: tunnel ssh through SSM Session Manager to the instance id (%h).
        proxy = (f"aws ssm start-session --region {region} --target %h "
                 "--document-name AWS-StartSSHSession --parameters portNumber=%p")
        options += ("-o", f"ProxyCommand={proxy}")
    return options


def aws_connection(region: str, via_ssm: bool, public_ip: str, instance_id: str, private_ip: str = "") -> HostConnection:
    target = f"{HOST_USER}@{instance_id if via_ssm else public_ip}"
    return HostConnection(
        docker_host=f"ssh://{target}", ssh_opts=ssh_options(region, via_ssm), ssh_target=target, volume_root=DATA_MOUNT,
        private_ip=private_ip,
    )


def local_connection() -> HostConnection:
    # Only this machine reaches the forge's ports.
    return HostConnection(docker_host="unix:///var/run/docker.sock", bind_ip="127.0.0.1")


def host_ready_command(connection: HostConnection) -> str:
    """Shell run on the operator's machine: retries until cloud-init finished and Docker answers."""
    probe = shlex.join(connection.remote(["sh", "-c", CLOUD_INIT_DONE]))
    return (
        f"for attempt in $(seq 1 {HOST_READY_ATTEMPTS}); do "
        f"if {probe}; then exit 0; fi; "
        f'echo "host not ready yet (attempt $attempt/{HOST_READY_ATTEMPTS})" >&2; sleep {HOST_READY_PAUSE_SECONDS}; '
        "done; echo 'host never became ready: check cloud-init on the instance' >&2; exit 1"
    )


@dataclass(frozen=True)
class DeployTimeCommand:
    """Secrets only a running service can make (the runner's registration token, an OAuth2 client): argv run in the
    service's container once it is up and, for the admin-bootstrap service, once its admin exists. Each line of its
    standard output becomes one credential, in order; kept secret, never logged."""

    service: str
    argv: tuple[str, ...]
    credentials: tuple[str, ...]


@dataclass(frozen=True)
class ServicesArgs:
    specs: tuple[ServiceSpec, ...]  # dependencies before dependants
    secret_values: Mapping[str, pulumi.Output[str]]  # credentials by key
    connection: pulumi.Output[HostConnection]
    hostnames: tuple[str, ...]  # for the bootstrap certificate
    wait_for_host: bool
    admin_bootstrap: tuple[str, tuple[str, ...]] | None = None  # (service name, docker exec argv)
    pre_upgrade_backup: tuple[str, ...] | None = None  # argv run on the host before any container changes
    deploy_time_commands: tuple[DeployTimeCommand, ...] = ()
    # Deploy-time credentials the stack uses outside any container (Kasm's pull token): made after every container.
    exported_credentials: tuple[str, ...] = ()
    named_volumes: bool = False  # local stack: data in Docker volumes (declared, kept on destroy) instead of the data volume
    upgrade_triggers: tuple[str, ...] = ()  # values whose change re-runs the pre-upgrade backup (image references)
    host_bundle: pulumi.Output[HostBundle] | None = None  # host files and units, installed before any container (AWS)


class Services(pulumi.ComponentResource):
    """Docker network, images and containers for every spec; all on one provider."""

    containers: dict[str, docker.Container]

    def __init__(self, name: str, args: ServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:services:Services", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self._connection = args.connection

        self.provider = docker.Provider(
            f"{name}-docker",
            host=args.connection.apply(lambda c: c.docker_host),
            ssh_opts=args.connection.apply(lambda c: list(c.ssh_opts)),
            # No ping at start-up: `pulumi preview` (no refresh, commands do not run) then never reaches the host,
            # so the pull-request role needs no path to it; `pulumi up` connects when it first needs the engine.
            disable_docker_daemon_check=True,
            opts=child,
        )
        ready: list[pulumi.Resource] = []
        if args.wait_for_host:
            ready.append(command.local.Command(
                f"{name}-host-ready", create=args.connection.apply(host_ready_command), opts=child,
            ))
        if args.host_bundle is not None:
            bundle = args.host_bundle
            # Runs again whenever a file changes (the digest is its trigger); before the backup, which needs its unit.
            ready.append(command.local.Command(
                f"{name}-host-files",
                create=pulumi.Output.all(args.connection, bundle).apply(lambda v: shlex.join(v[0].remote(v[1].install_argv()))),
                stdin=bundle.apply(lambda b: b.stdin),
                triggers=[bundle.apply(lambda b: b.digest)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(ready)),
            ))
        if args.pre_upgrade_backup:
            # Replaced (so run again) whenever a trigger changes; every container depends on it, so
            # Pulumi finishes the backup before it replaces any container. A failed backup stops the deploy.
            ready.append(command.local.Command(
                f"{name}-pre-upgrade-backup",
                create=args.connection.apply(lambda c: shlex.join(c.remote(args.pre_upgrade_backup or ()))),
                triggers=list(args.upgrade_triggers),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(ready)),
            ))
        owned = sorted({(v.name, v.owner) for spec in args.specs for v in spec.volumes if v.owner is not None})
        if not args.named_volumes and owned:
            # Docker creates missing bind-mount directories owned by root; images that run as another user
            # (Prometheus, Grafana, Loki, Valkey) need theirs created for them. Idempotent; named volumes need nothing.
            ready.append(command.local.Command(
                f"{name}-data-directories",
                create=args.connection.apply(lambda c: data_directories_command(c, owned)),
                triggers=[f"{directory}:{uid}" for directory, uid in owned],
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(ready)),
            ))
        on_docker = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=ready)

        # Self-signed certificate so Nginx can start before Let's Encrypt issues the real one.
        bootstrap_key = tls.PrivateKey(f"{name}-bootstrap-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        bootstrap_cert = tls.SelfSignedCert(
            f"{name}-bootstrap-tls-cert", private_key_pem=bootstrap_key.private_key_pem, dns_names=list(args.hostnames),
            subject=tls.SelfSignedCertSubjectArgs(common_name=args.hostnames[0], organization="forgestack bootstrap"),
            validity_period_hours=BOOTSTRAP_CERT_VALIDITY_HOURS,
            allowed_uses=["key_encipherment", "digital_signature", "server_auth"], opts=child,
        )
        secret_values = {
            **args.secret_values,
            BOOTSTRAP_CERT: bootstrap_cert.cert_pem,
            BOOTSTRAP_KEY: pulumi.Output.secret(bootstrap_key.private_key_pem),
        }

        # The services' network, and any other a spec joins (CI jobs get their own); each with its fixed subnet.
        used = {network for spec in args.specs for network in spec.networks} | {DOCKER_NETWORK}
        self.networks: dict[str, docker.Network] = {
            network: docker.Network(
                f"{name}-network" if network == DOCKER_NETWORK else f"{name}-network-{network.removeprefix(CONTAINER_PREFIX)}",
                name=network, driver="bridge", ipam_configs=[docker.NetworkIpamConfigArgs(subnet=subnet)], opts=on_docker,
            )
            for network, subnet in DOCKER_NETWORKS.items() if network in used
        }
        self.network = self.networks[DOCKER_NETWORK]
        # Declared so that every volume a container names exists first; retained so `pulumi destroy` keeps the data.
        self.volumes: dict[str, docker.Volume] = {}
        if args.named_volumes:
            for volume_name in sorted({v.name for spec in args.specs for v in spec.volumes}):
                self.volumes[volume_name] = docker.Volume(
                    f"{name}-volume-{volume_name}", name=f"{CONTAINER_PREFIX}{volume_name}",
                    opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=ready, retain_on_delete=True),
                )
        self.containers = {}
        self.admin_commands: dict[str, command.local.Command] = {}
        deploy_time = {credential: run for run in args.deploy_time_commands for credential in run.credentials}
        for spec in args.specs:
            missing = [dependency for dependency in spec.depends_on if dependency not in self.containers]
            if missing:
                raise ValueError(f"service {spec.name} depends on {missing}, which come later or not at all")
            for secret in spec.secret_files:
                if secret.credential in deploy_time and secret.credential not in secret_values:
                    secret_values.update(self._deploy_time_secrets(name, deploy_time[secret.credential]))
            image = docker.RemoteImage(f"{name}-{spec.name}-image", name=images.locked(spec.image), keep_locally=True,
                                       opts=on_docker)
            self.containers[spec.name] = docker.Container(
                f"{name}-{spec.name}",
                self._container_args(spec, image, [self.networks[n] for n in spec.networks], secret_values, args.connection),
                opts=pulumi.ResourceOptions(
                    parent=self, provider=self.provider,
                    depends_on=[*ready, *(self.networks[n] for n in spec.networks), *(self.containers[d] for d in spec.depends_on),
                                *(self.volumes[v.name] for v in spec.volumes if v.name in self.volumes)],
                ),
            )
            if args.admin_bootstrap and args.admin_bootstrap[0] == spec.name:
                self.admin_commands[spec.name] = self._admin_bootstrap(name, spec.name, args.admin_bootstrap[1])

        # pulumi-docker cannot set --pids-limit at creation; `docker update` sets it on the running containers and
        # Docker keeps it in their configuration. Re-run whenever a container is replaced.
        containers = list(self.containers.values())
        command.local.Command(
            f"{name}-pids-limits",
            create=args.connection.apply(lambda c: pids_limits_command(c, {s.name: s.pids_limit for s in args.specs})),
            triggers=[container.id for container in containers],
            opts=pulumi.ResourceOptions(parent=self, depends_on=containers),
        )

        self.exported: dict[str, pulumi.Output[str]] = {}
        for credential in args.exported_credentials:
            if credential not in deploy_time:
                raise ValueError(f"exported credential {credential} has no deploy-time command that makes it")
            if credential not in secret_values:
                secret_values.update(self._deploy_time_secrets(name, deploy_time[credential]))
            self.exported[credential] = secret_values[credential]

        if args.admin_bootstrap and args.admin_bootstrap[0] not in self.containers:
            raise ValueError(f"admin bootstrap needs service {args.admin_bootstrap[0]}, which is not part of the stack")

        self.register_outputs({"containers": {n: c.name for n, c in self.containers.items()}, "network": self.network.name})

    def _admin_bootstrap(self, name: str, service: str, argv: Sequence[str]) -> command.local.Command:
        target = self.containers[service]
        return command.local.Command(
            f"{name}-{service}-admin",
            create=self._connection.apply(lambda c: shlex.join(c.remote(argv))),
            triggers=[target.id],  # a new container re-checks the (idempotent) admin account
            opts=pulumi.ResourceOptions(parent=self, depends_on=[target]),
        )

    def _deploy_time_secrets(self, name: str, run: DeployTimeCommand) -> dict[str, pulumi.Output[str]]:
        """Run the command once its service is up (and its admin exists); each line of its stdout becomes a secret."""
        if run.service not in self.containers:
            raise ValueError(f"deploy-time secrets {list(run.credentials)} need service {run.service}, which comes later or not at all")
        after: list[pulumi.Resource] = [self.containers[run.service]]
        if run.service in self.admin_commands:
            after.append(self.admin_commands[run.service])
        generated = command.local.Command(
            f"{name}-{run.credentials[0]}",
            create=self._connection.apply(lambda c: shlex.join(c.remote(run.argv))),
            # The default logging prints stdout to the deploy log: the secret would be in every `pulumi up` output.
            logging=command.local.Logging.NONE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=after, additional_secret_outputs=["stdout"]),
        )
        lines = generated.stdout.apply(lambda text: _stdout_lines(text, run.credentials))
        return {credential: pulumi.Output.secret(lines.apply(_line(index))) for index, credential in enumerate(run.credentials)}

    @staticmethod
    def _container_args(
        spec: ServiceSpec, image: docker.RemoteImage, networks: Sequence[docker.Network], secret_values: Mapping[str, pulumi.Output[str]],
        connection: pulumi.Output[HostConnection],
    ) -> docker.ContainerArgs:
        uploads = [
            docker.ContainerUploadArgs(file=f.path, content=_filled(f.content, f.values, secret_values), executable=f.executable)
            for f in spec.config_files
        ] + [
            docker.ContainerUploadArgs(
                file=s.path, content=_secret_content(secret_values[s.credential], s.template), owner=str(s.owner), permissions="0400",
            )
            for s in spec.secret_files
        ]
        healthcheck = None
        if spec.healthcheck:
            healthcheck = docker.ContainerHealthcheckArgs(
                tests=list(spec.healthcheck.test), interval=spec.healthcheck.interval, timeout=spec.healthcheck.timeout,
                retries=spec.healthcheck.retries, start_period=spec.healthcheck.start_period,
            )
        return docker.ContainerArgs(
            name=f"{CONTAINER_PREFIX}{spec.name}",
            image=image.image_id,
            restart=RESTART_POLICY,
            memory=spec.memory_mb,
            memory_swap=spec.memory_mb,  # no swap beyond the limit
            shm_size=spec.shm_size_mb,
            log_driver="json-file",
            log_opts=LOG_OPTIONS,
            privileged=False,
            # Least privilege: no setuid escalation, Docker's default capabilities dropped (the process ceiling is
            # set right after creation by pids_limits_command: pulumi-docker 5.2 has no pids_limit argument).
            security_opts=["no-new-privileges:true"],
            capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=sorted(spec.capabilities)),
            envs=[f"{key}={value}" for key, value in sorted(spec.env.items())],
            uploads=uploads,
            volumes=connection.apply(
                lambda c: [_volume(c, v.name, v.target, v.read_only) for v in spec.volumes]
                + [docker.ContainerVolumeArgs(host_path=m.source, container_path=m.target, read_only=True) for m in spec.host_mounts]
            ),
            ports=connection.apply(
                lambda c: [docker.ContainerPortArgs(internal=p.container, external=p.host, ip=c.published_ip(p)) for p in spec.ports]
            ),
            healthcheck=healthcheck,
            # Wait for healthy so that dependants (Gitea after PostgreSQL) start on a working service.
            wait=spec.healthcheck is not None,
            wait_timeout=WAIT_TIMEOUT_SECONDS,
            network_mode="host" if spec.host_network else None,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=[spec.name]) for network in networks]
            or None,
            command=list(spec.command) or None,
            user=spec.user or None,
            entrypoints=list(spec.entrypoint) or None,
            labels=[docker.ContainerLabelArgs(label="forgestack.service", value=spec.name)],
        )


def _stdout_lines(text: str, credentials: Sequence[str]) -> list[str]:
    """One value per credential, in order; the message never holds the output itself (it is secret)."""
    lines = text.strip().splitlines()
    if len(lines) != len(credentials) or not all(line.strip() for line in lines):
        raise ValueError(f"the deploy-time command for {list(credentials)} printed {len(lines)} lines; expected "
                         f"{len(credentials)} non-empty lines, one per credential")
    return [line.strip() for line in lines]


def _line(index: int) -> Callable[[list[str]], str]:
    return lambda lines: lines[index]


def _filled(content: str, values: Sequence[tuple[str, str]], secret_values: Mapping[str, pulumi.Output[str]]) -> pulumi.Input[str]:
    """A config file's content with its placeholders replaced by credentials (secret if any of them is)."""
    if not values:
        return content
    missing = [key for _, key in values if key not in secret_values]
    if missing:
        raise ValueError(f"config file placeholders name unknown credentials {missing}")

    def fill(plain: list[str]) -> str:
        text = content
        for (placeholder, _), value in zip(values, plain, strict=True):
            text = text.replace(placeholder, value)
        return text

    return pulumi.Output.all(*(secret_values[key] for _, key in values)).apply(fill)


def _secret_content(value: pulumi.Output[str], template: str) -> pulumi.Output[str]:
    """The file's content: the secret placed into its template (a connection string, an ACL line), still secret."""
    filled: pulumi.Output[str] = pulumi.Output.from_input(value).apply(lambda plain: template.replace("{value}", plain))
    return pulumi.Output.secret(filled)


def pids_limits_command(connection: HostConnection, limits: Mapping[str, int]) -> str:
    """`docker update --pids-limit` for every container, one call per limit."""
    by_limit: dict[int, list[str]] = {}
    for service, limit in sorted(limits.items()):
        by_limit.setdefault(limit, []).append(f"{CONTAINER_PREFIX}{service}")
    steps = [["docker", "update", f"--pids-limit={limit}", *names] for limit, names in sorted(by_limit.items())]
    return shlex.join(connection.remote(["sh", "-c", " && ".join(shlex.join(step) for step in steps)]))


def data_directories_command(connection: HostConnection, owned: Sequence[tuple[str, int]]) -> str:
    """Create each owned directory below the data volume with its owner (install -d leaves existing content alone)."""
    assert connection.volume_root is not None
    steps = [["sudo", "install", "-d", "-o", str(uid), "-g", str(uid), f"{connection.volume_root}/{directory}"]
             for directory, uid in owned]
    return shlex.join(connection.remote(["sh", "-c", " && ".join(shlex.join(step) for step in steps)]))


def _volume(connection: HostConnection, name: str, target: str, read_only: bool) -> docker.ContainerVolumeArgs:
    """A directory on the data volume (AWS; Docker creates it on first use) or a declared Docker volume (local);
    `pulumi destroy` removes neither."""
    if connection.volume_root is None:
        return docker.ContainerVolumeArgs(volume_name=f"{CONTAINER_PREFIX}{name}", container_path=target, read_only=read_only)
    return docker.ContainerVolumeArgs(host_path=f"{connection.volume_root}/{name}", container_path=target, read_only=read_only)
