"""The local stack's backup store: MinIO, an S3 API on the laptop, so backup.py and restore.py run there unchanged
(scripts/local_backup.py points them at it). AWS stacks keep their backups in S3 itself."""

from __future__ import annotations

from typing import Final

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import Healthcheck, PublishedPort, SecretFile, ServiceSpec, Volume

NAME: Final = "minio"
PORT: Final = 9000
BUCKET: Final = "forgestack-backups"
ROOT_USER: Final = "forgestack"  # a name, not a secret; the password is generated (credentials)
PASSWORD_CREDENTIAL: Final = "minioRootPassword"  # noqa: S105 (the credential's key, not its value)
PASSWORD_FILE: Final = f"{SECRETS_DIR}/minio_root_password"
REGION: Final = "us-east-1"  # MinIO's default region name; clients must sign for it


def minio_spec(memory_mb: int) -> ServiceSpec:
    """S3 on 127.0.0.1:9000 only (the local stack binds every port to loopback); the console is off."""
    return ServiceSpec(
        name=NAME, image=images.MINIO, memory_mb=memory_mb,
        env={"MINIO_ROOT_USER": ROOT_USER, "MINIO_ROOT_PASSWORD_FILE": PASSWORD_FILE, "MINIO_BROWSER": "off"},
        secret_files=(SecretFile(PASSWORD_CREDENTIAL, PASSWORD_FILE),),
        volumes=(Volume(NAME, "/data"),),
        ports=(PublishedPort(PORT, PORT),),
        command=("server", "/data", "--address", f":{PORT}"),
        healthcheck=Healthcheck(("CMD", "mc", "ready", "local"), interval="15s", start_period="10s"),
    )
