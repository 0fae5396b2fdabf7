# shellcheck shell=bash
# env.sh: the shell environment dockyard's commands run in. Source it from the repository's
# root, like a virtualenv's activate:   . tools/env.sh
#
# - puts the Pulumi CLI that tools/setup.sh installed, and .venv, first on PATH;
# - the engine never downloads a plugin by itself and never checks for updates;
# - state on the file backend, and the passphrase that encrypts its secrets in a file
#   made once (mode 0600), unless you set your own PULUMI_BACKEND_URL and
#   PULUMI_CONFIG_PASSPHRASE / PULUMI_CONFIG_PASSPHRASE_FILE.
# It installs nothing and never exits your shell; the first time, it makes the passphrase
# file and the backend directory.

DOCKYARD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
# The engine's version is the Python SDK's pin: one source for both.
DOCKYARD_PULUMI_VERSION=$(sed -n 's/^pulumi==//p' "$DOCKYARD_ROOT/requirements.txt")
DOCKYARD_TOOLCHAIN_DIR=${DOCKYARD_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dockyard/toolchain}
DOCKYARD_STATE_HOME=${DOCKYARD_STATE_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/dockyard}
export DOCKYARD_ROOT DOCKYARD_PULUMI_VERSION DOCKYARD_TOOLCHAIN_DIR DOCKYARD_STATE_HOME

case ":$PATH:" in
  *":$DOCKYARD_TOOLCHAIN_DIR/pulumi-$DOCKYARD_PULUMI_VERSION/pulumi:"*) ;;
  *) PATH="$DOCKYARD_TOOLCHAIN_DIR/pulumi-$DOCKYARD_PULUMI_VERSION/pulumi:$PATH" ;;
esac
case ":$PATH:" in
  *":$DOCKYARD_ROOT/.venv/bin:"*) ;;
  *) PATH="$DOCKYARD_ROOT/.venv/bin:$PATH" ;;
esac
export PATH

export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$DOCKYARD_STATE_HOME/pulumi}
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  export PULUMI_CONFIG_PASSPHRASE_FILE="$DOCKYARD_STATE_HOME/passphrase"
  if [ ! -s "$PULUMI_CONFIG_PASSPHRASE_FILE" ]; then
    # made once: losing it loses the secrets of every stack on this backend
    # written aside and moved without overwriting: two first shells keep one passphrase
    (umask 077 && mkdir -p "$DOCKYARD_STATE_HOME" &&
      tmp=$(mktemp "$PULUMI_CONFIG_PASSPHRASE_FILE.XXXXXX") &&
      od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$tmp" &&
      { mv -n "$tmp" "$PULUMI_CONFIG_PASSPHRASE_FILE"; rm -f "$tmp"; })
  fi
fi
case "$PULUMI_BACKEND_URL" in
  file://*) mkdir -p "${PULUMI_BACKEND_URL#file://}" ;;
esac
