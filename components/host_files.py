"""Files and units the host runs besides Docker, shipped over the deploy's command path. Pure functions.

cloud-init runs once per instance: a file it wrote never changes again, and a changed user data only stops and
starts the instance (the instance ignores user-data drift for that reason). Everything that may change with a
deploy (the backup scripts and units, Docker's mount dependency, the image prune timer) is therefore packed
into one deterministic tar.gz here and unpacked on the host by a Pulumi command after the host is ready;
a change of any file changes the bundle's digest and so runs the install again.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass

from components.backup_job import (
    DRILL_UNIT,
    REPO_HOST_TOOLS,
    TIMEOUT_HOURS,
    UNIT_NAME,
    BackupJob,
    calendar_timer,
    drill_service_unit,
    drill_timer_unit,
    host_scripts,
    service_unit,
    timer_unit,
)
from components.constants import DATA_MOUNT, HOST_TOOLS_DIR, TEXTFILE_COLLECTOR_DIR
from components.templates import read

SYSTEMD_DIR = "/etc/systemd/system"
# Docker starts only once the data volume is mounted: without it, a boot where the volume comes late (it is
# `nofail` in fstab) would start PostgreSQL on an empty directory of the root disk and initdb a new cluster.
DOCKER_DROP_IN = f"{SYSTEMD_DIR}/docker.service.d/forgestack-data-volume.conf"
PRUNE_UNIT = "forgestack-docker-prune"
# Images unused by any container (running or stopped) for a week go; CI job images are the usual bulk. Stopped
# containers are kept (an operator may have stopped Gitea for a restore), so their images are too.
PRUNE_UNUSED_FOR = "168h"
REBOOT_UNIT = "forgestack-reboot-window"
REBOOT_SCRIPT = "/usr/local/sbin/forgestack-reboot-if-required"
UNATTENDED_UPGRADES_CONFIG = "/etc/apt/apt.conf.d/52forgestack-unattended-upgrades"
HEARTBEAT_UNIT = "forgestack-heartbeat"
HEARTBEAT_SCRIPT = f"{HOST_TOOLS_DIR}/host_tools/heartbeat.py"
# Git over SSH on the host's port 22 (settings.host_sshd_loopback_only): the host's own sshd keeps port 22 on loopback
# only, where SSM's AWS-StartSSHSession (the deploy's and the operator's path) reaches it, and the Gitea container
# publishes 22 on the private address. Ubuntu 24.04 socket-activates sshd: its generator turns ListenAddress into the
# ssh.socket addresses, and the socket drop-in says the same where the generator is absent.
SSHD_LOOPBACK_CONFIG = "/etc/ssh/sshd_config.d/60-forgestack-loopback.conf"
SSH_SOCKET_DROP_IN = f"{SYSTEMD_DIR}/ssh.socket.d/60-forgestack-loopback.conf"
SSHD_LOOPBACK_FILES = (SSHD_LOOPBACK_CONFIG, SSH_SOCKET_DROP_IN)
BUNDLE_MTIME = 1_700_000_000  # fixed, so the same files always make the same bytes (no diff without a change)


@dataclass(frozen=True)
class HostFile:
    path: str  # absolute path on the host
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Heartbeat:
    """The host's minute-by-minute CloudWatch heartbeat (components/alarms.py alarms when it stops)."""

    stack: str
    region: str
    namespace: str
    metric: str
    alertmanager_container: str = ""  # empty: monitoring is off, Docker answering is the whole check
    watchdog: str = ""  # the always-firing alert's name (monitoring.WATCHDOG), with alertmanager_container

    @property
    def argv(self) -> list[str]:
        argv = ["/usr/bin/python3", HEARTBEAT_SCRIPT, "--stack", self.stack, "--namespace", self.namespace, "--metric", self.metric]
        if self.alertmanager_container:
            argv += ["--alertmanager-container", self.alertmanager_container, "--watchdog", self.watchdog]
        return argv


