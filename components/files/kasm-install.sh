#!/bin/bash
# Installs Kasm Workspaces (single server) from a pinned release, unattended, on the workspaces host's first boot; with
# --upgrade (run by the deploy through SSM whenever workspacesRelease changes) moves an installed Kasm to that release,
# after a backup of its database. The tarball must match the pinned SHA-256 or nothing is installed or upgraded; Kasm's
# four passwords come from the host's own secret through the instance role, never from user data. Run again, it does
# nothing for a release already installed. One run at a time (a lock): the first boot and the deploy never overlap.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: forgestack-kasm-install --release-url URL --sha256 HEX --secret-arn ARN --region REGION
                               [--swap-mib N] [--listen-port PORT] [--public-port PORT]
                               [--state-dir DIR] [--work-dir DIR] [--upgrade --backup-unit UNIT]

  --release-url   https URL of kasm_release_<release>.tar.gz
  --sha256        the tarball's SHA-256 (64 hex digits); any other download is refused and deleted
  --secret-arn    the secret holding kasmAdminPassword, kasmUserPassword, kasmDatabasePassword, kasmRedisPassword
  --region        the secret's region
  --swap-mib      swap Kasm's installer makes sure exists (default 2048)
  --listen-port   Kasm's own HTTPS port; the forge's proxy connects to it (default 8443)
  --public-port   the port browsers use, set as the default zone's proxy port (default 443)
  --state-dir     where the installed release is recorded (default /var/lib/forgestack)
  --work-dir      where the tarball is unpacked (default /var/tmp/forgestack-kasm)
  --upgrade       move an installed older release to this one with Kasm's upgrade.sh (never a downgrade); without
                  an installed Kasm it does nothing (the first boot installs)
  --backup-unit   with --upgrade: the systemd unit backing up Kasm's database, run first; if it fails nothing changes

Exit codes: 0 installed, upgraded or nothing to do, 1 a step failed (nothing is retried), 2 bad usage.
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
upgrade=false backup_unit=""
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
    --upgrade) upgrade=true; shift ;;
    --backup-unit) backup_unit="${2:-}"; shift 2 ;;
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
if [ "$upgrade" = true ] && ! [[ "$backup_unit" =~ ^[A-Za-z0-9@_.-]+\.service$ ]]; then
  say "--upgrade needs --backup-unit <name>.service (no upgrade without a backup first), got '${backup_unit}'"
  exit 2
fi

mkdir -p "$state_dir" "$work_dir"
chmod 0700 "$work_dir"
# The first boot (cloud-init) and the deploy (SSM) may start together: the second waits, then sees what the first did.
exec 9>>"${state_dir}/kasm-install.lock"
flock 9

# 1.18.0 of kasm_release_1.18.0.09f70a.tar.gz
version_of() { basename "$1" | sed -E 's/^kasm_release_([0-9]+\.[0-9]+\.[0-9]+).*$/\1/'; }

marker="${state_dir}/kasm-installed"
installed=""
[ -f "$marker" ] && installed="$(cat "$marker")"
if [ "$installed" = "$release_url" ]; then
  say "$(basename "$release_url") is installed already: nothing to do"
  exit 0
fi
if [ "$upgrade" = true ] && [ -z "$installed" ]; then
  say "Kasm is not installed yet (the first boot installs $(basename "$release_url")): nothing to upgrade"
  exit 0
fi
if [ -n "$installed" ] && [ "$upgrade" != true ]; then
  fail "$(basename "$installed") is installed; moving to $(basename "$release_url") is an upgrade (--upgrade, run by the deploy)"
fi
if [ -n "$installed" ]; then
  from="$(version_of "$installed")" to="$(version_of "$release_url")"
  if [ "$(printf '%s\n%s\n' "$from" "$to" | sort -V | tail -n 1)" != "$to" ]; then
    fail "$(basename "$installed") is installed and $(basename "$release_url") is older: Kasm has no downgrade (restore the backup taken before the upgrade on a host of that release instead)"
  fi
fi

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

log="${state_dir}/kasm-install.log"
[ -f "$log" ] || install -m 0600 /dev/null "$log"

set_zone() {
  # Behind the forge's proxy browsers connect on the public port, to whatever name they used: the zone says so.
  say "setting the default zone for the reverse proxy (port ${public_port})"
  docker exec kasm_db psql -U kasmapp -d kasm -v ON_ERROR_STOP=1 -q -c \
    "UPDATE zones SET proxy_port = ${public_port}, proxy_hostname = '\$request_host\$' WHERE zone_name = 'default';" \
    || fail "could not update Kasm's default zone"
}

if [ -n "$installed" ]; then
  [ -f "${work_dir}/kasm_release/upgrade.sh" ] || fail "the release holds no kasm_release/upgrade.sh"
  say "backing up Kasm's database first (${backup_unit})"
  systemctl start "$backup_unit" || fail "the backup before the upgrade failed (journalctl -u ${backup_unit}): nothing upgraded"
  say "upgrading $(basename "$installed") to $(basename "$release_url") with Kasm's upgrade.sh (several minutes; output in ${log})"
  bash "${work_dir}/kasm_release/upgrade.sh" --proxy-port "$listen_port" >>"$log" 2>&1 \
    || fail "Kasm's upgrade failed: see ${log}; the backup taken just before is the way back"
  set_zone
  echo "$release_url" >"$marker"
  rm -rf "${work_dir:?}/kasm_release" "$tarball"
  say "upgraded to $(basename "$release_url"); Kasm listens on ${listen_port}"
  exit 0
fi
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
say "running Kasm's installer (several minutes; output in ${log}, root only)"
bash "${work_dir}/kasm_release/install.sh" --accept-eula --proxy-port "$listen_port" --swap-size "$swap_mib" \
  --admin-password "${passwords[0]}" --user-password "${passwords[1]}" \
  --db-password "${passwords[2]}" --redis-password "${passwords[3]}" >>"$log" 2>&1 \
  || fail "Kasm's installer failed: see ${log}"

set_zone
echo "$release_url" >"$marker"
rm -rf "${work_dir:?}/kasm_release" "$tarball"
say "$(basename "$release_url") installed; Kasm listens on ${listen_port}"
