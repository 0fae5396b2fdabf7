#!/usr/bin/env bash
# toolchain.sh: install the Pulumi CLI and the resource plugins at the versions that
# requirements.txt pins (pulumi==V for the CLI, pulumi-NAME==V for each plugin), taken from
#   1. a `pulumi` already on PATH at that version (its plugins are still checked);
#   2. the mirror directory DOCKYARD_TOOLCHAIN_MIRROR, laid out as the upstream releases
#      (pulumi-vV-OS-ARCH.tar.gz, pulumi-resource-NAME-vV-OS-ARCH.tar.gz, SHA256SUMS),
#      every file checked against SHA256SUMS before use: the air-gapped install;
#   3. otherwise the official downloads.
# The CLI goes to $DOCKYARD_TOOLCHAIN_DIR/pulumi-V/ (tools/env.sh puts it on PATH), the
# plugins wherever that pulumi keeps them (PULUMI_HOME). Safe to run again: what is in place
# at its version is left alone, so a second run takes seconds.
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=tools/env.sh
. tools/env.sh

log() { echo "toolchain: $*" >&2; }
fatal() { log "error: $*"; exit 1; }

version=$DOCKYARD_PULUMI_VERSION
[ -n "$version" ] || fatal "requirements.txt pins no pulumi==VERSION"
mirror=${DOCKYARD_TOOLCHAIN_MIRROR:-}
if [ -n "$mirror" ]; then
  [ -d "$mirror" ] || fatal "DOCKYARD_TOOLCHAIN_MIRROR=$mirror is not a directory"
  [ -f "$mirror/SHA256SUMS" ] || fatal "$mirror/SHA256SUMS is missing: the mirror must list its files' checksums"
  mirror=$(cd "$mirror" && pwd)
fi

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) fatal "no Pulumi release for $(uname -s)" ;;
esac
case "$(uname -m)" in
  x86_64|amd64) cli_arch=x64 plugin_arch=amd64 ;;
  aarch64|arm64) cli_arch=arm64 plugin_arch=arm64 ;;
  *) fatal "no Pulumi release for $(uname -m)" ;;
esac

# mirrored FILE: its path in the mirror, after its checksum matched SHA256SUMS
mirrored() {
  local file=$1 want got
  [ -f "$mirror/$file" ] || fatal "$mirror/$file is missing from the mirror"
  want=$(awk -v f="$file" '$2 == f || $2 == "*" f { print $1 }' "$mirror/SHA256SUMS")
  [ -n "$want" ] || fatal "$file is not listed in $mirror/SHA256SUMS"
  got=$(sha256sum "$mirror/$file" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fatal "checksum mismatch for $mirror/$file (SHA256SUMS says $want, the file is $got)"
  echo "$mirror/$file"
}

cli_dir="$DOCKYARD_TOOLCHAIN_DIR/pulumi-$version"
installed_version() { "$1" version 2>/dev/null | sed 's/^v//'; }
# a pulumi on PATH other than the one this script installs
other_pulumi() {
  local dir
  local IFS=:
  for dir in $PATH; do
    [ "$dir" != "$cli_dir/pulumi" ] && [ -x "$dir/pulumi" ] && { echo "$dir/pulumi"; return 0; }
  done
  return 1
}

# two runs at once (two test runs, two shells) must not replace each other's files
mkdir -p "$DOCKYARD_TOOLCHAIN_DIR"
exec 8>"$DOCKYARD_TOOLCHAIN_DIR/.lock"
command -v flock >/dev/null 2>&1 && { flock -w 600 8 || fatal "another install held $DOCKYARD_TOOLCHAIN_DIR/.lock for 10 minutes"; }

if [ -x "$cli_dir/pulumi/pulumi" ] && [ "$(installed_version "$cli_dir/pulumi/pulumi")" = "$version" ]; then
  log "pulumi $version: in place ($cli_dir)"
elif on_path=$(other_pulumi) && [ "$(installed_version "$on_path")" = "$version" ]; then
  log "pulumi $version: using $on_path"
  mkdir -p "$cli_dir/pulumi"
  for tool in "$(dirname "$on_path")"/pulumi*; do ln -sf "$tool" "$cli_dir/pulumi/"; done
else
  tarball="pulumi-v$version-$os-$cli_arch.tar.gz"
  tmp=$(mktemp -d "$DOCKYARD_TOOLCHAIN_DIR/.install.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if [ -n "$mirror" ]; then
    log "pulumi $version: installing from $mirror"
    source_file=$(mirrored "$tarball")
  else
    log "pulumi $version: downloading"
    command -v curl >/dev/null 2>&1 || fatal "curl is needed to download Pulumi (or set DOCKYARD_TOOLCHAIN_MIRROR)"
    curl -fsSL "https://get.pulumi.com/releases/sdk/$tarball" -o "$tmp/$tarball" ||
      fatal "could not download $tarball; without internet, set DOCKYARD_TOOLCHAIN_MIRROR to a mirror of the releases"
    want=$(curl -fsSL "https://get.pulumi.com/releases/sdk/pulumi-$version-checksums.txt" |
           awk -v f="$tarball" '$2 == f { print $1 }')
    [ "$(sha256sum "$tmp/$tarball" | cut -d' ' -f1)" = "$want" ] || fatal "checksum mismatch for the downloaded $tarball"
    source_file=$tmp/$tarball
  fi
  mkdir -p "$tmp/unpacked"
  tar -xzf "$source_file" -C "$tmp/unpacked"
  [ -x "$tmp/unpacked/pulumi/pulumi" ] || fatal "$tarball holds no pulumi/pulumi"
  rm -rf "$cli_dir" && mv "$tmp/unpacked" "$cli_dir"
  [ "$(installed_version "$cli_dir/pulumi/pulumi")" = "$version" ] || fatal "$tarball is not pulumi $version"
fi
pulumi=$cli_dir/pulumi/pulumi

have_plugins=$("$pulumi" plugin ls --json 2>/dev/null |
  python3 -c 'import json,sys; [print(p["name"], p["version"]) for p in json.load(sys.stdin) or [] if p["kind"] == "resource"]')
# every pulumi-NAME==VERSION pin but the SDK's own and the policy SDK's is a resource plugin
sed -n 's/^pulumi-\([a-z0-9]*\)==\([0-9.]*\)$/\1 \2/p' requirements.txt | grep -v '^policy ' |
while read -r name plugin_version; do
  if printf '%s\n' "$have_plugins" | grep -qx "$name $plugin_version"; then
    log "plugin $name $plugin_version: in place"
  elif [ -n "$mirror" ]; then
    log "plugin $name $plugin_version: installing from $mirror"
    file=$(mirrored "pulumi-resource-$name-v$plugin_version-$os-$plugin_arch.tar.gz")
    out=$("$pulumi" plugin install resource "$name" "$plugin_version" --file "$file" 2>&1) ||
      fatal "pulumi could not install $file: $out"
  else
    log "plugin $name $plugin_version: downloading"
    out=$("$pulumi" plugin install resource "$name" "$plugin_version" 2>&1) ||
      fatal "could not download plugin $name $plugin_version ($out); without internet, set DOCKYARD_TOOLCHAIN_MIRROR"
  fi
done
log "ready: $("$pulumi" version) (. tools/env.sh puts it on PATH)"