@dataclass(frozen=True)
class HostBundle:
    """What the install command needs: the files as base64 tar.gz (its stdin), their digest, the units to enable."""

    stdin: str
    digest: str
    timers: tuple[str, ...]
    sshd_loopback: bool = False

    def install_argv(self) -> list[str]:
        """Run on the host as the login user (sudo): unpack over /, reload systemd, (re)start the timers, and move the
        host's sshd to loopback (or back to every address). The running session survives: sshd's sessions are its
        children (KillMode=process), and SSM reaches loopback before and after."""
        files = " ".join(SSHD_LOOPBACK_FILES)
        # sshd restarts only when its listening addresses change: with loopback-only on every install (idempotent), and
        # without it only when an earlier deploy's two files are still there to remove.
        restart_sshd = ("sudo sshd -t && sudo systemctl daemon-reload && if systemctl is-enabled --quiet ssh.socket; "
                        "then sudo systemctl restart ssh.socket; else sudo systemctl restart ssh; fi")
        back_to_every_address = (f"if [ -e {SSHD_LOOPBACK_CONFIG} ] || [ -e {SSH_SOCKET_DROP_IN} ]; "
                                 f"then sudo rm -f {files} && {restart_sshd}; fi")
        steps = [
            "base64 -d | sudo tar -xzf - -C / --no-same-owner",
            shlex.join(["sudo", "install", "-d", "-m", "0755", TEXTFILE_COLLECTOR_DIR]),
            restart_sshd if self.sshd_loopback else back_to_every_address,  # sshd -t first: a broken config restarts nothing
            "sudo systemctl daemon-reload",
            shlex.join(["sudo", "systemctl", "enable", "--now", *self.timers]),
            f"echo 'host files installed ({self.digest[:12]})' >&2",
        ]
        return ["sh", "-c", "set -e; " + " && ".join(steps)]


def docker_drop_in() -> str:
    return f"""[Unit]
# forgestack: the containers' data lives on the data volume; never start Docker without it.
RequiresMountsFor={DATA_MOUNT}
"""


def prune_service() -> str:
    return f"""[Unit]
Description=forgestack: remove Docker images no container has used for {PRUNE_UNUSED_FOR}
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
ExecStart=/usr/bin/docker image prune --all --force --filter until={PRUNE_UNUSED_FOR}
Nice=10
"""


def prune_timer() -> str:
    return calendar_timer("forgestack: prune unused Docker images daily (the root volume holds Docker's storage)",
                          "*-*-* 04:41:00", "10min")


def heartbeat_service(heartbeat: Heartbeat) -> str:
    return f"""[Unit]
Description=forgestack heartbeat to CloudWatch while Docker and the alert pipeline work
Documentation=file://{HEARTBEAT_SCRIPT}
After=docker.service

[Service]
Type=oneshot
Environment=AWS_DEFAULT_REGION={heartbeat.region}
ExecStart={shlex.join(heartbeat.argv)}
TimeoutStartSec=50s
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
"""


def heartbeat_timer() -> str:
    return """[Unit]
Description=forgestack heartbeat every minute (a CloudWatch alarm fires when it stops)

[Timer]
OnCalendar=minutely
AccuracySec=5s

[Install]
WantedBy=timers.target
"""


def unattended_upgrades_config() -> str:
    """Ubuntu's security updates every day (unattended-upgrades is part of the image), never an automatic reboot: the
    reboot window decides, after a backup."""
    return """// forgestack: security updates install daily; forgestack-reboot-window.timer reboots when one asks for it.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
Unattended-Upgrade::Automatic-Reboot "false";
Unattended-Upgrade::Remove-Unused-Kernel-Packages "true";
"""


def reboot_service() -> str:
    return f"""[Unit]
Description=forgestack: reboot for an installed update, after a backup, when one asks for it
After=docker.service

[Service]
Type=oneshot
Environment=BACKUP_UNIT={UNIT_NAME}.service
ExecStart={REBOOT_SCRIPT}
TimeoutStartSec={TIMEOUT_HOURS}h
"""


def reboot_timer(window: str) -> str:
    # Not Persistent: a missed window waits for the next one rather than rebooting right after a boot.
    return f"""[Unit]
Description=forgestack reboot window ({window} UTC): reboot only if an update requires it, after a backup

[Timer]
OnCalendar={window}
AccuracySec=1min

[Install]
WantedBy=timers.target
"""


def sshd_loopback_config() -> str:
    return """# forgestack: git over SSH holds port 22 on the host's address; this sshd answers on loopback only (SSM).
ListenAddress 127.0.0.1
ListenAddress ::1
"""


def ssh_socket_drop_in() -> str:
    return f"""[Socket]
# forgestack: loopback only, as {SSHD_LOOPBACK_CONFIG} says (the empty line resets Ubuntu's ListenStream=22).
ListenStream=
ListenStream=127.0.0.1:22
ListenStream=[::1]:22
"""


