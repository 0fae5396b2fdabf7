#!/usr/bin/env bash
# swarm-datapath.sh: the swarm's encrypted data path on this host: a WireGuard interface
# (dockyard0) with a peer for every other swarm node. Docker's overlay networks send their
# VXLAN to the nodes' addresses on it (--data-path-addr), so what containers send each
# other across hosts leaves the host only inside WireGuard. Docker's own encryption
# (--opt encrypted) is IPsec ESP, which DigitalOcean's cloud firewalls do not pass.
#
# Inputs (environment):
#   ACTION   key: print this host's public key, making its key pair first when it has
#                 none (the private key never leaves the host)
#            up:  bring dockyard0 up with ADDRESS, PORT and PEERS, now and at every boot,
#                 and start Docker after it
#   ADDRESS  (up) this host's address on the data path, with the network's prefix length,
#            e.g. 100.90.0.12/16
#   NETWORK  (up) the data path's network, e.g. 100.90.0.0/16: containers may not send there
#   PORT     (up) the UDP port WireGuard listens on and sends to, on the private addresses
#   PEERS    (up) one peer a line: "<public key> <private address> <data path address>";
#            empty for a swarm of one node
#
# Installs (up): wg-quick@dockyard0, enabled; dockyard-datapath-guard.service, which before
# Docker starts drops UDP 4789 (VXLAN) in or out on any other interface and rejects what
# containers send to NETWORK; and a drop-in that starts Docker after the interface.
# For tests only:
#   SYSROOT  a directory that stands for / in the paths this script writes
#
# Output (key): the public key on stdout. Safe to run again: the key is made once, and
# peers are added, changed or removed in place, without dropping the others' traffic.

: "${DOCKYARD_SCRIPT:?runs behind lib.sh: python3 -m components.shell swarm-datapath.sh | bash -s}"

default_env ACTION ADDRESS NETWORK PORT PEERS SYSROOT
INTERFACE=dockyard0
KEY=$SYSROOT/etc/wireguard/$INTERFACE.key
CONF=$SYSROOT/etc/wireguard/$INTERFACE.conf
DOCKER_AFTER=$SYSROOT/etc/systemd/system/docker.service.d/dockyard-datapath.conf

[ "$(id -u)" = 0 ] || fatal "must run as root"
if ! command -v wg >/dev/null 2>&1 || ! command -v wg-quick >/dev/null 2>&1; then
  apt_install wireguard-tools
fi
mkdir -p "$SYSROOT/etc/wireguard"
chmod 0700 "$SYSROOT/etc/wireguard"

# a WireGuard key: 32 bytes in base64
is_key() { [[ "$1" =~ ^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$ ]]; }

case "$ACTION" in
  key)
    if [ ! -s "$KEY" ]; then
      wg genkey | put_file "$KEY" 0600 "making this host's data path key"
    fi
    public=$(wg pubkey < "$KEY") || fatal "$KEY holds no WireGuard private key; remove it and run again"
    is_key "$public" || fatal "wg pubkey printed no key"
    echo "$public"
    exit 0 ;;
  up) ;;
  *) fatal "ACTION must be key or up, not '$ACTION'" ;;
esac

