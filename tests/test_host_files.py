"""Host files ship over the deploy's command path: a deterministic bundle, unpacked by the real tar, valid units,
installed before the backup that needs them, and re-run exactly when a file changes (never a host stop/start)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.backup_job import UNIT_NAME, BackupJob
from components.constants import DATA_MOUNT
from components.host import decode_user_data
from components.host_files import (
    DOCKER_DROP_IN,
    PRUNE_UNIT,
    SSH_SOCKET_DROP_IN,
    SSHD_LOOPBACK_CONFIG,
    SSHD_LOOPBACK_FILES,
    host_bundle,
    host_files,
    pack,
    sshd_loopback_config,
)
from components.services.deploy import host_ready_command, local_connection
from rehearsal.engine import ProgramRun, run_program, stack_config
from tests.backup_support import unpack_bundle
from tests.shims import install_shim

SSHD = "/usr/sbin/sshd"
JOB = BackupJob(bucket="forge-backups-1a2b", region="eu-west-1", interval_hours=1, postgres_container="forgestack-postgres",
                paths=(f"{DATA_MOUNT}/gitea",))


def test_the_bundle_unpacks_to_exactly_its_files_with_their_modes(tmp_path: Path) -> None:
    unpacked = unpack_bundle(host_bundle(JOB).stdin, tmp_path)
    assert unpacked == {f.path: f.content for f in host_files(JOB)}
    for file in host_files(JOB):
        assert (tmp_path / file.path.lstrip("/")).stat().st_mode & 0o777 == file.mode, file.path
    assert os.access(tmp_path / "usr/local/lib/forgestack/host_tools/restore.py", os.X_OK)


def test_the_same_files_make_the_same_bundle_and_a_change_a_new_digest() -> None:
    """Stable bytes: an unchanged deploy shows no diff; a changed unit changes the trigger, so the install runs again."""
    assert host_bundle(JOB) == host_bundle(JOB)
    assert host_bundle(JOB).digest != host_bundle(BackupJob(**{**JOB.__dict__, "interval_hours": 2})).digest


def test_a_bundle_refuses_paths_that_climb_out_or_repeat() -> None:
    (first, *_) = host_files(JOB)
    for bad in ([first, first], [type(first)("/etc/../root/x", "")], [type(first)("relative/x", "")]):
        with pytest.raises(ValueError, match="distinct absolute paths"):
            pack(tuple(bad))


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_prune_units_and_the_docker_drop_in(tmp_path: Path) -> None:
    unpacked = unpack_bundle(host_bundle(None).stdin, tmp_path)
    units = tmp_path / "etc/systemd/system"
    # A stand-in docker.service next to the drop-in, so that systemd parses the drop-in as docker's; and a stand-in
    # docker binary (verify checks that ExecStart exists; this machine has no Docker).
    (units / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    shim = install_shim(tmp_path, "docker", "#!/bin/sh\n")
    prune = units / f"{PRUNE_UNIT}.service"
    prune.write_text(prune.read_text().replace("ExecStart=/usr/bin/docker ", f"ExecStart={shim} "))
    verify = ["systemd-analyze", "verify", "--man=no", str(units / f"{PRUNE_UNIT}.timer"), str(units / f"{PRUNE_UNIT}.service"),
              str(units / "docker.service")]
    result = subprocess.run(verify, capture_output=True, text=True, check=False, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert result.returncode == 0, result.stderr
    assert f"RequiresMountsFor={DATA_MOUNT}" in unpacked[DOCKER_DROP_IN]
    assert "--filter until=" in unpacked[f"/etc/systemd/system/{PRUNE_UNIT}.service"]
    assert "system prune" not in unpacked[f"/etc/systemd/system/{PRUNE_UNIT}.service"]  # stopped containers stay


def test_the_install_runs_after_the_host_is_ready_and_before_the_backup_and_every_container(aws_run: ProgramRun) -> None:
    ready = aws_run.one("command:local:Command", "services-host-ready")
    install = aws_run.one("command:local:Command", "services-host-files")
    backup = aws_run.one("command:local:Command", "services-pre-upgrade-backup")
    assert ready.urn in install.depends_on and install.urn in backup.depends_on
    for container in aws_run.of_type("docker:index/container:Container"):
        assert install.urn in container.depends_on, container.name
    assert install.inputs["create"].startswith("ssh ")  # on the host, through the same path as the Docker provider
    assert f"enable --now {PRUNE_UNIT}.timer {UNIT_NAME}.timer" in install.inputs["create"]


def test_a_changed_interval_reruns_the_install_but_leaves_the_user_data_alone() -> None:
    def facts(interval: int) -> tuple[list[str], str]:
        run = run_program("dev", stack_config("dev", {"forgestack:backupIntervalHours": interval}))
        user_data = decode_user_data(run.one("aws:ec2/instance:Instance").inputs["userDataBase64"])
        return (list(run.one("command:local:Command", "services-host-files").inputs["triggers"]),
                user_data.replace(run.one("aws:ebs/volume:Volume").id, "<volume id>"))  # the mocks' ids differ per run

    (triggers_24, user_data_24), (triggers_12, user_data_12) = facts(24), facts(12)
    assert triggers_24 != triggers_12
    assert user_data_24 == user_data_12


def test_the_local_stack_installs_nothing_on_a_host(local_run: ProgramRun) -> None:
    assert not [c for c in local_run.of_type("command:local:Command") if c.name == "services-host-files"]


@pytest.mark.parametrize(("cloud_init_exit", "ready"), [(0, True), (2, True), (1, False)])
def test_host_ready_accepts_a_degraded_cloud_init_but_not_a_failed_one(tmp_path: Path, cloud_init_exit: int, ready: bool) -> None:
    """`cloud-init status --wait` exits 2 for "done with recoverable errors": the probe goes on (and says so)."""
    for tool, body in (("cloud-init", f'[ "$2" = --long ] && echo "status: degraded"; exit {cloud_init_exit}'), ("docker", "exit 0"),
                       ("seq", "echo 1"), ("sleep", "exit 0")):
        install_shim(tmp_path, tool, f"#!/bin/sh\n{body}\n")
    result = subprocess.run(["sh", "-c", host_ready_command(local_connection())], capture_output=True, text=True, check=False,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (result.returncode == 0) is ready, result.stderr
    assert ("degraded" in result.stderr) is (cloud_init_exit == 2)


# ------------------------------------------------------------ git over SSH on 22: the host's sshd on loopback


def test_loopback_sshd_files_ship_only_when_git_holds_22_and_are_removed_otherwise(tmp_path: Path) -> None:
    loopback = host_bundle(JOB, sshd_loopback=True)
    unpacked = unpack_bundle(loopback.stdin, tmp_path)
    assert unpacked[SSHD_LOOPBACK_CONFIG] == sshd_loopback_config()
    assert "ListenStream=\nListenStream=127.0.0.1:22\nListenStream=[::1]:22\n" in unpacked[SSH_SOCKET_DROP_IN]
    script = loopback.install_argv()[2]
    assert "rm -f" not in script and script.index("tar -xzf") < script.index("sudo sshd -t") < script.index("restart ssh.socket")
    plain = host_bundle(JOB)
    assert not set(SSHD_LOOPBACK_FILES) & {f.path for f in host_files(JOB)}
    assert (f"if [ -e {SSHD_LOOPBACK_CONFIG} ] || [ -e {SSH_SOCKET_DROP_IN} ]; then sudo rm -f {SSHD_LOOPBACK_CONFIG} "
            f"{SSH_SOCKET_DROP_IN} && sudo sshd -t") in plain.install_argv()[2]
    assert plain.digest != loopback.digest  # switching either way reruns the install


@pytest.mark.parametrize(("leftover", "restarted"), [(False, False), (True, True)])
def test_without_git_on_22_sshd_restarts_only_to_drop_an_earlier_loopback(tmp_path: Path, leftover: bool, restarted: bool) -> None:
    """The install script run by sh with sudo, sshd and systemctl as recording stand-ins and the files under a fake
    root: nothing restarts unless an earlier deploy's loopback files are there, which are then removed."""
    bin_dir, root, log = tmp_path / "bin", tmp_path / "root", tmp_path / "calls"
    for tool in ("sshd", "systemctl", "install", "tar", "base64"):
        install_shim(bin_dir, tool, f'#!/bin/sh\necho "{tool} $*" >> {log}\n[ "$1" = is-enabled ] && exit 0\nexit 0\n')
    # sudo runs its command with the paths rebased under the fake root.
    install_shim(bin_dir, "sudo", f'#!/bin/sh\nif [ "$1" = rm ]; then shift 2; for f in "$@"; do rm -f "{root}$f"; done; '
                                  f'echo "rm $*" >> {log}; exit 0; fi\nexec "$@"\n')
    script = host_bundle(JOB).install_argv()[2].replace("[ -e /", f"[ -e {root}/")
    if leftover:
        for path in SSHD_LOOPBACK_FILES:
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text("old")
    result = subprocess.run(["sh", "-c", script], input="", capture_output=True, text=True, check=False,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert ("systemctl restart ssh.socket" in calls) is restarted
    assert not any((root / path.lstrip("/")).exists() for path in SSHD_LOOPBACK_FILES)


def test_shellcheck_accepts_the_install_script() -> None:
    for bundle in (host_bundle(JOB), host_bundle(JOB, sshd_loopback=True)):
        checked = subprocess.run(["shellcheck", "-s", "sh", "-"], input=bundle.install_argv()[2], capture_output=True, text=True,
                                 check=False)
        assert checked.returncode == 0, checked.stdout


def _non_loopback_ipv4() -> str:
    for address in subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split():
        if "." in address and not address.startswith("127."):
            return address
    return ""


def _listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) == 0


