#!/usr/bin/env bash
# host-maintenance.sh: keep a dockyard host healthy without anyone logging in: systemd
# timers (not cron) that prune what Docker leaves behind on a schedule, and a Docker engine
# that comes back by itself when it dies or hangs.
#
# Installs:
#   /usr/local/sbin/dockyard-prune, dockyard-prune.service and .timer: stopped containers,
#       dangling images, unused images and build cache older than PRUNE_AFTER; never an
#       image a container uses (running or stopped), one a swarm service names (on a
#       manager), or one KEEP_IMAGES names
#   docker.service.d/dockyard-restart.conf: Restart=always, no start limit
#   dockyard-docker-health.service and .timer: every 2 minutes, a running Docker that does
#       not answer `docker info` within 120 s is restarted (a stopped one is left stopped)
#
# Inputs (environment):
#   PRUNE_SCHEDULE  systemd OnCalendar expression (e.g. "*-*-* 03:30:00")
#   PRUNE_AFTER     age in hours, as Docker's until= filter takes it (e.g. 168h)
#   KEEP_IMAGES     space-separated image IDs (sha256:...) or references never pruned:
#                   images preloaded from archives, which no registry can give back, and
#                   the images the stack's own services run
# For tests only:
#   SYSROOT         a directory that stands for / in the paths this script writes
#
# Safe to run again: a file is written only when its content changes, and systemd is
# reloaded only then. Docker itself is never restarted by this script.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell host-maintenance.sh | bash -s}"

require_env PRUNE_SCHEDULE
default_env PRUNE_AFTER KEEP_IMAGES SYSROOT
case "$PRUNE_AFTER" in
  "" | *[!0-9h]* | h* | *h*h | *[0-9]) fatal "PRUNE_AFTER must be hours such as 168h, got '$PRUNE_AFTER'" ;;
esac
case "$KEEP_IMAGES" in *[!A-Za-z0-9:@/._\ -]*) fatal "KEEP_IMAGES must be image IDs or references" ;; esac
[ -n "$SYSROOT" ] || [ "$(id -u)" = 0 ] || fatal "must run as root"

UNITS=$SYSROOT/etc/systemd/system

put_file "$SYSROOT/usr/local/sbin/dockyard-prune" 755 <<'PRUNE'
#!/bin/sh
# dockyard-prune: what Docker left behind, older than PRUNE_AFTER (from /etc/dockyard/prune.env).
set -eu
: "${PRUNE_AFTER:?}"
docker container prune --force --filter "until=$PRUNE_AFTER" >/dev/null
docker image prune --force --filter "until=$PRUNE_AFTER" >/dev/null
# unused images: not one a container uses, a service names, or KEEP_IMAGES lists
keep=$(mktemp)
trap 'rm -f "$keep"' EXIT
for image in ${KEEP_IMAGES:-}; do
  docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true
done > "$keep"
docker ps --all --quiet | xargs -r docker inspect --format '{{.Image}}' >> "$keep"
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
  docker service ls --format '{{.Image}}' | xargs -r -n 1 docker image inspect --format '{{.Id}}' 2>/dev/null >> "$keep" || true
fi
# an image's age is Docker's: since it was built (Created), as the prune filters count it
cutoff=$(( $(date +%s) - ${PRUNE_AFTER%h} * 3600 ))
removed=0
for id in $(docker image ls --quiet --no-trunc | sort -u); do
  grep -qx "$id" "$keep" && continue
  created=$(docker image inspect --format '{{.Created}}' "$id" 2>/dev/null) || continue
  # an age it cannot read is no reason to remove an image
  built=$(date -d "$created" +%s 2>/dev/null) || continue
  [ "$built" -lt "$cutoff" ] || continue
  docker image rm --force "$id" >/dev/null 2>&1 && removed=$((removed + 1))
done
docker builder prune --force --filter "until=$PRUNE_AFTER" >/dev/null 2>&1 || true
echo "dockyard-prune: $removed unused image(s) removed"
PRUNE

put_file "$SYSROOT/etc/dockyard/prune.env" 644 <<EOF
PRUNE_AFTER=$PRUNE_AFTER
KEEP_IMAGES="$KEEP_IMAGES"
EOF

put_file "$UNITS/dockyard-prune.service" 644 <<'EOF'
[Unit]
Description=dockyard: prune stopped containers, unused images and build cache
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
EnvironmentFile=/etc/dockyard/prune.env
ExecStart=/usr/local/sbin/dockyard-prune
EOF

put_file "$UNITS/dockyard-prune.timer" 644 <<EOF
[Unit]
Description=dockyard: prune Docker on a schedule

[Timer]
OnCalendar=$PRUNE_SCHEDULE
RandomizedDelaySec=15min
Persistent=true

[Install]
WantedBy=timers.target
EOF

put_file "$UNITS/docker.service.d/dockyard-restart.conf" 644 <<'EOF'
[Unit]
StartLimitIntervalSec=0

[Service]
Restart=always
RestartSec=5s
EOF

put_file "$UNITS/dockyard-docker-health.service" 644 <<'EOF'
[Unit]
Description=dockyard: restart a Docker engine that does not answer
After=docker.service

[Service]
Type=oneshot
ExecCondition=/bin/systemctl is-active --quiet docker
ExecStart=/bin/sh -c 'timeout 120 docker info >/dev/null 2>&1 || { echo "docker does not answer: restarting it"; systemctl restart docker; }'
EOF

put_file "$UNITS/dockyard-docker-health.timer" 644 <<'EOF'
[Unit]
Description=dockyard: check that Docker answers

[Timer]
OnBootSec=5min
OnUnitActiveSec=2min

[Install]
WantedBy=timers.target
EOF

if [ -n "$SYSROOT" ]; then
  exit 0
fi
# the prune reads its settings when it runs: only a changed unit needs systemd to reload
if [ "$units_changed" = yes ]; then
  systemctl daemon-reload
fi
for timer in dockyard-prune.timer dockyard-docker-health.timer; do
  systemctl is-enabled --quiet "$timer" 2>/dev/null || systemctl enable "$timer" >/dev/null 2>&1
  systemctl is-active --quiet "$timer" || systemctl start "$timer"
done
