#!/usr/bin/env bash
# gitea-setup.sh: finish Gitea without its web installer: the admin user with the stack's
# generated password, and the OAuth2 application Drone logs in with. Prints the
# application's credentials on stdout as two lines, client_id=... and client_secret=...
#
# Inputs (environment):
#   GITEA_CONTAINER  name of the Gitea container on this host, e.g. gitea
#   GITEA_URL        Gitea's API base as reached from this host, e.g. http://127.0.0.1:3000
#   ADMIN_USER       admin user name
#   ADMIN_EMAIL      admin email
#   DRONE_URL        Drone's public URL; the OAuth2 redirect is DRONE_URL/login
# Inputs (secret, on stdin before this script):
#   ADMIN_PASSWORD   the admin's password
#
# Safe to run again: the user is created only when missing and its password reset only
# when it no longer matches. Gitea shows a client secret only when it makes one, so a run
# replaces the application named "drone" by a new one (Drone gets the new secret).
# Passwords and tokens go to curl in a private config file, never on a command line.
set -eu

log() { echo "gitea-setup: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

for var in GITEA_CONTAINER GITEA_URL ADMIN_USER ADMIN_EMAIL DRONE_URL ADMIN_PASSWORD; do
  eval "value=\${$var:-}"
  # shellcheck disable=SC2154  # value is set by the eval above
  [ -n "$value" ] || fatal "$var is empty"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

gitea() { docker exec -u git "$GITEA_CONTAINER" gitea "$@"; }

# api AUTHFILE METHOD PATH [BODY]: call Gitea's API; prints the body, fails on HTTP >= 400
api() {
  if [ -n "${4:-}" ]; then printf '%s' "$4" > "$work/body"; else : > "$work/body"; fi
  curl -sS --fail-with-body -K "$1" -X "$2" -H 'Content-Type: application/json' \
    --data-binary "@$work/body" "$GITEA_URL/api/v1$3"
}

printf 'user = "%s:%s"\n' "$ADMIN_USER" "$ADMIN_PASSWORD" > "$work/basic"

log "waiting for Gitea at $GITEA_URL"
for attempt in $(seq 1 60); do
  curl -fsS "$GITEA_URL/api/healthz" >/dev/null 2>&1 && break
  [ "$attempt" -lt 60 ] || fatal "Gitea did not become healthy in 5 minutes; see docker logs $GITEA_CONTAINER"
  sleep 5
done

if ! gitea admin user list --admin | awk 'NR > 1 { print $2 }' | grep -qx "$ADMIN_USER"; then
  log "creating admin user $ADMIN_USER"
  gitea admin user create --admin --username "$ADMIN_USER" --email "$ADMIN_EMAIL" \
    --random-password --must-change-password=false >/dev/null
fi

if ! api "$work/basic" GET /user >/dev/null 2>&1; then
  # A one-time token sets the password through the API, so that it never is an argument.
  log "setting the password of $ADMIN_USER"
  token_name="dockyard-setup-$(date +%s)"
  token=$(gitea admin user generate-access-token --username "$ADMIN_USER" --token-name "$token_name" \
    --scopes write:admin,write:user --raw)
  printf 'header = "Authorization: token %s"\n' "$token" > "$work/token"
  api "$work/token" PATCH "/admin/users/$ADMIN_USER" \
    "{\"login_name\":\"$ADMIN_USER\",\"source_id\":0,\"password\":\"$ADMIN_PASSWORD\",\"must_change_password\":false}" >/dev/null
  api "$work/basic" DELETE "/users/$ADMIN_USER/tokens/$token_name" >/dev/null
  api "$work/basic" GET /user >/dev/null || fatal "the new password of $ADMIN_USER is refused"
fi

for id in $(api "$work/basic" GET /user/applications/oauth2 |
    grep -o '"id":[0-9]*,"name":"drone"' | sed 's/"id":\([0-9]*\),.*/\1/'); do
  log "replacing OAuth2 application drone ($id)"
  api "$work/basic" DELETE "/user/applications/oauth2/$id" >/dev/null
done
created=$(api "$work/basic" POST /user/applications/oauth2 \
  "{\"name\":\"drone\",\"redirect_uris\":[\"$DRONE_URL/login\"],\"confidential_client\":true}")
client_id=$(printf '%s' "$created" | sed -n 's/.*"client_id":"\([^"]*\)".*/\1/p')
client_secret=$(printf '%s' "$created" | sed -n 's/.*"client_secret":"\([^"]*\)".*/\1/p')
if [ -z "$client_id" ] || [ -z "$client_secret" ]; then
  fatal "Gitea did not return the application's credentials"
fi
log "OAuth2 application drone ready for $DRONE_URL"
printf 'client_id=%s\nclient_secret=%s\n' "$client_id" "$client_secret"
