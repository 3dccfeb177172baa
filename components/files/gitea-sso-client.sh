#!/bin/sh
# Single sign-on through Gitea: makes sure the sign-on organization and one OAuth2 application exist, then prints the
# application's client id and a fresh client secret, one per line (Gitea shows a secret only when it creates or
# regenerates one, so every run regenerates it: the caller hands the new one to the client).
# Usage: forgestack-sso-client ADMIN_USER ORGANIZATION APPLICATION REDIRECT_URI
#   The admin's password is read from $ADMIN_PASSWORD_FILE (default /run/secrets/gitea_admin_password) and handed to
#   curl on its standard input, never as an argument. Gitea's API: $GITEA_API (default http://127.0.0.1:3000/api/v1).
#   Progress goes to standard error; standard output holds only the two lines.
set -eu

if [ "$#" -ne 4 ]; then
  echo "usage: $0 ADMIN_USER ORGANIZATION APPLICATION REDIRECT_URI" >&2
  exit 2
fi
admin="$1"
organization="$2"
application="$3"
redirect_uri="$4"
password_file="${ADMIN_PASSWORD_FILE:-/run/secrets/gitea_admin_password}"
api_url="${GITEA_API:-http://127.0.0.1:3000/api/v1}"

# The names and the URI go into JSON bodies and a search pattern unescaped: allow only what needs no escaping.
for name in "$admin" "$organization" "$application"; do
  case "$name" in
    "" | *[!A-Za-z0-9._-]*)
      echo "not a Gitea name: '${name}' (expected letters, digits, '.', '_' or '-')" >&2
      exit 2
      ;;
  esac
done
case "$redirect_uri" in
  https://* | http://localhost:* | http://localhost/*) ;;
  *)
    echo "not a redirect URI: '${redirect_uri}' (expected https://..., or http://localhost for a port-forwarded UI)" >&2
    exit 2
    ;;
esac
case "$redirect_uri" in
  *[\"\\\ ]*)
    echo "not a redirect URI: '${redirect_uri}' (no quotes, backslashes or spaces)" >&2
    exit 2
    ;;
esac
if [ ! -r "$password_file" ]; then
  echo "cannot read the admin password file ${password_file}" >&2
  exit 1
fi

# curl's configuration on its standard input: basic auth for the admin, quoted for curl's config syntax.
auth_config() {
  printf 'user = "%s:%s"\n' "$admin" "$(sed 's/[\\"]/\\&/g' "$password_file")"
}

# api METHOD PATH [curl arguments...]: the response body on stdout; fails (with Gitea's answer) on HTTP >= 400.
api() {
  method="$1"
  path="$2"
  shift 2
  auth_config | curl --silent --show-error --fail-with-body --config - --request "$method" \
    --header 'Accept: application/json' --header 'Content-Type: application/json' "$@" "${api_url}${path}"
}

# status PATH: only the HTTP status of a GET (connection refused is retried while Gitea starts).
status() {
  auth_config | curl --silent --show-error --config - --retry 10 --retry-connrefused --retry-delay 2 \
    --output /dev/null --write-out '%{http_code}' "${api_url}$1"
}

# field NAME: a top-level string or number of the JSON object on stdin (Gitea's answers are one line, no nesting
# besides the list of redirect URIs).
field() {
  sed -n "s/^.*\"$1\":\"\{0,1\}\([^\",]*\)\"\{0,1\}[,}].*\$/\1/p"
}

code="$(status "/orgs/${organization}")"
case "$code" in
  200) echo "organization ${organization} exists" >&2 ;;
  404)
    api POST /orgs --data "{\"username\":\"${organization}\",\"visibility\":\"private\"}" >/dev/null
    echo "organization ${organization} created (${admin} is in its Owners team)" >&2
    ;;
  *)
    echo "Gitea answered ${code} for organization ${organization}: check ${admin}'s password" >&2
    exit 1
    ;;
esac

# The application's id, if the admin has one by that name (Gitea lists at most 50 per page).
application_id=""
page=1
while [ "$page" -le 20 ]; do
  listing="$(api GET "/user/applications/oauth2?page=${page}&limit=50")"
  application_id="$(printf '%s\n' "$listing" | sed 's/},{/}\n{/g' | grep -F "\"name\":\"${application}\"" | field id | head -n 1)"
  if [ -n "$application_id" ] || [ "$listing" = "[]" ] || [ -z "$listing" ]; then
    break
  fi
  page=$((page + 1))
done

body="{\"name\":\"${application}\",\"redirect_uris\":[\"${redirect_uri}\"],\"confidential_client\":true,\"skip_secondary_authorization\":true}"
if [ -n "$application_id" ]; then
  answer="$(api PATCH "/user/applications/oauth2/${application_id}" --data "$body")"
  echo "OAuth2 application ${application} updated (id ${application_id}); its client secret was regenerated" >&2
else
  answer="$(api POST /user/applications/oauth2 --data "$body")"
  echo "OAuth2 application ${application} created" >&2
fi
client_id="$(printf '%s\n' "$answer" | field client_id)"
client_secret="$(printf '%s\n' "$answer" | field client_secret)"
if [ -z "$client_id" ] || [ -z "$client_secret" ]; then
  echo "Gitea's answer for ${application} holds no client id and secret" >&2
  exit 1
fi
printf '%s\n%s\n' "$client_id" "$client_secret"
