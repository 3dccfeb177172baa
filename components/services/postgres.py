"""PostgreSQL: Gitea's database. No published port; data on the data volume."""

from __future__ import annotations

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import CHOWN_AND_SWITCH_USER, Healthcheck, SecretFile, ServiceSpec, Volume
from components.settings import Settings

NAME = "postgres"
PORT = 5432
DATABASE = "gitea"
USER = "gitea"
PASSWORD_FILE = f"{SECRETS_DIR}/postgres_password"


def tuning(memory_mb: int) -> dict[str, str]:
    """Memory settings from the container's memory limit (PostgreSQL wiki's rules of thumb)."""
    return {
        "shared_buffers": f"{memory_mb // 4}MB",
        "effective_cache_size": f"{memory_mb * 3 // 4}MB",
        "maintenance_work_mem": f"{max(64, memory_mb // 16)}MB",
        "work_mem": f"{max(4, memory_mb // 64)}MB",
        "max_connections": "100",
    }


def postgres_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    command = ["postgres"]
    for parameter, value in tuning(memory_mb).items():
        command += ["-c", f"{parameter}={value}"]
    return ServiceSpec(
        name=NAME,
        image=images.postgres(settings.postgres_version),
        memory_mb=memory_mb,
        env={"POSTGRES_USER": USER, "POSTGRES_DB": DATABASE, "POSTGRES_PASSWORD_FILE": PASSWORD_FILE},
        secret_files=(SecretFile("postgresPassword", PASSWORD_FILE),),
        # From 18 on the image keeps its cluster in /var/lib/postgresql/<major>/docker: mount the parent.
        volumes=(Volume("postgres", "/var/lib/postgresql"),),
        healthcheck=Healthcheck(("CMD", "pg_isready", "-U", USER, "-d", DATABASE), interval="10s", start_period="60s"),
        command=tuple(command),
        shm_size_mb=max(128, memory_mb // 4),  # shared_buffers and parallel workers use /dev/shm
        capabilities=CHOWN_AND_SWITCH_USER,  # the entrypoint owns the cluster directory to postgres, then gosu
    )
