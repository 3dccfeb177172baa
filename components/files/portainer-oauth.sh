#!/bin/sh
# Single sign-on for Portainer CE through Gitea: signs in to Portainer's API as its admin and sets OAuth as its
# authentication, with the client id and secret of Portainer's application in Gitea. Run at deploy time in the Gitea
# container (BusyBox sh and curl; it reaches Portainer on the Docker network). Idempotent: it sets the same settings.
# Usage: forgestack-portainer-oauth PORTAINER_API OAUTH_SETTINGS_JSON
#   OAUTH_SETTINGS_JSON: Portainer's OAuthSettings object without ClientID and ClientSecret (nothing secret).
#   Standard input, three lines: Portainer's admin password, the client id, the client secret. Never arguments (which
#   `ps` shows), never printed. Progress goes to standard error.
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 PORTAINER_API OAUTH_SETTINGS_JSON (secrets on standard input)" >&2
  exit 2
fi
api_url="$1"
oauth_settings="$2"
case "$oauth_settings" in
  "{"*"}") ;;
  *)
    echo "not a JSON object: OAUTH_SETTINGS_JSON must be Portainer's OAuthSettings without the client's id and secret" >&2
    exit 2
    ;;
esac
IFS= read -r password || true
IFS= read -r client_id || true
IFS= read -r client_secret || true
if [ -z "$password" ] || [ -z "$client_id" ] || [ -z "$client_secret" ]; then
  echo "expected three lines on standard input: Portainer's admin password, the client id, the client secret" >&2
  exit 2
fi

# A JSON string's content: backslashes and double quotes escaped.
json_escape() { printf '%s' "$1" | sed 's/[\\"]/\\&/g'; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

echo "signing in to Portainer's API as admin" >&2
printf '{"username":"admin","password":"%s"}' "$(json_escape "$password")" >"${work}/login.json"
if ! curl --silent --show-error --fail-with-body --header 'Content-Type: application/json' \
  --data "@${work}/login.json" --output "${work}/login.out" "${api_url}/auth"; then
  echo "Portainer refused the admin's sign-in: $(head -c 300 "${work}/login.out" 2>/dev/null)" >&2
  exit 1
fi
jwt="$(sed -n 's/.*"jwt" *: *"\([^"]*\)".*/\1/p' "${work}/login.out")"
if [ -z "$jwt" ]; then
  echo "Portainer's sign-in answer holds no token" >&2
  exit 1
fi
# The token goes to curl in a header file, never an argument.
printf 'Authorization: Bearer %s\n' "$jwt" >"${work}/headers"

# {"AuthenticationMethod":3 (OAuth),"OAuthSettings":{"ClientID":...,"ClientSecret":..., <the rest>}}
rest="${oauth_settings#\{}"
printf '{"AuthenticationMethod":3,"OAuthSettings":{"ClientID":"%s","ClientSecret":"%s",%s}' \
  "$(json_escape "$client_id")" "$(json_escape "$client_secret")" "$rest" >"${work}/settings.json"
echo "setting OAuth through Gitea as Portainer's authentication" >&2
if ! curl --silent --show-error --fail-with-body --request PUT --header "@${work}/headers" \
  --header 'Content-Type: application/json' --data "@${work}/settings.json" --output "${work}/settings.out" \
  "${api_url}/settings"; then
  echo "Portainer refused the settings: $(head -c 300 "${work}/settings.out" 2>/dev/null)" >&2
  exit 1
fi
# Read back: what Portainer now holds, not what it said.
curl --silent --show-error --fail --header "@${work}/headers" --output "${work}/current.out" "${api_url}/settings" \
  || { echo "could not read Portainer's settings back" >&2; exit 1; }
if ! grep -q '"AuthenticationMethod" *: *3' "${work}/current.out"; then
  echo "Portainer's settings do not have OAuth as the authentication method after the update" >&2
  exit 1
fi
echo "Portainer signs in through Gitea" >&2
