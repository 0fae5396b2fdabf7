#!/usr/bin/env bash
# ci-files.sh: put the files the CI/CD containers read on the CI/CD host's data volume:
# the registry's TLS certificate, key and htpasswd, the Docker credentials the Drone runner
# hands to pipelines, and a systemd timer that garbage-collects the registry.
#
# Inputs (environment):
#   CI_ROOT             where the CI data volume is mounted, e.g. /srv/ci
#   GC_SCHEDULE         systemd OnCalendar= value of the registry garbage collection
# Inputs (secret, on stdin before this script):
#   REGISTRY_CERT       PEM certificate of the registry (signed by the stack's CA)
#   REGISTRY_KEY        PEM private key of the registry
#   REGISTRY_HTPASSWD   "user:bcrypt-hash" line
#   DOCKER_CONFIG_JSON  a docker config.json with the registry's credentials
#
# Safe to run again: a file is written only when its content differs.
set -eu

log() { echo "ci-files: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

CI_ROOT=${CI_ROOT:-}
GC_SCHEDULE=${GC_SCHEDULE:-}
[ -n "$CI_ROOT" ] || fatal "CI_ROOT is empty"
[ -n "$GC_SCHEDULE" ] || fatal "GC_SCHEDULE is empty"
for var in REGISTRY_CERT REGISTRY_KEY REGISTRY_HTPASSWD DOCKER_CONFIG_JSON; do
  eval "value=\${$var:-}"
  # shellcheck disable=SC2154  # value is set by the eval above
  [ -n "$value" ] || fatal "$var is empty"
done
systemd-analyze calendar "$GC_SCHEDULE" >/dev/null 2>&1 || fatal "systemd rejects the schedule '$GC_SCHEDULE'"

# put_file PATH MODE CONTENT: write CONTENT to PATH unless it is already there
wrote=
put_file() {
  # compared as the file reads back: without the PEM's trailing newline
  want=$(printf '%s' "$3")
  if [ "$(cat "$1" 2>/dev/null || true)" != "$want" ]; then
    log "writing $1"
    wrote=1
    mkdir -p "$(dirname "$1")"
    tmp=$(mktemp "$1.XXXXXX")  # mode 0600 until chmod; beside the file, so the rename is atomic
    if ! { printf '%s\n' "$want" > "$tmp" && chmod "$2" "$tmp" && mv "$tmp" "$1"; }; then
      rm -f "$tmp"
      fatal "cannot write $1"
    fi
  fi
}

umask 022
mkdir -p "$CI_ROOT/registry/data" "$CI_ROOT/gitea" "$CI_ROOT/drone"
put_file "$CI_ROOT/registry/certs/registry.crt" 0644 "$REGISTRY_CERT"
put_file "$CI_ROOT/registry/certs/registry.key" 0600 "$REGISTRY_KEY"
put_file "$CI_ROOT/registry/auth/htpasswd" 0600 "$REGISTRY_HTPASSWD"
put_file "$CI_ROOT/drone/docker-config.json" 0600 "$DOCKER_CONFIG_JSON"

# Garbage collection deletes blobs no manifest references. Run during a push it can
# delete that push's fresh layers, hence a quiet-hour schedule rather than after each push.
wrote=
put_file /etc/systemd/system/dockyard-registry-gc.service 0644 "[Unit]
Description=dockyard: garbage-collect the registry's unreferenced blobs
[Service]
Type=oneshot
ExecStart=/usr/bin/docker exec registry registry garbage-collect --delete-untagged /etc/docker/registry/config.yml"
put_file /etc/systemd/system/dockyard-registry-gc.timer 0644 "[Unit]
Description=dockyard: registry garbage collection schedule
[Timer]
OnCalendar=$GC_SCHEDULE
Persistent=true
[Install]
WantedBy=timers.target"
[ -z "$wrote" ] || systemctl daemon-reload
systemctl is-enabled --quiet dockyard-registry-gc.timer 2>/dev/null || systemctl enable --now --quiet dockyard-registry-gc.timer
log "registry files and garbage collection timer in place under $CI_ROOT"
