"""The swarm's encrypted data path: a WireGuard network between the swarm nodes, over their
private addresses, that carries the overlay networks' traffic (swarm-datapath.sh).

Each node's address on it is its private address's offset in the VPC, at the same offset in
`dockyard:dataPathCidr`: stable for as long as the host keeps its private address, and no
two hosts share one. Docker fixes a node's data path address when it joins the swarm, so a
stack cannot switch between clear and encrypted on a live swarm: the program refuses that
before any change (`guard_data_path_change`), from its own last outputs."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

import pulumi

from .config import ConfigError
from .hosts import Host
from .ports import DATA_PATH_PORT
from .quorum import MANAGER_COUNT_OUTPUT
from .remote import run_script

# The stack output that says where the stack's overlay traffic goes: the data path's
# network, or CLEAR_DATA_PATH
DATA_PATH_OUTPUT = "swarm_data_path"
CLEAR_DATA_PATH = "private network, in clear"


def data_path_address(private_ip: str, private_cidr: str, data_path_cidr: str) -> str:
    """A node's address on the data path: its private address's place in the VPC, in
    the data path's network."""
    private, network = ipaddress.ip_network(private_cidr), ipaddress.ip_network(data_path_cidr)
    offset = int(ipaddress.ip_address(private_ip)) - int(private.network_address)
    if not 0 < offset < min(private.num_addresses, network.num_addresses) - 1:
        raise ValueError(f"{private_ip} is not a host address of {private_cidr} that fits in {data_path_cidr}")
    return str(network.network_address + offset)


def check_data_path_change(previous: Optional[str], stack_existed: bool, requested: str) -> None:
    """Raise ConfigError when the stack's swarm was made with its overlay traffic elsewhere
    than `requested`. A stack that existed before this output did has it in clear."""
    if not stack_existed:
        return
    made_with = previous or CLEAR_DATA_PATH
    if made_with == requested:
        return
    keep = ("dockyard:encryptDataPath false" if made_with == CLEAR_DATA_PATH
            else f"dockyard:encryptDataPath true with dataPathCidr {made_with}")
    raise ConfigError(
        f"invalid stack configuration:\n  dockyard:encryptDataPath: this stack's swarm carries its overlay "
        f"traffic on the {made_with}, and this configuration asks for the "
        f"{requested if requested == CLEAR_DATA_PATH else 'encrypted data path ' + requested}; Docker sets a "
        f"node's data path only when it joins the swarm. Keep what the stack was made with ({keep}), or "
        f"recreate the stack with the new setting (pulumi destroy, then pulumi up; backups bring its data back)")


def guard_data_path_change(own: pulumi.StackReference, data_path_cidr: Optional[str]) -> pulumi.Output[str]:
    """Check the data path against the stack's own last outputs; the value to export."""
    requested = data_path_cidr or CLEAR_DATA_PATH

    def check(values: list) -> str:
        previous, managers = values
        check_data_path_change(previous, managers is not None, requested)
        return requested
    return pulumi.Output.all(own.get_output(DATA_PATH_OUTPUT), own.get_output(MANAGER_COUNT_OUTPUT)).apply(check)


@dataclass
class SwarmDataPathArgs:
    # the swarm nodes
    hosts: list[Host]
    # the network of their private addresses (the VPC), and the data path's
    private_cidr: str
    data_path_cidr: str
    # per host: what its first run waits for (its engine)
    depends_on: dict[str, list[pulumi.Resource]]


class SwarmDataPath(pulumi.ComponentResource):
    # host name -> its address on the data path (what Docker's --data-path-addr gets)
    addresses: dict[str, pulumi.Output[str]]
    # host name -> the run that brought its interface up with every peer
    ready: dict[str, pulumi.Resource]

    def __init__(self, name: str, args: SwarmDataPathArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:swarm:DataPath", name, None, opts)
        prefix = ipaddress.ip_network(args.data_path_cidr).prefixlen
        public_keys: dict[str, pulumi.Output[str]] = {}
        keys: dict[str, pulumi.Resource] = {}
        self.addresses = {}
        for host in args.hosts:
            # each host makes its own key pair: only the public key leaves it
            key = run_script(f"{name}-{host.name}-key", connection=host.connection, script="swarm-datapath.sh",
                             env={"ACTION": "key"},
                             opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on[host.name]))
            keys[host.name] = key
            public_keys[host.name] = key.stdout.apply(lambda s: s.strip())
            self.addresses[host.name] = host.private_ip.apply(
                lambda ip: data_path_address(ip, args.private_cidr, args.data_path_cidr))

        def peer_line(other: Host) -> pulumi.Output[str]:
            return pulumi.Output.all(public_keys[other.name], other.private_ip, self.addresses[other.name]).apply(
                lambda values: " ".join(values))

        self.ready = {}
        for host in args.hosts:
            peers = pulumi.Output.all(*[peer_line(o) for o in args.hosts if o.name != host.name]).apply(
                lambda lines: "\n".join(sorted(lines)))
            self.ready[host.name] = run_script(
                f"{name}-{host.name}", connection=host.connection, script="swarm-datapath.sh",
                env={"ACTION": "up", "ADDRESS": self.addresses[host.name].apply(lambda a: f"{a}/{prefix}"),
                     "NETWORK": args.data_path_cidr, "PORT": str(DATA_PATH_PORT), "PEERS": peers},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[keys[host.name]]))
        self.register_outputs({"addresses": self.addresses})
