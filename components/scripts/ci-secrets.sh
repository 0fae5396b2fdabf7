#!/usr/bin/env bash
# ci-secrets.sh: the CI/CD secrets that must live as long as the data they protect, kept on
# the CI data volume itself, so that a recreated stack that adopts the volume gets them back
# (a secret made by the stack would be new, and the data unreadable):
#   Gitea's SECRET_KEY     (encrypts 2FA secrets, OAuth2 application secrets, ...)
#   Drone's DATABASE_SECRET (encrypts the repositories' secrets in Drone's database)
# Prints them on stdout as NAME=value lines; the resource keeps its stdout secret.
#
# Inputs (environment):
#   CI_ROOT          where the CI data volume is mounted, e.g. /srv/ci; the secrets go to
#                    $CI_ROOT/secrets/, which no container mounts
#   CI_ROOT_IS_DIR   tests only: yes lets CI_ROOT be a plain directory instead of a mount
#
# Safe to run again: a secret is made only when its file is missing. Gitea's key is taken
# from Gitea's own app.ini when one is there (a volume from before this script), and Drone
# gets no database secret when its database already exists without one: a secret added
# later would make the secrets already stored unreadable.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell ci-secrets.sh | bash -s}"

require_env CI_ROOT
mountpoint -q "$CI_ROOT" || [ "${CI_ROOT_IS_DIR:-}" = yes ] || fatal "$CI_ROOT is not mounted: refusing to keep secrets on the root disk"

# keep FILE VALUE: write VALUE to FILE (mode 0600) unless FILE exists: a kept secret is
# never replaced, not even by one that differs
keep() { [ -s "$1" ] || put_file "$1" 0600 "recording $1" <<<"$2"; }

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

umask 077
gitea_key=$CI_ROOT/secrets/gitea_secret_key
app_ini=$CI_ROOT/gitea/gitea/conf/app.ini
if [ ! -s "$gitea_key" ]; then
  existing=$(sed -n 's/^[[:space:]]*SECRET_KEY[[:space:]]*=[[:space:]]*//p' "$app_ini" 2>/dev/null | head -n 1)
  keep "$gitea_key" "${existing:-$(random_hex 32)}"
fi

drone_secret=$CI_ROOT/secrets/drone_database_secret
if [ ! -s "$drone_secret" ] && [ -s "$CI_ROOT/drone/data/database.sqlite" ]; then
  log "warning: Drone's database was made without a database secret; its secrets stay unencrypted"
  drone_value=
else
  keep "$drone_secret" "$(random_hex 16)"  # Drone wants 32 characters
  drone_value=$(cat "$drone_secret")
fi

printf 'GITEA_SECRET_KEY=%s\nDRONE_DATABASE_SECRET=%s\n' "$(cat "$gitea_key")" "$drone_value"