def _bind(address: str, port: int) -> socket.socket:
    """What docker-proxy does for a published port: SO_REUSEADDR, bind, listen."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen()
    return server


@contextlib.contextmanager
def _real_sshd(tmp_path: Path, port: int, loopback: bool) -> Iterator[None]:
    """Debian's sshd with the rendered sshd_config.d snippet (or none), on a free high port instead of 22."""
    tmp_path.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")], check=True)
    (tmp_path / "sshd_config.d").mkdir()
    if loopback:
        (tmp_path / "sshd_config.d" / "60-forgestack-loopback.conf").write_text(sshd_loopback_config())
    config = tmp_path / "sshd_config"
    config.write_text(f"Include {tmp_path}/sshd_config.d/*.conf\nPort {port}\nHostKey {tmp_path}/host_key\n"
                      f"PidFile {tmp_path}/sshd.pid\nUsePAM no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not _listening("127.0.0.1", port):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.validator
def test_a_loopback_sshd_leaves_the_hosts_address_to_the_git_container(tmp_path: Path) -> None:
    """The real sshd with the shipped snippet answers on loopback only, so a published port on the host's own address
    (Gitea's 22) can bind beside it; a port on every interface could not (why git binds the private address)."""
    if not (Path(SSHD).exists() and os.geteuid() == 0 and _non_loopback_ipv4()):
        message = "needs root, Debian's openssh-server and a non-loopback IPv4 address (.ci/run installs sshd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    private = _non_loopback_ipv4()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with _real_sshd(tmp_path / "loopback", port, loopback=True):
        assert _listening("127.0.0.1", port)  # SSM's AWS-StartSSHSession still reaches sshd
        assert not _listening(private, port)  # the world does not
        with _bind(private, port) as beside:  # the git container's published port beside it
            assert beside.getsockname() == (private, port)
        with pytest.raises(OSError, match="Address already in use"):
            _bind("0.0.0.0", port)
    with _real_sshd(tmp_path / "default", port, loopback=False):  # without the snippet: the collision git on 22 would hit
        assert _listening(private, port)
        with pytest.raises(OSError, match="Address already in use"):
            _bind(private, port)


# ------------------------------------------------------------ security updates and the reboot window

REBOOT_SCRIPT = Path(__file__).resolve().parent.parent / "components" / "files" / "reboot-if-required.sh"


def run_reboot_script(tmp_path: Path, required: bool, backup_ok: bool) -> tuple[int, list[str], str]:
    """The host's script with systemctl played by a shim that records its calls (and fails the backup on request)."""
    calls = tmp_path / "calls"
    failing = "exit 3" if not backup_ok else "exit 0"
    install_shim(tmp_path / "bin", "systemctl", f'#!/bin/sh\necho "$*" >> {calls}\nif [ "$1" = start ]; then {failing}; fi\n')
    marker = tmp_path / "reboot-required"
    if required:
        marker.write_text("*** System restart required ***\n")
        (tmp_path / "reboot-required.pkgs").write_text("linux-image-6.8.0-90-generic\nlibc6\n")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "REBOOT_REQUIRED": str(marker), "BACKUP_UNIT": f"{UNIT_NAME}.service"}
    result = subprocess.run(["sh", str(REBOOT_SCRIPT)], capture_output=True, text=True, check=False, env=env)
    return result.returncode, calls.read_text().splitlines() if calls.exists() else [], result.stdout + result.stderr


