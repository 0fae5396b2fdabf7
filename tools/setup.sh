#!/usr/bin/env bash
# setup.sh: install what dockyard needs: the project's virtualenv (.venv, from
# requirements-dev.txt), the Pulumi CLI and its plugins (tools/toolchain.sh: from
# DOCKYARD_TOOLCHAIN_MIRROR when set, else the official downloads) and, as root, the
# packages the tests and the local VMs use. Safe to run again; quick when all is in place.
set -eu
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || fatal "python3 (3.10 or newer) is needed"
# The script tests need shellcheck; the local VMs need qemu, debootstrap and friends; a
# venv needs python3-venv on Debian and Ubuntu; the engine's download (without a mirror) curl.
missing=""
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing=" python3-venv"
needs="shellcheck:shellcheck qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap
       mke2fs:e2fsprogs ssh:openssh-client ssh-keygen:openssh-client ip:iproute2 flock:util-linux"
[ -n "${DOCKYARD_TOOLCHAIN_MIRROR:-}" ] || needs="$needs curl:curl"
for need in $needs; do
  command -v "${need%%:*}" >/dev/null 2>&1 || missing="$missing ${need#*:}"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || fatal "missing packages:$missing (sudo apt-get install$missing)"
  log "installing$missing"
  apt-get -q update >/dev/null
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/pip ]; then  # pip too: a venv that failed half-way has python only
  log "creating .venv"
  rm -rf .venv
  python3 -m venv .venv || fatal "python3 -m venv failed; install the python3-venv package"
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

tools/toolchain.sh
log "ready: now . tools/env.sh"
