#!/bin/sh
# Entrypoint of the certbot container: obtain the certificate for every routed hostname, then check
# twice a day and renew when due. Nginx's entrypoint notices the new files and reloads itself.
# The challenge: http-01 through the webroot Nginx serves, or dns-01 through Route 53 (the
# certbot/dns-route53 image, credentials from the instance role) when the web is allow-listed.
# Environment: CERT_DOMAINS (comma-separated), ACME_EMAIL, ACME_STAGING (true|false),
# ACME_CHALLENGE (http-01|dns-01).
set -eu

: "${CERT_DOMAINS:?CERT_DOMAINS is required}"
: "${ACME_EMAIL:?ACME_EMAIL is required}"
staging_flag=""
if [ "${ACME_STAGING:-true}" = "true" ]; then
  staging_flag="--staging"
fi
case "${ACME_CHALLENGE:-http-01}" in
  http-01) challenge="--webroot --webroot-path /var/www/acme" ;;
  dns-01) challenge="--dns-route53" ;;
  *) echo "certbot: ACME_CHALLENGE must be http-01 or dns-01, not ${ACME_CHALLENGE}" >&2; exit 2 ;;
esac

while :; do
  # --keep-until-expiring renews only when due; --expand adds hostnames routed since last time.
  # shellcheck disable=SC2086  # challenge and staging_flag are fixed words, split on purpose
  if certbot certonly $challenge --cert-name forgestack \
      --domains "$CERT_DOMAINS" --email "$ACME_EMAIL" --agree-tos --no-eff-email \
      --non-interactive --keep-until-expiring --expand $staging_flag; then
    echo "certbot: certificate for ${CERT_DOMAINS} is current; next check in 12h"
    sleep 43200
  else
    echo "certbot: issuance failed (DNS not pointing here yet, or Route 53 refused the TXT record?); retrying in 1h" >&2
    sleep 3600
  fi
done
