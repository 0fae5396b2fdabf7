#!/usr/bin/env bash
# test.sh: the project's test command: set up, then run the whole suite in the project's
# environment (tools/env.sh: the pinned Pulumi CLI, .venv, a file backend).
# Extra arguments go to pytest (e.g. tools/test.sh -k firewall).
set -eu
cd "$(dirname "$0")/.."
tools/setup.sh
# shellcheck source=tools/env.sh
. tools/env.sh
exec .venv/bin/python -m pytest "$@"