@pytest.mark.parametrize(("required", "backup_ok", "code", "calls"), [
    (False, True, 0, []),  # nothing asks for a reboot: nothing happens
    (True, False, 1, ["start forgestack-backup.service"]),  # the backup failed: no reboot
    (True, True, 0, ["start forgestack-backup.service", "reboot"]),  # backed up, then rebooted
])  # fmt: skip
def test_the_host_reboots_only_when_an_update_asks_and_only_after_a_good_backup(
    tmp_path: Path, required: bool, backup_ok: bool, code: int, calls: list[str]
) -> None:
    returned, made, output = run_reboot_script(tmp_path, required, backup_ok)
    assert (returned, made) == (code, calls), output
    if required:
        assert "linux-image-6.8.0-90-generic libc6" in output  # the log names what asked for it


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_reboot_window_units_and_the_windows_calendar(tmp_path: Path) -> None:
    from components.host_files import REBOOT_UNIT, UNATTENDED_UPGRADES_CONFIG, timers

    window = parse_settings_window()
    unpacked = unpack_bundle(host_bundle(JOB, reboot_window=window).stdin, tmp_path)
    assert f"{REBOOT_UNIT}.timer" in timers(JOB, reboot_window=window) and f"{REBOOT_UNIT}.timer" not in timers(JOB)
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in unpacked[UNATTENDED_UPGRADES_CONFIG]
    (tmp_path / "none").mkdir()
    assert f"{REBOOT_UNIT}.service" not in {Path(path).name for path in unpack_bundle(host_bundle(JOB).stdin, tmp_path / "none")}
    units = tmp_path / "etc/systemd/system"
    (units / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    script = install_shim(tmp_path / "sbin", "forgestack-reboot-if-required", "#!/bin/sh\n")
    service = units / f"{REBOOT_UNIT}.service"
    service.write_text(service.read_text().replace("ExecStart=/usr/local/sbin/forgestack-reboot-if-required", f"ExecStart={script}"))
    timer = units / f"{REBOOT_UNIT}.timer"
    assert f"OnCalendar={window}" in timer.read_text() and "Persistent" not in timer.read_text()  # a missed window waits
    assert f"Environment=BACKUP_UNIT={UNIT_NAME}.service" in service.read_text()  # what the script backs up first
    verify = ["systemd-analyze", "verify", "--man=no", str(timer), str(service), str(units / "docker.service")]
    result = subprocess.run(verify, capture_output=True, text=True, check=False, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert result.returncode == 0, result.stderr
    for calendar in (window, "Mon,Thu *-*-* 02:00:00", "*-*-* 23:59"):  # the shapes the setting accepts
        parsed = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, parsed.stderr


def parse_settings_window() -> str:
    from components.settings import parse

    return parse(stack_config("prod"), stack="prod").reboot_window
