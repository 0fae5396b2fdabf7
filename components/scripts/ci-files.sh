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

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell ci-files.sh | bash -s}"

require_env CI_ROOT GC_SCHEDULE REGISTRY_CERT REGISTRY_KEY REGISTRY_HTPASSWD DOCKER_CONFIG_JSON
systemd-analyze calendar "$GC_SCHEDULE" >/dev/null 2>&1 || fatal "systemd rejects the schedule '$GC_SCHEDULE'"

umask 022
mkdir -p "$CI_ROOT/registry/data" "$CI_ROOT/gitea" "$CI_ROOT/drone"
put_value "$CI_ROOT/registry/certs/registry.crt" 0644 "$REGISTRY_CERT"
put_value "$CI_ROOT/registry/certs/registry.key" 0600 "$REGISTRY_KEY"
put_value "$CI_ROOT/registry/auth/htpasswd" 0600 "$REGISTRY_HTPASSWD"
put_value "$CI_ROOT/drone/docker-config.json" 0600 "$DOCKER_CONFIG_JSON"

# Garbage collection deletes blobs no manifest references. Run during a push it can
# delete that push's fresh layers, hence a quiet-hour schedule rather than after each push.
put_value /etc/systemd/system/dockyard-registry-gc.service 0644 "[Unit]
Description=dockyard: garbage-collect the registry's unreferenced blobs
[Service]
Type=oneshot
ExecStart=/usr/bin/docker exec registry registry garbage-collect --delete-untagged /etc/docker/registry/config.yml"
put_value /etc/systemd/system/dockyard-registry-gc.timer 0644 "[Unit]
Description=dockyard: registry garbage collection schedule
[Timer]
OnCalendar=$GC_SCHEDULE
Persistent=true
[Install]
WantedBy=timers.target"
[ "$units_changed" = no ] || systemctl daemon-reload
systemctl is-enabled --quiet dockyard-registry-gc.timer 2>/dev/null || systemctl enable --now --quiet dockyard-registry-gc.timer
log "registry files and garbage collection timer in place under $CI_ROOT"
