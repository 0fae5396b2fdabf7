#!/usr/bin/env bash
# droplet-power-off.sh: power a droplet off through DigitalOcean's API and wait until it is
# off, so that a snapshot of it is consistent. Run locally (pulumi-command local) by the
# image builder (images/digitalocean).
#
# Inputs (environment):
#   DROPLET_ID          the droplet
#   DIGITALOCEAN_TOKEN  an API token (a secret: it goes to curl on stdin, never in argv)
#   API                 the API's base URL (default https://api.digitalocean.com)
#   WAIT_SECONDS        how long to wait for "off" (default 300)
#
# Safe to run again: a droplet that is already off is left as it is.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell droplet-power-off.sh | bash -s}"

default_env DROPLET_ID API=https://api.digitalocean.com WAIT_SECONDS=300
case "$DROPLET_ID" in "" | *[!0-9]*) fatal "DROPLET_ID must be a droplet's numeric ID" ;; esac
require_env DIGITALOCEAN_TOKEN

# api <method> <path> [body]: the token reaches curl in its config on stdin
api() {
  printf 'header = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\n' "$DIGITALOCEAN_TOKEN" |
    curl -fsS -K - -X "$1" ${3:+--data "$3"} "$API$2"
}

status() {
  api GET "/v2/droplets/$DROPLET_ID" | python3 -c 'import json, sys; print(json.load(sys.stdin)["droplet"]["status"])'
}

current=$(status) || fatal "cannot read droplet $DROPLET_ID from $API"
if [ "$current" != off ]; then
  log "powering droplet $DROPLET_ID off for its snapshot"
  api POST "/v2/droplets/$DROPLET_ID/actions" '{"type": "power_off"}' >/dev/null || fatal "the power_off action was refused"
fi
waited=0
until [ "$(status)" = off ]; do
  [ "$waited" -lt "$WAIT_SECONDS" ] || fatal "droplet $DROPLET_ID is not off after $WAIT_SECONDS s"
  sleep 5
  waited=$((waited + 5))
done
log "droplet $DROPLET_ID is off"
