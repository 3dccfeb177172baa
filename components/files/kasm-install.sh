#!/bin/bash
# Installs Kasm Workspaces (single server) from a pinned release, unattended, on the workspaces host's first boot.
# The tarball must match the pinned SHA-256 or nothing is installed; Kasm's four passwords come from the host's own
# secret through the instance role, never from user data. Run again, it does nothing for a release already installed.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: forgestack-kasm-install --release-url URL --sha256 HEX --secret-arn ARN --region REGION
                               [--swap-mib N] [--listen-port PORT] [--public-port PORT]
                               [--state-dir DIR] [--work-dir DIR]

  --release-url   https URL of kasm_release_<release>.tar.gz
  --sha256        the tarball's SHA-256 (64 hex digits); any other download is refused and deleted
  --secret-arn    the secret holding kasmAdminPassword, kasmUserPassword, kasmDatabasePassword, kasmRedisPassword
  --region        the secret's region
  --swap-mib      swap Kasm's installer makes sure exists (default 2048)
  --listen-port   Kasm's own HTTPS port; the forge's proxy connects to it (default 8443)
  --public-port   the port browsers use, set as the default zone's proxy port (default 443)
  --state-dir     where the installed release is recorded (default /var/lib/forgestack)
  --work-dir      where the tarball is unpacked (default /var/tmp/forgestack-kasm)

Exit codes: 0 installed or already installed, 1 a step failed (nothing is retried), 2 bad usage.
EOF
}

say() { echo "kasm-install: $*" >&2; }
fail() {
  say "$*"
  exit 1
}

release_url="" sha256="" secret_arn="" region=""
swap_mib=2048 listen_port=8443 public_port=443
state_dir=/var/lib/forgestack work_dir=/var/tmp/forgestack-kasm
while [ "$#" -gt 0 ]; do
  case "$1" in
    --help | -h) usage; exit 0 ;;
    --release-url) release_url="${2:-}"; shift 2 ;;
    --sha256) sha256="${2:-}"; shift 2 ;;
    --secret-arn) secret_arn="${2:-}"; shift 2 ;;
    --region) region="${2:-}"; shift 2 ;;
    --swap-mib) swap_mib="${2:-}"; shift 2 ;;
    --listen-port) listen_port="${2:-}"; shift 2 ;;
    --public-port) public_port="${2:-}"; shift 2 ;;
    --state-dir) state_dir="${2:-}"; shift 2 ;;
    --work-dir) work_dir="${2:-}"; shift 2 ;;
    *) usage >&2; say "unknown argument: $1"; exit 2 ;;
  esac
done
[[ "$release_url" =~ ^https://[^[:space:]]+/kasm_release_[0-9a-f.]+\.tar\.gz$ ]] \
  || { say "--release-url must be an https URL of kasm_release_<release>.tar.gz, got '${release_url}'"; exit 2; }
[[ "$sha256" =~ ^[0-9a-f]{64}$ ]] || { say "--sha256 must be 64 lowercase hex digits, got '${sha256}'"; exit 2; }
[[ -n "$secret_arn" && -n "$region" ]] || { say "--secret-arn and --region are required"; exit 2; }
for number in "$swap_mib" "$listen_port" "$public_port"; do
  [[ "$number" =~ ^[0-9]+$ ]] || { say "not a number: '${number}'"; exit 2; }
done

marker="${state_dir}/kasm-installed"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$release_url" ]; then
  say "$(basename "$release_url") is installed already: nothing to do"
  exit 0
fi
if [ -f "$marker" ]; then
  fail "$(cat "$marker") is installed; an upgrade to $(basename "$release_url") is a separate step (README, Workspaces)"
fi

mkdir -p "$state_dir" "$work_dir"
chmod 0700 "$work_dir"
tarball="${work_dir}/$(basename "$release_url")"

say "downloading ${release_url}"
curl --fail --silent --show-error --location --retry 5 --retry-connrefused --output "$tarball" "$release_url" \
  || fail "download of ${release_url} failed"
say "checking its SHA-256"
if ! echo "${sha256}  ${tarball}" | sha256sum --check --status; then
  actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
  rm -f "$tarball"
  fail "$(basename "$tarball") has SHA-256 ${actual}, not the pinned ${sha256}: refused and deleted, nothing installed"
fi
say "unpacking"
rm -rf "${work_dir}/kasm_release"
tar -xzf "$tarball" -C "$work_dir"
[ -f "${work_dir}/kasm_release/install.sh" ] || fail "the release holds no kasm_release/install.sh"

say "reading Kasm's passwords from the host's secret"
# NUL-separated, in this order, straight into memory: never a file, an argument of this script, or a log line.
passwords=()
while IFS= read -r -d '' value; do passwords+=("$value"); done < <(python3 - "$region" "$secret_arn" <<'PYTHON'
import json
import sys

import boto3

region, secret_arn = sys.argv[1], sys.argv[2]
try:
    secret = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_arn)
    document = json.loads(secret["SecretString"])
except Exception as error:  # one line for the log, never a traceback
    sys.exit(f"kasm-install: cannot read {secret_arn}: {type(error).__name__}: {error}")
for key in ("kasmAdminPassword", "kasmUserPassword", "kasmDatabasePassword", "kasmRedisPassword"):
    if not document.get(key):
        sys.exit(f"kasm-install: the secret has no {key}")
    sys.stdout.write(document[key] + "\0")
PYTHON
)
[ "${#passwords[@]}" -eq 4 ] || fail "could not read Kasm's four passwords from ${secret_arn}"

# Kasm's installer takes the passwords only as arguments and prints the logins at its end: its output goes to a
# root-only log, never to cloud-init's.
log="${state_dir}/kasm-install.log"
install -m 0600 /dev/null "$log"
say "running Kasm's installer (several minutes; output in ${log}, root only)"
bash "${work_dir}/kasm_release/install.sh" --accept-eula --proxy-port "$listen_port" --swap-size "$swap_mib" \
  --admin-password "${passwords[0]}" --user-password "${passwords[1]}" \
  --db-password "${passwords[2]}" --redis-password "${passwords[3]}" >>"$log" 2>&1 \
  || fail "Kasm's installer failed: see ${log}"

# Behind the forge's proxy browsers connect on the public port, to whatever name they used: the zone says so.
say "setting the default zone for the reverse proxy (port ${public_port})"
docker exec kasm_db psql -U kasmapp -d kasm -v ON_ERROR_STOP=1 -q -c \
  "UPDATE zones SET proxy_port = ${public_port}, proxy_hostname = '\$request_host\$' WHERE zone_name = 'default';" \
  || fail "could not update Kasm's default zone"

echo "$release_url" >"$marker"
rm -rf "${work_dir:?}/kasm_release" "$tarball"
say "$(basename "$release_url") installed; Kasm listens on ${listen_port}"
