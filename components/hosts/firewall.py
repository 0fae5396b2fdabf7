"""Which ports each role opens and to whom. Pure data, shared by the DigitalOcean cloud
firewalls, the tests and the policy pack."""
from __future__ import annotations

from dataclasses import dataclass

from ..topology import Role

ANYWHERE = ("0.0.0.0/0", "::/0")
SWARM_PORTS = (("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789"))
NFS_PORTS = (("tcp", "2049"),)
# Ports that must never be reachable from the internet.
CONTROL_PORTS = frozenset({"2375", "2376", "2377", "7946", "4789", "111", "2049"})


@dataclass(frozen=True)
class Rule:
    protocol: str
    port_range: str  # "" for icmp
    source_addresses: tuple[str, ...] = ()
    from_master: bool = False  # source: the master droplet


# The CI/CD services' ports, and whether the admins reach them too (the web UIs) or only
# the cluster (the registry). A port is open only while its service runs.
CI_PORTS = {"registry": ("5000", False), "gitea": ("3000", True), "drone": ("8000", True)}


def inbound_rules(role: Role, private_cidr: str, admin_cidrs: tuple[str, ...],
                  public_ports: tuple[int, ...], ci_services: tuple[str, ...] = ()) -> list[Rule]:
    rules = [Rule("icmp", "", (private_cidr,))]
    if role == Role.MASTER:
        rules.append(Rule("tcp", "22", tuple(admin_cidrs)))
    else:
        rules.append(Rule("tcp", "22", from_master=True))
    if role == Role.NFS:
        rules += [Rule(proto, port, (private_cidr,)) for proto, port in NFS_PORTS]
    if role == Role.CICD:
        for service in ci_services:
            port, for_admins = CI_PORTS[service]
            rules.append(Rule("tcp", port, (private_cidr, *admin_cidrs) if for_admins else (private_cidr,)))
    if role in (Role.MANAGER, Role.WORKER):
        rules += [Rule(proto, port, (private_cidr,)) for proto, port in SWARM_PORTS]
        rules += [Rule("tcp", str(port), ANYWHERE) for port in public_ports]
    return rules
