"""The host layer: how machines come to exist. A cloud module creates the machines of a
topology and hands back one `Host` for each; the roles only ever see `Host`s, so a new
cloud plugs in without touching them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
from pulumi_command import remote

from ..config import DockyardConfig
from ..topology import HostSpec


@dataclass
class Host:
    spec: HostSpec
    # The address the swarm, NFS and the other hosts use.
    private_ip: pulumi.Output[str]
    # How the bootstrap reaches the host (through the master when it is not the master).
    connection: pulumi.Output[remote.ConnectionArgs] | remote.ConnectionArgs
    # Where an operator connects to it: the master's public address for the master, the
    # private address (through the master) for the others.
    ssh_address: pulumi.Output[str]
    # Block device of the host's data volume, when it has one.
    data_device: Optional[pulumi.Input[str]] = None
    # What must exist before the bootstrap starts: the machine, its volume, its firewall.
    provisioned: list[pulumi.Resource] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def machine(self) -> pulumi.Resource:
        """The droplet or VM itself: the first of `provisioned`."""
        return self.provisioned[0]


@dataclass
class Platform:
    """What a cloud hands to the roles."""

    hosts: dict[str, Host]
    # The network every cluster host sits in: NFS read-only exports and the swarm's
    # ports are open to it and nothing wider.
    private_cidr: str
    # The stable public address of the master (a reserved IP on DigitalOcean).
    master_address: pulumi.Output[str]
    # The key the hosts accept, when the cloud made it (a secret); None when it is the user's.
    ssh_private_key: Optional[pulumi.Output[str]] = None
    # A file holding the hosts' private key, for tools that run the system ssh (the docker
    # provider, the memberships); None when the user's ssh agent holds it.
    identity_file: Optional[str] = None
    # A known_hosts file with every host's key, when the cloud learns them (local VMs report
    # theirs, DigitalOcean's are made by the stack); None: those tools accept a host's key unseen.
    known_hosts_file: Optional[str] = None
    # True: a host missing from that file is accepted unseen (and added), one in it must
    # match (droplets made before the stack made host keys); False: only the file's keys.
    known_hosts_accept_new: bool = False
    # That file's lines ("address[,address] type key"), exported for ssh on other machines.
    known_hosts: Optional[pulumi.Output[str]] = None
    # The file's path once this run has merged into it the lines the stack's last update
    # exported, on whichever machine runs the program (an operator's second machine too):
    # what reads the file waits for it. Known at the start of a run, a preview's too, so
    # what waits for it does not wait for new hosts; None: the program writes no such file.
    known_hosts_synced: Optional[pulumi.Output[str]] = None
    # What writes those files: ssh waits for them.
    ssh_files_written: list[pulumi.Resource] = field(default_factory=list)

def policy_facts(config: DockyardConfig, admin_cidrs: list[str], retain_volumes: bool) -> dict:
    """What a cloud component declares for the policy pack, which cannot see resource
    options such as retainOnDelete. A cloud passes it as its inputs and registers it as
    outputs too: the engine hands a stack policy a component's outputs, not its inputs."""
    return {"stack": config.stack, "tier": config.tier, "adminCidrs": admin_cidrs,
            "vpcCidr": config.vpc_cidr, "disposable": config.disposable, "retainVolumes": retain_volumes}