def host_files(job: BackupJob | None, heartbeat: Heartbeat | None = None, sshd_loopback: bool = False,
               reboot_window: str = "") -> tuple[HostFile, ...]:
    files = [
        HostFile(DOCKER_DROP_IN, docker_drop_in()),
        HostFile(f"{SYSTEMD_DIR}/{PRUNE_UNIT}.service", prune_service()),
        HostFile(f"{SYSTEMD_DIR}/{PRUNE_UNIT}.timer", prune_timer()),
    ]
    if sshd_loopback:
        files += [HostFile(SSHD_LOOPBACK_CONFIG, sshd_loopback_config()), HostFile(SSH_SOCKET_DROP_IN, ssh_socket_drop_in())]
    if job is not None:
        files += [HostFile(path, content, 0o755) for path, content in sorted(host_scripts().items())]
        files += [HostFile(f"{SYSTEMD_DIR}/{UNIT_NAME}.service", service_unit(job)),
                  HostFile(f"{SYSTEMD_DIR}/{UNIT_NAME}.timer", timer_unit(job)),
                  HostFile(f"{SYSTEMD_DIR}/{DRILL_UNIT}.service", drill_service_unit(job)),
                  HostFile(f"{SYSTEMD_DIR}/{DRILL_UNIT}.timer", drill_timer_unit()),
                  HostFile(UNATTENDED_UPGRADES_CONFIG, unattended_upgrades_config())]
        if reboot_window:  # the reboot backs up first: only where the host backs up
            files += [HostFile(REBOOT_SCRIPT, read("reboot-if-required.sh"), 0o755),
                      HostFile(f"{SYSTEMD_DIR}/{REBOOT_UNIT}.service", reboot_service()),
                      HostFile(f"{SYSTEMD_DIR}/{REBOOT_UNIT}.timer", reboot_timer(reboot_window))]
    if heartbeat is not None:
        files += [HostFile(HEARTBEAT_SCRIPT, (REPO_HOST_TOOLS / "heartbeat.py").read_text(), 0o755),
                  HostFile(f"{SYSTEMD_DIR}/{HEARTBEAT_UNIT}.service", heartbeat_service(heartbeat)),
                  HostFile(f"{SYSTEMD_DIR}/{HEARTBEAT_UNIT}.timer", heartbeat_timer())]
    return tuple(files)


def timers(job: BackupJob | None, heartbeat: Heartbeat | None = None, reboot_window: str = "") -> tuple[str, ...]:
    return (f"{PRUNE_UNIT}.timer", *((f"{UNIT_NAME}.timer", f"{DRILL_UNIT}.timer") if job is not None else ()),
            *((f"{REBOOT_UNIT}.timer",) if job is not None and reboot_window else ()),
            *((f"{HEARTBEAT_UNIT}.timer",) if heartbeat is not None else ()))


def pack(files: tuple[HostFile, ...]) -> bytes:
    """A tar.gz of the files (paths relative to /, owned by root, fixed mtime), the same bytes for the same files."""
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths) or not all(p.startswith("/") and ".." not in p.split("/") for p in paths):
        raise ValueError(f"host files need distinct absolute paths without '..': {paths}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for file in sorted(files, key=lambda f: f.path):
            data = file.content.encode()
            info = tarfile.TarInfo(file.path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), file.mode, BUNDLE_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def encode(files: tuple[HostFile, ...]) -> tuple[str, str]:
    """(base64 of pack(files), its sha256): what travels to a host and what it checks there."""
    packed = pack(files)
    return base64.b64encode(packed).decode(), hashlib.sha256(packed).hexdigest()


def host_bundle(job: BackupJob | None, heartbeat: Heartbeat | None = None, sshd_loopback: bool = False,
                reboot_window: str = "") -> HostBundle:
    stdin, digest = encode(host_files(job, heartbeat, sshd_loopback, reboot_window))
    return HostBundle(stdin=stdin, digest=digest, timers=timers(job, heartbeat, reboot_window), sshd_loopback=sshd_loopback)


def install_lines(files: tuple[HostFile, ...], target: str) -> list[str]:
    """Shell lines that put exactly these files into target: unpacked into a fresh directory, checked against the
    bundle's sha256, then swapped in, so a failed run leaves the previous files in place."""
    encoded, digest = encode(files)
    staging = f"{target}.new"
    return [
        f"rm -rf {staging} && mkdir -p {staging}",
        f"printf '%s' '{encoded}' | base64 -d > {staging}.tar.gz",
        f"echo '{digest}  {staging}.tar.gz' | sha256sum -c --quiet",
        f"tar -xzf {staging}.tar.gz -C {staging} --no-same-owner && rm {staging}.tar.gz",
        f"rm -rf {target}.old && if [ -d {target} ]; then mv {target} {target}.old; fi",
        f"mv {staging} {target} && rm -rf {target}.old",
        f"echo 'forgestack: {len(files)} files installed in {target} ({digest[:12]})'",
    ]
