#!/usr/bin/env bash
# lib.sh: the plumbing every script in this directory shares. It never runs by itself:
# components/shell.py puts it in front of each script it hands out (over ssh to `bash -s`,
# or here to `bash -c`), with DOCKYARD_SCRIPT, the script's name for its log lines, between
# the two. So it is part of every script's digest: an edit of it runs every script again.
#
# Inputs: none from the host; what a script gives its functions:
#   log MESSAGE...                 a line on stderr: "<script>: MESSAGE"
#   fatal MESSAGE...               log "error: MESSAGE", then exit 1
#   require_env NAME...            stop, naming every NAME that is unset or empty
#   default_env NAME[=VALUE]...    each NAME the environment leaves empty is VALUE (or empty)
#   put_file PATH MODE [MESSAGE]   stdin becomes the file PATH, atomically, if it differs
#   put_value PATH MODE VALUE      put_file with VALUE and one line break, however many it came with
#   locked LOCK COMMAND [ARG]...   COMMAND holding the lock file LOCK (flock)
#   apt_install PACKAGE[=VERSION]...  install the packages dpkg does not have
#   apt_update, apt_get ARG...     apt-get's update (once a run), apt-get without questions
#   check_data_path_addr           stop when this swarm node's data path is not DATA_PATH_ADDR
#   put_firewall_unit NAME DESCRIPTION RULE...  a unit that puts iptables RULEs in before docker starts
#   firewall_unit_up NAME CHANGED  enable unit NAME, and (re)start it now when CHANGED is yes or it is not active
#
# Runs on Debian 12 and Ubuntu 24.04 as root, and (images-send.sh, swarm-membership.sh,
# droplet-power-off.sh) on the operator's machine.

set -eu
# Unquoted expansions are lists split on spaces (hosts, packages, paths), never patterns: a
# value holding a `*` stays that value. A script that means a glob turns them on around it.
set -f

log() { echo "${DOCKYARD_SCRIPT:-dockyard}: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

# require_env NAME...: the message names variables, never a value (some are secrets)
require_env() {
  local name missing=""
  for name in "$@"; do
    [ -n "${!name:-}" ] || missing="${missing:+$missing, }$name"
  done
  [ -z "$missing" ] || fatal "$missing must be set"
}

# default_env NAME[=VALUE]...: after it, `set -u` stops only at a name the script never set
default_env() {
  local pair name
  for pair in "$@"; do
    name=${pair%%=*}
    [ -z "${!name:-}" ] || continue
    case "$pair" in
      *=*) printf -v "$name" '%s' "${pair#*=}" ;;
      *) printf -v "$name" '' ;;
    esac
  done
}

