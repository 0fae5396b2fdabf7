#!/usr/bin/env bash
# swarm-metrics.sh: on a swarm manager, what Prometheus cannot ask Docker itself, written
# every minute as a node-exporter text file: the swarm's view of its nodes and services, and
# whether the registry and Gitea answer. Alerts (components/observability/alert-rules.yml)
# are made of it: a node down, a service short of tasks or restarting in a loop, the
# registry or Gitea down.
#
# Installs:
#   /usr/local/sbin/dockyard-swarm-metrics, dockyard-swarm-metrics.service and .timer,
#   writing METRICS_DIR/swarm.prom (replaced atomically: node-exporter never reads half a file)
#
# Inputs (environment):
#   REGISTRY_URL   e.g. https://10.210.0.21:5000/v2/ (401 without a password is an answer); "" for none
#   GITEA_URL      e.g. https://10.210.0.21:3000/api/healthz; "" for none
#   CA_CERT        PEM certificate of the stack's CA, which signed both (written to
#                  /etc/dockyard/stack-ca.crt; a certificate it did not sign is "down"); "" for none
#   REMOVE         1: stop the timer and remove what this script installs (monitoring turned
#                  off: the command's delete), and nothing else
# For tests only:
#   SYSROOT        a directory that stands for / in the paths this script writes
#
# Safe to run again: a file is written only when its content changes, systemd reloaded
# only then.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-metrics.sh | bash -s}"

default_env REGISTRY_URL GITEA_URL CA_CERT REMOVE=0 SYSROOT
for url in "$REGISTRY_URL" "$GITEA_URL"; do
  case "$url" in "" | http://* | https://*) ;; *) fatal "not a URL: '$url'" ;; esac
  case "$url" in *[!A-Za-z0-9:/._-]*) fatal "URL with characters it cannot hold: '$url'" ;; esac
done
[ -n "$SYSROOT" ] || [ "$(id -u)" = 0 ] || fatal "must run as root"

UNITS=$SYSROOT/etc/systemd/system
METRICS_DIR=/var/lib/dockyard/metrics

if [ "$REMOVE" = 1 ]; then
  if [ -z "$SYSROOT" ] && systemctl is-enabled --quiet dockyard-swarm-metrics.timer 2>/dev/null; then
    log "stopping dockyard-swarm-metrics.timer"
    systemctl disable --now dockyard-swarm-metrics.timer >/dev/null 2>&1
  fi
  for file in "$SYSROOT/usr/local/sbin/dockyard-swarm-metrics" "$SYSROOT/etc/dockyard/swarm-metrics.env" \
      "$UNITS/dockyard-swarm-metrics.service" "$UNITS/dockyard-swarm-metrics.timer" "$SYSROOT$METRICS_DIR/swarm.prom" \
      "$SYSROOT/etc/dockyard/stack-ca.crt"; do
    if [ -e "$file" ]; then
      log "removing $file"
      rm -f "$file"
    fi
  done
  [ -n "$SYSROOT" ] || systemctl daemon-reload
  exit 0
fi

