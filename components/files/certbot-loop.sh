#!/bin/sh
# Entrypoint of the certbot container: obtain the certificate for every routed hostname through
# the webroot Nginx serves, then check twice a day and renew when due. Nginx's entrypoint
# notices the new files and reloads itself.
# Environment: CERT_DOMAINS (comma-separated), ACME_EMAIL, ACME_STAGING (true|false).
set -eu

: "${CERT_DOMAINS:?CERT_DOMAINS is required}"
: "${ACME_EMAIL:?ACME_EMAIL is required}"
staging_flag=""
if [ "${ACME_STAGING:-true}" = "true" ]; then
  staging_flag="--staging"
fi

while :; do
  # --keep-until-expiring renews only when due; --expand adds hostnames routed since last time.
  # shellcheck disable=SC2086  # staging_flag is empty or one word
  if certbot certonly --webroot --webroot-path /var/www/acme --cert-name forgestack \
      --domains "$CERT_DOMAINS" --email "$ACME_EMAIL" --agree-tos --no-eff-email \
      --non-interactive --keep-until-expiring --expand $staging_flag; then
    echo "certbot: certificate for ${CERT_DOMAINS} is current; next check in 12h"
    sleep 43200
  else
    echo "certbot: issuance failed (DNS not pointing here yet?); retrying in 1h" >&2
    sleep 3600
  fi
done
