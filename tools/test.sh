#!/usr/bin/env bash
# test.sh: the project's test command: set up, then run the whole suite.
# Extra arguments go to pytest (e.g. tools/test.sh -k firewall).
set -eu
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python -m pytest "$@"
