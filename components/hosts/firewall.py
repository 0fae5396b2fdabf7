"""Which ports each role opens and to whom, as data: the DigitalOcean cloud makes its
firewalls from it, and the tests check it. The port numbers come from ../ports.py."""
from __future__ import annotations

from dataclasses import dataclass

from .. import ports
from ..topology import Role

ANYWHERE = ("0.0.0.0/0", "::/0")
# (protocol, port range) as a firewall rule takes them
NFS_PORTS = tuple((proto, str(port)) for proto, port in ports.NFS_PORTS)
SSH = str(ports.SSH_PORT)


@dataclass(frozen=True)
class Rule:
    protocol: str
    port_range: str  # "" for icmp
    source_addresses: tuple[str, ...] = ()
    from_master: bool = False  # source: the master droplet


def inbound_rules(role: Role, private_cidr: str, admin_cidrs: tuple[str, ...],
                  public_ports: tuple[int, ...], ci_services: tuple[str, ...] = (),
                  ingress: bool = False, encrypted_data_path: bool = True) -> list[Rule]:
    rules = [Rule("icmp", "", (private_cidr,))]
    if role == Role.MASTER:
        rules.append(Rule("tcp", SSH, tuple(admin_cidrs)))
    else:
        rules.append(Rule("tcp", SSH, from_master=True))
    if role == Role.NFS:
        rules += [Rule(proto, port, (private_cidr,)) for proto, port in NFS_PORTS]
    if role == Role.CICD:
        for service in ci_services:
            port, for_admins = ports.CI_PORTS[service]
            rules.append(Rule("tcp", str(port), (private_cidr, *admin_cidrs) if for_admins else (private_cidr,)))
    if role in (Role.MANAGER, Role.WORKER):
        swarm = ports.swarm_ports(encrypted_data_path)
        rules += [Rule(proto, str(port), (private_cidr,)) for proto, port in swarm]
        rules += [Rule("tcp", str(port), ANYWHERE) for port in public_ports]
    if role == Role.MANAGER and ingress:
        # traefik publishes these in host mode on the managers only
        rules += [Rule("tcp", str(port), ANYWHERE) for port in ports.INGRESS_PORTS]
    return rules
