#!/bin/sh
# Creates the Gitea admin account once; when it already exists, changes nothing.
# Usage: forgestack-bootstrap-admin USERNAME EMAIL
#   (password read from $ADMIN_PASSWORD_FILE, by default /run/secrets/gitea_admin_password)
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 USERNAME EMAIL" >&2
  exit 2
fi
username="$1"
email="$2"
password_file="${ADMIN_PASSWORD_FILE:-/run/secrets/gitea_admin_password}"

# Gitea answers /api/healthz before its CLI can open the database on a cold start: retry briefly.
attempt=1
until users="$(gitea admin user list --admin 2>/dev/null)"; do
  if [ "$attempt" -ge 30 ]; then
    echo "gitea is not ready after 30 attempts; admin user not checked" >&2
    exit 1
  fi
  echo "waiting for gitea (attempt ${attempt}/30)"
  attempt=$((attempt + 1))
  sleep 2
done

is_admin() {
  printf '%s\n' "$1" | awk 'NR > 1 { print $2 }' | grep -qx "$username"
}

if is_admin "$users"; then
  echo "admin user ${username} exists: nothing to do"
  exit 0
fi
# The CLI takes the password as an argument only; it exists in this process for a moment and
# never in Pulumi's logs or state (the command line Pulumi sees holds no password).
if gitea admin user create --admin --username "$username" --email "$email" \
  --password "$(cat "$password_file")" --must-change-password=false; then
  echo "admin user ${username} created"
  exit 0
fi
# topology ha: every Gitea task starts this; another one may have created the user in between.
if is_admin "$(gitea admin user list --admin)"; then
  echo "admin user ${username} was created meanwhile: nothing to do"
  exit 0
fi
echo "creating admin user ${username} failed" >&2
exit 1
