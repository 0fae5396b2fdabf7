#!/usr/bin/env bash
# registry-client.sh: make this host's Docker engine trust the stack's registry (its CA
# certificate under /etc/docker/certs.d, so no insecure-registry setting is needed) and,
# when credentials are given, log the host's docker CLI in to it (managers deploy with
# --with-registry-auth, the CI host pushes).
#
# Inputs (environment):
#   REGISTRY           registry address as images name it, e.g. 10.210.0.2:5000
#   CA_CERT            PEM certificate of the stack's CA (public)
# Inputs (secret, on stdin before this script, optional):
#   REGISTRY_USER, REGISTRY_PASSWORD   log in with these
#
# Safe to run again: the certificate is written only when it differs; a login with the
# credentials already stored changes nothing.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell registry-client.sh | bash -s}"

require_env REGISTRY CA_CERT
default_env REGISTRY_USER REGISTRY_PASSWORD

# docker reads only *.crt: put_file's temp file beside it is not one. The certificate ends in
# one line break, however many it came with.
put_file "/etc/docker/certs.d/$REGISTRY/ca.crt" 0644 <<<"$(printf '%s' "$CA_CERT")"

if [ -n "$REGISTRY_USER" ]; then
  [ -n "$REGISTRY_PASSWORD" ] || fatal "REGISTRY_USER is set but REGISTRY_PASSWORD is not"
  # The registry may still be starting on a fresh stack.
  for attempt in $(seq 1 30); do
    if printf '%s' "$REGISTRY_PASSWORD" | docker login -u "$REGISTRY_USER" --password-stdin "$REGISTRY" >/dev/null 2>&1; then
      break
    fi
    [ "$attempt" -lt 30 ] || fatal "cannot log in to $REGISTRY; is the registry container running on the CI host?"
    sleep 5
  done
  log "docker on $(hostname) trusts and is logged in to $REGISTRY"
else
  log "docker on $(hostname) trusts $REGISTRY"
fi