put_file "$SYSROOT/usr/local/sbin/dockyard-swarm-metrics" 755 <<'COLLECTOR'
#!/bin/sh
# dockyard-swarm-metrics: the swarm's nodes and services as Prometheus text, for
# node-exporter's textfile collector (METRICS_DIR, REGISTRY_URL, GITEA_URL, CA_FILE from the unit).
set -eu
: "${METRICS_DIR:?}"
mkdir -p "$METRICS_DIR"
out=$(mktemp "$METRICS_DIR/.swarm.prom.XXXXXX")
trap 'rm -f "$out"' EXIT
now=$(date +%s)
{
  echo "# HELP dockyard_swarm_node_ready 1 if the swarm sees the node ready, else 0."
  echo "# TYPE dockyard_swarm_node_ready gauge"
  docker node ls --format '{{.Hostname}} {{.Status}}' | while read -r node status; do
    [ "$status" = Ready ] && ready=1 || ready=0
    echo "dockyard_swarm_node_ready{node=\"$node\"} $ready"
  done
  # four docker calls in all, whatever the number of services: each costs a busy host CPU
  services=$(docker service ls --format '{{.ID}} {{.Name}} {{.Replicas}}')
  echo "# HELP dockyard_swarm_service_desired_tasks Tasks the service should run."
  echo "# TYPE dockyard_swarm_service_desired_tasks gauge"
  echo "# HELP dockyard_swarm_service_running_tasks Tasks of the service running now."
  echo "# TYPE dockyard_swarm_service_running_tasks gauge"
  # Replicas is "running/desired", for global services too
  echo "$services" | while read -r id service replicas; do
    [ -n "$service" ] || continue
    running=${replicas%%/*}
    desired=${replicas#*/}
    desired=${desired%% *}
    echo "dockyard_swarm_service_desired_tasks{service=\"$service\"} $desired"
    echo "dockyard_swarm_service_running_tasks{service=\"$service\"} $running"
  done
  echo "# HELP dockyard_swarm_service_failed_tasks_15m Tasks of the service that failed in the last 15 minutes."
  echo "# TYPE dockyard_swarm_service_failed_tasks_15m gauge"
  ids=$(echo "$services" | awk '{print $1}')
  # "<service id> <state> <unix time>" of every task that ended
  ended=$(if [ -n "$ids" ]; then
            # shellcheck disable=SC2086  # one word per service id
            docker service ps --no-trunc --quiet --filter desired-state=shutdown $ids |
              xargs -r docker inspect --format '{{.ServiceID}} {{.Status.State}} {{.Status.Timestamp.Unix}}' 2>/dev/null
          fi || true)
  echo "$services" | while read -r id service replicas; do
    [ -n "$service" ] || continue
    failed=$(echo "$ended" | awk -v id="$id" -v now="$now" '
      substr($1, 1, length(id)) == id && ($2 == "failed" || $2 == "rejected") && now - $3 <= 900 { n++ }
      END { print n + 0 }')
    echo "dockyard_swarm_service_failed_tasks_15m{service=\"$service\"} $failed"
  done
  echo "# HELP dockyard_service_up 1 if the stack's service answers over HTTP, else 0."
  echo "# TYPE dockyard_service_up gauge"
  for pair in "registry=${REGISTRY_URL:-}" "gitea=${GITEA_URL:-}"; do
    url=${pair#*=}
    [ -n "$url" ] || continue
    # any HTTP answer is an answer (the registry asks for a password); no answer is 000, and
    # so is a certificate the stack's CA did not sign
    code=$(curl --silent --output /dev/null --max-time 10 --write-out '%{http_code}' \
      ${CA_FILE:+--cacert "$CA_FILE"} "$url" || true)
    [ "${code:-000}" != 000 ] && up=1 || up=0
    echo "dockyard_service_up{service=\"${pair%%=*}\"} $up"
  done
} > "$out"
chmod 644 "$out"
mv "$out" "$METRICS_DIR/swarm.prom"
trap - EXIT
COLLECTOR

if [ -n "$CA_CERT" ]; then
  case "$CA_CERT" in *"BEGIN CERTIFICATE"*) ;; *) fatal "CA_CERT is no PEM certificate" ;; esac
  put_file "$SYSROOT/etc/dockyard/stack-ca.crt" 644 <<<"$(printf '%s' "$CA_CERT")"
fi

put_file "$SYSROOT/etc/dockyard/swarm-metrics.env" 644 <<EOF
METRICS_DIR=$METRICS_DIR
REGISTRY_URL=$REGISTRY_URL
GITEA_URL=$GITEA_URL
CA_FILE=${CA_CERT:+/etc/dockyard/stack-ca.crt}
EOF

put_file "$UNITS/dockyard-swarm-metrics.service" 644 <<'EOF'
[Unit]
Description=dockyard: the swarm's nodes and services for node-exporter
After=docker.service

[Service]
Type=oneshot
EnvironmentFile=/etc/dockyard/swarm-metrics.env
ExecCondition=/bin/sh -c '[ "$(docker info --format "{{.Swarm.ControlAvailable}}")" = true ]'
ExecStart=/usr/local/sbin/dockyard-swarm-metrics
EOF

put_file "$UNITS/dockyard-swarm-metrics.timer" 644 <<'EOF'
[Unit]
Description=dockyard: the swarm's metrics every minute

[Timer]
OnBootSec=60s
OnUnitActiveSec=60s
AccuracySec=1s

[Install]
WantedBy=timers.target
EOF

[ -z "$SYSROOT" ] || exit 0
if [ "$units_changed" = yes ]; then
  systemctl daemon-reload
fi
if ! systemctl is-active --quiet dockyard-swarm-metrics.timer || [ "$units_changed" = yes ]; then
  log "starting dockyard-swarm-metrics.timer"
  systemctl enable --now dockyard-swarm-metrics.timer >/dev/null 2>&1
  systemctl restart dockyard-swarm-metrics.timer
fi
systemctl start dockyard-swarm-metrics.service
