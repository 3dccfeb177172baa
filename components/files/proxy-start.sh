#!/bin/sh
# Entrypoint of the Nginx container: serve the Let's Encrypt certificate when certbot has one,
# the self-signed bootstrap certificate until then, and reload Nginx whenever the served
# certificate changes (a renewed certificate that Nginx never loads is the classic failure).
set -eu

live_dir=/etc/letsencrypt/live/forgestack
bootstrap_dir=/etc/nginx/bootstrap-tls
tls_dir=/etc/nginx/tls
check_seconds="${CERT_CHECK_SECONDS:-300}"

# Copies the best available certificate into tls_dir; prints "changed" when it did.
sync_certificate() {
  if [ -s "${live_dir}/fullchain.pem" ] && [ -s "${live_dir}/privkey.pem" ]; then
    source_dir="$live_dir"
  else
    source_dir="$bootstrap_dir"
  fi
  if cmp -s "${source_dir}/fullchain.pem" "${tls_dir}/fullchain.pem" 2>/dev/null; then
    return 0
  fi
  mkdir -p "$tls_dir"
  cp -L "${source_dir}/privkey.pem" "${tls_dir}/privkey.pem.new"
  cp -L "${source_dir}/fullchain.pem" "${tls_dir}/fullchain.pem.new"
  chmod 600 "${tls_dir}/privkey.pem.new"
  mv "${tls_dir}/privkey.pem.new" "${tls_dir}/privkey.pem"
  mv "${tls_dir}/fullchain.pem.new" "${tls_dir}/fullchain.pem"
  echo "changed"
}

sync_certificate >/dev/null
echo "proxy: serving certificate from $( [ -s "${live_dir}/fullchain.pem" ] && echo "$live_dir" || echo "$bootstrap_dir" )"

(
  while sleep "$check_seconds"; do
    if [ "$(sync_certificate)" = "changed" ]; then
      echo "proxy: certificate changed, reloading nginx"
      nginx -s reload
    fi
  done
) &

exec nginx -g 'daemon off;'