# put_file PATH MODE [MESSAGE]: stdin goes to a temp file beside PATH (mktemp makes it 0600,
# so a secret is never readable by others while it is written; on PATH's filesystem, so the
# rename is atomic and nothing ever reads half a file), which gets MODE and replaces PATH
# only when it differs: a second run writes nothing. When it writes it logs MESSAGE
# (default "writing PATH") and sets file_changed=yes (else no), and units_changed=yes for a
# file under /etc/systemd/system, which systemd reads again only on daemon-reload.
file_changed=no units_changed=no
# shellcheck disable=SC2034  # file_changed and units_changed are for the scripts that read them
put_file() {
  local tmp
  file_changed=no
  mkdir -p "$(dirname "$1")" || fatal "cannot write $1"
  tmp=$(mktemp "$1.XXXXXX") || fatal "cannot write $1"
  if ! cat > "$tmp"; then
    rm -f "$tmp"
    fatal "cannot write $1"
  fi
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
    return 0
  fi
  if ! { chmod "$2" "$tmp" && mv -fT "$tmp" "$1"; }; then
    rm -f "$tmp"
    fatal "cannot write $1"
  fi
  file_changed=yes
  case "$1" in */etc/systemd/system/*) units_changed=yes ;; esac
  log "${3:-writing $1}"
}

# put_value PATH MODE VALUE: put_file of VALUE and one line break, however many it came with
put_value() { put_file "$1" "$2" <<<"$(printf '%s' "$3")"; }

# locked LOCK COMMAND [ARG]...: for a file that several runs change at once (scripts run in
# parallel): each holds LOCK from reading the file to renaming the new one over it, so none
# writes over a line another just added. It waits 5 minutes at most; one lock at a time
# (it holds it on fd 9). A run that stops halfway lets go of it as it exits.
locked() {
  local lock=$1 status
  shift
  mkdir -p "$(dirname "$lock")"
  exec 9>>"$lock"
  flock -w 300 9 || fatal "another run held $lock for 5 minutes; is an edit stuck?"
  "$@"
  status=$?  # reached with a failure only where the caller tests it (set -e is off there)
  exec 9>&-
  return "$status"
}

# apt_get ARG...: no questions, and a wait of up to 10 minutes for the lock of another apt
# (cloud-init's, unattended-upgrades) instead of failing at once
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 "$@"; }

apt_updated=no
apt_update() {
  [ "$apt_updated" = no ] || return 0
  apt_get update >/dev/null
  apt_updated=yes
}

# apt_install PACKAGE[=VERSION]...: without recommends, what dpkg does not have installed (at
# that exact version: a full version string, as `apt-cache madison` gives it, not a prefix or
# a pattern); the package lists are updated first, once a run, and only if it installs
apt_install() {
  local package want missing=""
  for package in "$@"; do
    want="install ok installed"
    case "$package" in *=*) want="$want ${package#*=}" ;; esac
    case "$(dpkg-query -W -f='${Status} ${Version}' "${package%%=*}" 2>/dev/null || true)" in
      "$want" | "$want "*) ;;
      *) missing="$missing $package" ;;
    esac
  done
  [ -n "$missing" ] || return 0
  log "installing$missing"
  apt_update
  # shellcheck disable=SC2086  # one word per package
  apt_get install --no-install-recommends $missing >/dev/null
}

# check_data_path_addr: Docker fixes a swarm node's data path address (where the overlays'
# VXLAN goes) when the node joins, and keeps it in its swarm state; a node that joined with
# another one than DATA_PATH_ADDR cannot be moved, and stops the run. DOCKER_SWARM_STATE
# stands for that file in tests.
check_data_path_addr() {
  local state=${DOCKER_SWARM_STATE:-/var/lib/docker/swarm/docker-state.json} current
  [ -r "$state" ] || return 0
  current=$(sed -n 's/.*"DataPathAddr": *"\([^"]*\)".*/\1/p' "$state")
  [ -n "$current" ] && [ "$current" != "$DATA_PATH_ADDR" ] || return 0
  fatal "this swarm node's overlay traffic goes over $current, not $DATA_PATH_ADDR, and Docker sets that" \
    "only when a node joins: set dockyard:encryptDataPath and dataPathCidr back to what the stack was" \
    "made with (encryptDataPath false for a stack made before dockyard encrypted the overlays), or" \
    "recreate the stack (pulumi destroy, then pulumi up: backups bring its data back)"
}

# put_firewall_unit NAME DESCRIPTION RULE...: /etc/systemd/system/NAME.service (under
# SYSROOT), a oneshot that runs before every start of docker (at boot too, so before Docker
# restarts its containers) and again with each restart: it makes Docker's DOCKER-USER chain
# if missing (Docker keeps what it holds) and inserts each RULE ("CHAIN match... -j TARGET")
# unless it is there. Sets file_changed as put_file does. A RULE must hold no `$` or `%`,
# which systemd would expand first.
put_firewall_unit() {
  local name=$1 description=$2 rule commands="iptables -w -N DOCKER-USER 2>/dev/null"
  shift 2
  for rule in "$@"; do
    case "$rule" in *[\$%\']*) fatal "firewall rule '$rule' holds a character systemd or sh would read" ;; esac
    commands="$commands; { iptables -w -C $rule 2>/dev/null || iptables -w -I $rule; } || exit 1"
  done
  put_file "${SYSROOT:-}/etc/systemd/system/$name.service" 0644 "writing $name.service" <<EOF
[Unit]
Description=$description
Before=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c '$commands'

[Install]
WantedBy=docker.service
EOF
}

# firewall_unit_up NAME CHANGED: unit NAME enabled, and run now when it CHANGED (yes) or
# is not active; run systemctl daemon-reload first when the unit file changed
firewall_unit_up() {
  local unit=$1.service
  systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl enable --quiet "$unit" || fatal "cannot enable $unit"
  if [ "$2" = yes ]; then
    systemctl restart "$unit" || fatal "$unit did not set its firewall rules; see journalctl -u $unit"
  elif ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit" || fatal "$unit did not set its firewall rules; see journalctl -u $unit"
  fi
}
