"""Facts that several components share. Each is defined here once and derived elsewhere."""

from typing import Final

PROJECT: Final = "forgestack"
# The services that notify through the stack's encrypted alarm topics: the topic policy and the key policy name them.
TOPIC_PUBLISHERS: Final = ("cloudwatch.amazonaws.com", "budgets.amazonaws.com")
EXPIRES_AT_TAG: Final = "expires-at"  # on every resource of an ephemeral (review) stack: when it may be destroyed
# The forge host's instance carries this tag: the deploy's key pusher (.github/actions/host-access/push-key.sh) finds it by
# it among the stack's other instances (the workspaces host, ha's ops and runner hosts).
FORGE_HOST_TAG: Final = ("forgestack:role", "forge-host")
COST_ALLOCATION_TAG: Final = "stack"  # a default tag on every AWS resource; budgets and cost reports filter on it

# Ports the host exposes. Git over SSH takes 22 when no one administers the host over SSH from outside (admin access
# goes through SSM, which reaches the host's sshd on loopback); with admin networks, 22 stays theirs and git uses 2222.
HTTP_PORT: Final = 80
HTTPS_PORT: Final = 443
ADMIN_SSH_PORT: Final = 22
GIT_SSH_ALT_PORT: Final = 2222
GIT_SSH_PORTS: Final = (ADMIN_SSH_PORT, GIT_SSH_ALT_PORT)

# Where the host mounts the separate data volume; every stateful container keeps its data below it.
DATA_MOUNT: Final = "/srv/forgestack"
# The device name the data volume is attached as (on Nitro instances it shows up as NVMe,
# found by its volume id; see files/mount-data-volume.sh).
DATA_DEVICE_NAME: Final = "/dev/sdf"

# Canonical's AWS account, the publisher of the official Ubuntu images.
CANONICAL_OWNER_ID: Final = "099720109477"
UBUNTU_RELEASE: Final = "noble"  # 24.04 LTS

# The login user of the Ubuntu image; the operator's key is installed for it.
HOST_USER: Final = "ubuntu"

# Let's Encrypt, the only CA allowed by the CAA record.
ACME_CA_DOMAIN: Final = "letsencrypt.org"

# The Docker network all containers share. Gitea trusts exactly this range as its reverse proxy.
DOCKER_NETWORK: Final = "forgestack"
DOCKER_SUBNET: Final = "172.30.0.0/24"
# CI jobs' own network: the runner (and its cache) and the job containers, nothing else. Jobs reach Gitea by its
# public URL like any client, never PostgreSQL, Valkey or the exporters on the services' network.
CI_NETWORK: Final = "forgestack-ci"
CI_SUBNET: Final = "172.30.1.0/24"
DOCKER_NETWORKS: Final = {DOCKER_NETWORK: DOCKER_SUBNET, CI_NETWORK: CI_SUBNET}
CONTAINER_PREFIX: Final = "forgestack-"

# node-exporter's textfile collector reads *.prom files here; the host's backup job writes its metrics into it.
TEXTFILE_COLLECTOR_DIR: Final = "/var/lib/forgestack/textfile"
# Operator tools installed on the host (backup.py, restore.py) live below this directory.
HOST_TOOLS_DIR: Final = "/usr/local/lib/forgestack"
# Tag that selects the data volume for Data Lifecycle Manager snapshots (value: project-stack).
SNAPSHOT_TAG_KEY: Final = "forgestack:snapshots"

# Where every container finds its secret files (uploaded 0400 by the deploy mapping).
SECRETS_DIR: Final = "/run/secrets"

# Gitea's health endpoint: 200 while Gitea and its database answer; no login. Probes, load balancers and the smoke test
# ask it (scripts/smoke.py reads it from here, where importing costs nothing).
GITEA_HEALTH_PATH: Final = "/api/healthz"
GRAFANA_PORT: Final = 3000
PRIVATE_GRAFANA_URL: Final = f"http://localhost:{GRAFANA_PORT}/"  # through an SSM port forward to the host's loopback
