#!/usr/bin/env bash
# gitea-setup.sh: finish Gitea without its web installer: the admin user with the stack's
# generated password, and the OAuth2 application Drone logs in with. Prints the
# application's credentials on stdout as two lines, client_id=... and client_secret=...
#
# Inputs (environment):
#   GITEA_CONTAINER  name of the Gitea container on this host, e.g. gitea
#   GITEA_URL        Gitea's API base as reached from this host, e.g. https://localhost:3000
#   CA_FILE          the CA that signed Gitea's certificate, e.g. /srv/ci/tls/ca.crt
#   ADMIN_USER       admin user name
#   ADMIN_EMAIL      admin email
#   DRONE_URL        Drone's public URL; the OAuth2 redirect is DRONE_URL/login
#   CI_ROOT          the CI data volume; the application's credentials are kept in
#                    $CI_ROOT/secrets/drone_oauth (0600, mounted by no container)
# Inputs (secret, on stdin before this script):
#   ADMIN_PASSWORD   the admin's password
#
# Safe to run again: the user is created only when missing and its password reset only
# when it no longer matches. Gitea shows a client secret only when it makes one, so the
# application's credentials are kept on the CI volume with the data: a run that finds the
# kept application in Gitea, with Drone's redirect, keeps it (and the logins Drone holds
# through it), also on a stack restored from a backup. Drone at a new address (http to
# https included) keeps the application: its redirect is changed, and Gitea gives it a new
# secret (Drone gets it; the logins stay). Otherwise the application named "drone" is
# replaced by a new one (Drone gets the new secret, its users log in again).
# Passwords and tokens go to curl in a private config file, never on a command line.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell gitea-setup.sh | bash -s}"

require_env GITEA_CONTAINER GITEA_URL CA_FILE ADMIN_USER ADMIN_EMAIL DRONE_URL CI_ROOT ADMIN_PASSWORD
[ -r "$CA_FILE" ] || fatal "no CA certificate at $CA_FILE (ci-tls.sh writes it)"
# every curl below checks Gitea's certificate against it
export CURL_CA_BUNDLE=$CA_FILE

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
  answered=0
  curl -fsS "$GITEA_URL/api/healthz" >/dev/null 2>"$work/health" || answered=$?
  [ "$answered" != 0 ] || break
  # 60: a certificate the CA did not sign; waiting does not change it
  [ "$answered" != 60 ] || fatal "Gitea's certificate is not signed by the stack's CA in $CA_FILE: $(cat "$work/health")"
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

kept=$CI_ROOT/secrets/drone_oauth
kept_value() { sed -n "s/^$1=//p" "$kept" 2>/dev/null | head -n 1; }
# kept_is_current: Gitea still holds the kept application, for Drone's redirect, with the kept
# secret. An answer other than "no such application" stops the run: replacing the application
# on a passing error would log every Drone user out for nothing
kept_is_current() {
  id=$(kept_value id)
  client_id=$(kept_value client_id)
  client_secret=$(kept_value client_secret)
  case "$id" in '' | *[!0-9]*) return 1 ;; esac
  [ -n "$client_id" ] && [ -n "$client_secret" ] || return 1
  status=$(curl -sS -K "$work/basic" -o "$work/app" -w '%{http_code}' "$GITEA_URL/api/v1/user/applications/oauth2/$id") ||
    fatal "cannot reach Gitea's API to check the kept OAuth2 application"
  case "$status" in
    200) ;;
    404) return 1 ;;
    *) fatal "Gitea answered HTTP $status for the kept OAuth2 application $id; run pulumi up again" ;;
  esac
  app=$(cat "$work/app")
  case "$app" in *"\"client_id\":\"$client_id\""*) ;; *) return 1 ;; esac
  # Drone at a new address (or now over https): the same application gets the new redirect
  case "$app" in *"\"redirect_uris\":[\"$DRONE_URL/login\"]"*) ;; *) moved=yes; return 1 ;; esac
  # Gitea never shows the secret again, but its token endpoint checks it before the (made-up)
  # code: a secret regenerated in Gitea's UI is found here
  printf 'grant_type=authorization_code&code=dockyard-check&client_id=%s&client_secret=%s' \
    "$client_id" "$client_secret" > "$work/form"
  answer=$(curl -sS -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "@$work/form" \
    "$GITEA_URL/login/oauth/access_token") || fatal "cannot reach Gitea's token endpoint"
  case "$answer" in
    *"client is not authorized"*) return 0 ;;
    *"invalid client secret"*) return 1 ;;
  esac
  log "warning: Gitea's token endpoint did not say whether the kept secret holds; making a new application"
  return 1
}
application='{"name":"drone","redirect_uris":["'"$DRONE_URL"'/login"],"confidential_client":true}'
# credentials_of JSON: client_id, client_secret and id of the application Gitea returned
credentials_of() {
  client_id=$(printf '%s' "$1" | sed -n 's/.*"client_id":"\([^"]*\)".*/\1/p')
  client_secret=$(printf '%s' "$1" | sed -n 's/.*"client_secret":"\([^"]*\)".*/\1/p')
  id=$(printf '%s' "$1" | sed -n 's/.*"id":\([0-9]*\),"name":"drone".*/\1/p')
  if [ -z "$client_id" ] || [ -z "$client_secret" ] || [ -z "$id" ]; then
    fatal "Gitea did not return the application's credentials"
  fi
}

moved=no
if [ -s "$kept" ]; then
  if kept_is_current; then
    log "OAuth2 application drone ($id) kept for $DRONE_URL"
    printf 'client_id=%s\nclient_secret=%s\n' "$client_id" "$client_secret"
    exit 0
  fi
  if [ "$moved" = no ]; then
    log "the kept OAuth2 application is gone from Gitea, or its secret changed: making a new one"
  fi
fi

if [ "$moved" = yes ]; then
  # Gitea keeps the application's grants (Drone's logins, the tokens it builds with) and
  # gives it a new secret, which Drone gets
  log "OAuth2 application drone ($id): its redirect becomes $DRONE_URL/login"
  credentials_of "$(api "$work/basic" PATCH "/user/applications/oauth2/$id" "$application")"
else
  for id in $(api "$work/basic" GET /user/applications/oauth2 |
      grep -o '"id":[0-9]*,"name":"drone"' | sed 's/"id":\([0-9]*\),.*/\1/'); do
    log "replacing OAuth2 application drone ($id)"
    api "$work/basic" DELETE "/user/applications/oauth2/$id" >/dev/null
  done
  credentials_of "$(api "$work/basic" POST /user/applications/oauth2 "$application")"
fi
put_file "$kept" 0600 "keeping the application's credentials in $kept" <<EOF
id=$id
client_id=$client_id
client_secret=$client_secret
EOF
log "OAuth2 application drone ready for $DRONE_URL"
printf 'client_id=%s\nclient_secret=%s\n' "$client_id" "$client_secret"
