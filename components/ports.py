"""The ports dockyard's hosts use, in one place. Pure data (no Pulumi imports), so that
anything can read it: the cloud firewalls (hosts/firewall.py), the `publicPorts` check
(config.py), the cluster's swarm endpoint, and the policy pack's list of ports never to open
to the internet, which should be this `CONTROL_PORTS`."""
from __future__ import annotations

SSH_PORT = 22
SWARM_MANAGEMENT_PORT = 2377
VXLAN_PORT = 4789
# WireGuard between the swarm nodes: the overlays' traffic (VXLAN) goes inside it, encrypted
DATA_PATH_PORT = 51820

# Ports that must never be reachable from the internet, and what listens on them.
CONTROL_PORTS = {2375: "Docker API", 2376: "Docker API (TLS)", SWARM_MANAGEMENT_PORT: "swarm management",
                 7946: "swarm gossip", VXLAN_PORT: "swarm overlay (VXLAN)",
                 DATA_PATH_PORT: "swarm data path (WireGuard)", 111: "rpcbind", 2049: "NFS"}
# What no stack may publish to the internet on its swarm nodes (`dockyard:publicPorts`).
NEVER_PUBLIC = frozenset({SSH_PORT, *CONTROL_PORTS})

# (protocol, port) of what the swarm nodes and the NFS servers open to the private network:
# the overlays' VXLAN goes inside WireGuard when the data path is encrypted, and VXLAN sent
# to the private address itself is then refused
SWARM_CONTROL_PORTS = (("tcp", SWARM_MANAGEMENT_PORT), ("tcp", 7946), ("udp", 7946))


def swarm_ports(encrypted_data_path: bool) -> tuple[tuple[str, int], ...]:
    return SWARM_CONTROL_PORTS + ((("udp", DATA_PATH_PORT),) if encrypted_data_path else (("udp", VXLAN_PORT),))


NFS_PORTS = (("tcp", 2049),)

# The CI/CD services' ports, and whether the admins reach them too (the web UIs) or only
# the cluster (the registry). A port is open only while its service runs.
CI_PORTS = {"registry": (5000, False), "gitea": (3000, True), "drone": (8000, True)}

# What the ingress (traefik) publishes on every manager, to the internet.
INGRESS_PORTS = (80, 443)
