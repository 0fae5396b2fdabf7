#!/usr/bin/env bash
# ci-tls.sh: put the TLS files Gitea, Drone and Drone's pipelines read on the CI/CD host's
# data volume, under $CI_ROOT/tls:
#   web.crt, web.key   the certificate Gitea and Drone serve (signed by the stack's CA); the
#                      key belongs to uid 1000, the user Gitea runs as, and to no one else
#   ca.crt             the stack's CA
#   ca-bundle.crt      this host's trusted roots and the stack's CA: what Gitea, Drone and the
#                      runner trust (SSL_CERT_FILE; mounted read-only)
#   steps/ca-bundle.crt  the same, for every pipeline step as its
#                      /etc/ssl/certs/ca-certificates.crt (the clone step reaches Gitea with
#                      it); immutable (chattr +i) between runs of this script
#
# Inputs (environment):
#   CI_ROOT    where the CI data volume is mounted, e.g. /srv/ci
#   CA_CERT    PEM certificate of the stack's CA (public)
# Inputs (secret, on stdin before this script):
#   WEB_CERT   PEM certificate of Gitea and Drone
#   WEB_KEY    PEM private key of that certificate
# For tests only:
#   SYSTEM_ROOTS  the host's bundle of trusted roots (default /etc/ssl/certs/ca-certificates.crt)
#   WEB_OWNER     owner of web.key (default 1000:1000)
#   CI_ROOT_IS_DIR  yes: CI_ROOT is a plain directory, not a mount
#
# Safe to run again: a file is written only when its content differs.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell ci-tls.sh | bash -s}"

require_env CI_ROOT CA_CERT WEB_CERT WEB_KEY
mountpoint -q "$CI_ROOT" || [ "${CI_ROOT_IS_DIR:-}" = yes ] || fatal "$CI_ROOT is not mounted: refusing to keep a key on the root disk"
default_env SYSTEM_ROOTS=/etc/ssl/certs/ca-certificates.crt WEB_OWNER=1000:1000
case "$CA_CERT" in *"BEGIN CERTIFICATE"*) ;; *) fatal "CA_CERT is no PEM certificate" ;; esac
case "$WEB_CERT" in *"BEGIN CERTIFICATE"*) ;; *) fatal "WEB_CERT is no PEM certificate" ;; esac
case "$WEB_KEY" in *"PRIVATE KEY"*) ;; *) fatal "WEB_KEY is no PEM private key" ;; esac

umask 022
tls=$CI_ROOT/tls
mkdir -p "$tls"
chmod 755 "$tls"
put_value "$tls/ca.crt" 0644 "$CA_CERT"
put_value "$tls/web.crt" 0644 "$WEB_CERT"
put_value "$tls/web.key" 0600 "$WEB_KEY"
# the owner is set before anyone reads the new key: Gitea starts after this script
[ "$(stat -c %u:%g "$tls/web.key")" = "$WEB_OWNER" ] || chown "$WEB_OWNER" "$tls/web.key"
if [ -r "$SYSTEM_ROOTS" ]; then
  roots=$(cat "$SYSTEM_ROOTS")
else
  log "no $SYSTEM_ROOTS on this host: the pipelines trust the stack's CA only"
  roots=
fi
put_value "$tls/ca-bundle.crt" 0644 "$roots
$CA_CERT"
# The runner mounts the steps' copy into every step read-write (its DRONE_RUNNER_VOLUMES
# cannot say ":ro") and a pull request's steps run as root: immutable, no step changes what
# later builds trust (containers lack CAP_LINUX_IMMUTABLE). The services' own is not mounted
# into any step.
steps=$tls/steps/ca-bundle.crt
mkdir -p "$tls/steps"
if ! cmp -s "$tls/ca-bundle.crt" "$steps"; then
  [ ! -e "$steps" ] || chattr -i "$steps" || fatal "cannot lift the immutable flag of $steps"
  put_file "$steps" 0644 < "$tls/ca-bundle.crt"
fi
flags=$(lsattr -d "$steps" 2>/dev/null | cut -d' ' -f1)
case "$flags" in
  *i*) ;;
  *) chattr +i "$steps" 2>/dev/null ||
       fatal "this filesystem cannot make $steps immutable (chattr +i); a pipeline step could change it" ;;
esac
log "TLS files for Gitea, Drone and the pipelines in place under $tls"
