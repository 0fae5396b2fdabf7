"""A stack's VM network: a network namespace holding a bridge, joined to this machine by a
veth pair that gets the first address of the range. (A bridge in the host's own namespace
can have VM-to-VM traffic dropped by the host's firewall; inside the namespace nothing
filters it.)"""
from __future__ import annotations

import ipaddress
import subprocess

from localcloud.system import log, run

BRIDGE = "br0"


def netns(net: str) -> str:
    return f"dockyard-{net}"


def host_link(net: str) -> str:
    return f"dy-{net}"[:15]


def netns_exists(net: str) -> bool:
    return netns(net) in run("ip", "netns", "list").stdout.split()


def in_netns(net: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", netns(net), *args, check=check)


def network_up(net: str, cidr: str) -> str:
    network = ipaddress.ip_network(cidr)
    host_address = f"{network.network_address + 1}/{network.prefixlen}"
    if not netns_exists(net):
        log(f"creating network {net} ({cidr}) in namespace {netns(net)}")
        run("ip", "netns", "add", netns(net))
    in_netns(net, "ip", "link", "set", "lo", "up")
    if in_netns(net, "ip", "link", "show", BRIDGE, check=False).returncode != 0:
        in_netns(net, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_netns(net, "ip", "link", "set", BRIDGE, "up")
    link = host_link(net)
    if run("ip", "link", "show", link, check=False).returncode != 0:
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "uplink", "netns", netns(net))
    in_netns(net, "ip", "link", "set", "uplink", "master", BRIDGE)
    in_netns(net, "ip", "link", "set", "uplink", "up")
    if host_address not in run("ip", "-o", "addr", "show", "dev", link).stdout:
        run("ip", "addr", "add", host_address, "dev", link)
    run("ip", "link", "set", link, "up")
    return host_address.split("/")[0]


def network_down(net: str) -> None:
    if netns_exists(net):
        run("ip", "netns", "delete", netns(net))
    if run("ip", "link", "show", host_link(net), check=False).returncode == 0:
        run("ip", "link", "delete", host_link(net))
