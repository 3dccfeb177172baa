"""Valkey: Gitea's cache, session and queue backend. Password-protected (ACL file), never published."""

from __future__ import annotations

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import CHOWN_AND_SWITCH_USER, ConfigFile, Healthcheck, SecretFile, ServiceSpec, Volume

NAME = "valkey"
PORT = 6379
UID = 999  # the image's valkey user
ACL_FILE = f"{SECRETS_DIR}/valkey.acl"
CONFIG_FILE = "/etc/valkey/forgestack.conf"
# One logical database per use, so a cache flush never touches sessions or queued work.
DATABASES = {"cache": 0, "session": 1, "queue": 2}


def connection_template(use: str, address: str = f"{NAME}:{PORT}", tls: bool = False) -> str:
    """Redis URL with the password placeholder; the deploy fills it in a secret file Gitea reads through __FILE.
    With tls (ElastiCache, topology ha): rediss:// and the password alone, as an auth token is sent (AUTH <token>)."""
    if tls:
        return f"rediss://:{{value}}@{address}/{DATABASES[use]}"
    return f"redis://default:{{value}}@{address}/{DATABASES[use]}"


def valkey_config(memory_mb: int) -> str:
    # Queues must never be evicted: refuse writes when full instead (noeviction), with headroom below the limit.
    return "\n".join([
        f"aclfile {ACL_FILE}",
        f"maxmemory {memory_mb * 3 // 4}mb",
        "maxmemory-policy noeviction",
        "appendonly yes",
        "appendfsync everysec",
        "protected-mode yes",
        "",
    ])


def valkey_spec(memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAME, image=images.VALKEY, memory_mb=memory_mb,
        config_files=(ConfigFile(CONFIG_FILE, valkey_config(memory_mb)),),
        # ACL line for the default user: every key and command, only with the generated password.
        secret_files=(SecretFile("valkeyPassword", ACL_FILE, UID, template="user default on >{value} ~* &* +@all\n"),),
        volumes=(Volume(NAME, "/data", owner=UID),),
        command=("valkey-server", CONFIG_FILE),
        capabilities=CHOWN_AND_SWITCH_USER,  # the entrypoint owns /data to valkey, then drops to it
        # Up means answering; without the password the answer is NOAUTH, which proves the ACL is loaded too.
        healthcheck=Healthcheck(("CMD-SHELL", "valkey-cli ping 2>&1 | grep -q NOAUTH"), interval="15s", start_period="10s"),
    )
