#!/usr/bin/env bash
# setup.sh: install what dockyard's tests need: the project's virtualenv (.venv, from
# requirements-dev.txt) and shellcheck. Safe to run again; quick when all is in place.
set -eu
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || fatal "python3 (3.10 or newer) is needed"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv || fatal "python3 -m venv failed; install the python3-venv package"
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fatal "shellcheck is missing: sudo apt-get install shellcheck"
  log "installing shellcheck"
  apt-get -q update >/dev/null && apt-get -q -y install shellcheck >/dev/null
fi
log "ready"