require_env ADDRESS NETWORK PORT
[[ "$ADDRESS" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || fatal "ADDRESS must be an IPv4 address with its prefix length, not '$ADDRESS'"
[[ "$NETWORK" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || fatal "NETWORK must be an IPv4 network, not '$NETWORK'"
[[ "$PORT" =~ ^[0-9]{1,5}$ ]] || fatal "PORT must be a UDP port, not '$PORT'"
[ -s "$KEY" ] || fatal "this host has no data path key yet; ACTION=key makes it"

conf="[Interface]
Address = $ADDRESS
ListenPort = $PORT
PrivateKey = $(cat "$KEY")"
while read -r peer_key peer_endpoint peer_address rest; do
  [ -n "$peer_key" ] || continue
  is_key "$peer_key" || fatal "PEERS: '$peer_key' is not a WireGuard public key"
  [[ "$peer_endpoint" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || fatal "PEERS: '$peer_endpoint' is not an IPv4 address"
  [[ "$peer_address" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || fatal "PEERS: '$peer_address' is not an IPv4 address"
  [ -z "$rest" ] || fatal "PEERS: a line is '<public key> <private address> <data path address>'"
  conf="$conf

[Peer]
PublicKey = $peer_key
Endpoint = $peer_endpoint:$PORT
AllowedIPs = $peer_address/32"
done <<<"$PEERS"
# holds the private key: 0600, in a directory only root reads
put_file "$CONF" 0600 "writing the data path's configuration" <<<"$conf"

# Before Docker starts (at boot too): VXLAN only through dockyard0, never in clear on
# another interface (were dockyard0 missing, the data path's addresses would take the
# default route), and nothing a container sends reaches the data path's addresses (it
# could put frames of its own on any overlay from a valid peer).
put_firewall_unit dockyard-datapath-guard "dockyard: VXLAN only inside WireGuard, containers kept off the data path" \
  "OUTPUT -p udp --dport 4789 ! -o $INTERFACE -j DROP" "INPUT -p udp --dport 4789 ! -i $INTERFACE -j DROP" \
  "DOCKER-USER -d $NETWORK -j REJECT --reject-with icmp-port-unreachable"
guard_changed=$file_changed

# At boot Docker's swarm needs its data path address: Docker starts after the interface.
put_file "$DOCKER_AFTER" 0644 "starting Docker after the data path" <<EOF
[Unit]
Wants=wg-quick@$INTERFACE.service
After=wg-quick@$INTERFACE.service
EOF
[ "$units_changed" = no ] || systemctl daemon-reload

firewall_unit_up dockyard-datapath-guard "$guard_changed"
systemctl is-enabled --quiet "wg-quick@$INTERFACE" 2>/dev/null || systemctl enable --quiet "wg-quick@$INTERFACE" ||
  fatal "cannot enable wg-quick@$INTERFACE"

if ! ip link show "$INTERFACE" >/dev/null 2>&1; then
  log "bringing the data path up on $ADDRESS"
  systemctl start "wg-quick@$INTERFACE" || fatal "wg-quick@$INTERFACE did not start; see journalctl -u wg-quick@$INTERFACE"
elif ! ip -o -4 addr show dev "$INTERFACE" | grep -q " inet $ADDRESS "; then
  log "moving the data path to $ADDRESS"
  systemctl restart "wg-quick@$INTERFACE" || fatal "wg-quick@$INTERFACE did not restart; see journalctl -u wg-quick@$INTERFACE"
else
  # Every run, not only when the file changed: a run that stopped after writing it still
  # applies it the next time. addconf adds and updates peers and removes none: a node
  # leaving the swarm keeps its peer while it is drained (its removal comes after this).
  wg addconf "$INTERFACE" <(wg-quick strip "$INTERFACE") || fatal "wg addconf failed"
  printf -v now "%(%s)T" -1
  wanted=$(awk '$1 == "PublicKey" { print $3 }' "$CONF")
  # a peer no longer configured goes once it has no address left (a new node took it) or
  # has been silent for 3 minutes (its node is gone)
  wg show "$INTERFACE" dump | awk 'NR > 1 { print $1, $4, $5 }' | while read -r peer allowed handshake; do
    if ! grep -qxF "$peer" <<<"$wanted" && { [ "$allowed" = "(none)" ] || [ $((now - handshake)) -gt 180 ]; }; then
      log "removing the data path's peer $peer (no longer a swarm node)"
      wg set "$INTERFACE" peer "$peer" remove || fatal "cannot remove peer $peer"
    fi
  done
  log "data path up with $(grep -c '^\[Peer\]' "$CONF" || true) peer(s)"
fi
