"""Local hosts: Debian VMs under qemu (KVM where it works, TCG otherwise) on a private
network in a namespace that the machine running Pulumi reaches directly. The VMs are made
and removed by `python3 -m localcloud` through pulumi-command local commands, so `pulumi
destroy` stops every VM and deletes its disks, tap device and, last, the network.

The roles see the same `Host`s as on DigitalOcean; only the bastion hop is unnecessary
(this machine is on the VMs' network)."""
from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_tls as tls
from pulumi_command import local, remote

from localcloud.base_image import recipe_digest
from localcloud.vm import key_file, known_hosts_file

from ..config import DockyardConfig
from ..topology import HostSpec, Topology
from . import Host, Platform, policy_facts

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCALCLOUD = "python3 -m localcloud"
FIRST_HOST_OFFSET = 11  # .1 is this machine; VMs start at .11
DATA_DISK_GB = {"nfs": 20, "ci": 20}
# One size for every VM: a VM starts from the warm template of its size (localcloud/warm.py),
# so one size means one template. Memory the guest does not touch costs the host nothing.
VM_MEMORY_MB = 1536
# A VM that cannot start warm boots cold: on an emulated CPU 1-2 minutes, 3 at once longer.
SSH_WAIT_SECONDS = 900


def host_key_of(create_output: str) -> Optional[str]:
    """The SSH host key `localcloud create` printed ("type base64"), None when it has none."""
    try:
        key = json.loads(create_output).get("hostKey", "")
    except ValueError:
        return None
    return " ".join(key.split()[:2]) or None


def vm_addresses(topology: Topology, cidr: str) -> dict[str, str]:
    network = ipaddress.ip_network(cidr)
    return {h.name: f"{network.network_address + FIRST_HOST_OFFSET + i}/{network.prefixlen}"
            for i, h in enumerate(topology.hosts)}


@dataclass
class LocalCloudArgs:
    config: DockyardConfig
    topology: Topology


class LocalCloud(pulumi.ComponentResource):
    platform: Platform

    def __init__(self, name: str, args: LocalCloudArgs, opts: Optional[pulumi.ResourceOptions] = None):
        cfg, topo = args.config, args.topology
        declared = policy_facts(cfg, admin_cidrs=[], retain_volumes=False)
        super().__init__("dockyard:local:Cloud", name, declared, opts)
        child = pulumi.ResourceOptions(parent=self)
        net = cfg.stack
        network_cidr = str(ipaddress.ip_network(cfg.vpc_cidr))
        run_here = dict(dir=str(PROJECT_ROOT))

        self.ssh_key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=child)
        self.image = local.Command(
            f"{name}-image",
            create=f"{LOCALCLOUD} image",
            triggers=[recipe_digest()],
            opts=child,
            **run_here,
        )
        self.network = local.Command(
            f"{name}-network",
            create=f"{LOCALCLOUD} network-up --net {shlex.quote(net)} --cidr {network_cidr}",
            delete=f"{LOCALCLOUD} network-down --net {shlex.quote(net)}",
            opts=child,
            **run_here,
        )

        # the provider marks it secret too; saying so here keeps it secret on every path
        private_key = pulumi.Output.secret(self.ssh_key.private_key_openssh)
        key_path = key_file(net)
        self.key_file = local.Command(
            f"{name}-ssh-key-file",
            create=f"umask 077 && mkdir -p {shlex.quote(str(key_path.parent))} && cat > {shlex.quote(str(key_path))}",
            stdin=private_key,
            delete=f"rm -f {shlex.quote(str(key_path))}",
            opts=child,
        )
        addresses = vm_addresses(topo, network_cidr)
        # the stack's preloaded images go into the VMs' warm template: loaded once, not per VM
        bake = " ".join(f"--bake {shlex.quote(path)}" for path in cfg.preload_images)
        self.vms: dict[str, local.Command] = {}
        hosts = {spec.name: self._vm(name, net, spec, addresses[spec.name], bake, private_key, run_here)
                 for spec in topo.hosts}
        # the keys the VMs reported, for the tools that run the system ssh (the docker
        # provider, the memberships, the preloads): they accept no other
        known_hosts = known_hosts_file(net)
        vm_ips = [addresses[spec.name].split("/")[0] for spec in topo.hosts]
        lines = pulumi.Output.all(*[self.vms[spec.name].stdout for spec in topo.hosts]).apply(
            lambda outputs: "".join(f"{ip} {host_key_of(out)}\n" for ip, out in zip(vm_ips, outputs)
                                    if host_key_of(out)))
        self.known_hosts = local.Command(
            f"{name}-known-hosts",
            create=f"mkdir -p {shlex.quote(str(known_hosts.parent))} && cat > {shlex.quote(str(known_hosts))}",
            stdin=lines,
            delete=f"rm -f {shlex.quote(str(known_hosts))}",
            opts=child,
        )
        master_ip = hosts[topo.master.name].private_ip
        self.platform = Platform(hosts=hosts, private_cidr=network_cidr, master_address=master_ip,
                                 ssh_private_key=private_key, identity_file=str(key_path),
                                 known_hosts_file=str(known_hosts), known_hosts=lines,
                                 ssh_files_written=[self.key_file, self.known_hosts])
        self.register_outputs({**declared, "master_address": master_ip})

    def _vm(self, name: str, net: str, spec: HostSpec, address: str, bake: str,
            private_key: pulumi.Output[str], run_here: dict) -> Host:
        """One VM on the stack's network, and the Host the roles reach it as."""
        vm_name = f"{net}-{spec.name}"
        data_gb = DATA_DISK_GB.get(spec.volume or "", 0)
        create = self.ssh_key.public_key_openssh.apply(
            lambda key: f"{LOCALCLOUD} create --net {shlex.quote(net)} --name {shlex.quote(vm_name)} "
                        f"--hostname {spec.name} --address {address} "
                        f"--data-gb {data_gb} --memory {VM_MEMORY_MB} --wait {SSH_WAIT_SECONDS} {bake} "
                        f"--key {shlex.quote(key.strip())}")
        vm = local.Command(
            f"{name}-{spec.name}",
            create=create,
            delete=f"{LOCALCLOUD} delete --net {shlex.quote(net)} --name {shlex.quote(vm_name)}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.network, self.image]),
            **run_here,
        )
        self.vms[spec.name] = vm
        ip = address.split("/")[0]
        return Host(
            spec=spec,
            private_ip=pulumi.Output.from_input(ip),
            # the VM reports the host key it made: every connection checks it
            connection=pulumi.Output.all(vm.stdout, private_key).apply(
                lambda values: remote.ConnectionArgs(
                    host=ip, user="root", private_key=values[1], host_key=host_key_of(values[0]),
                    dial_error_limit=20, per_dial_timeout=15)),
            ssh_address=pulumi.Output.from_input(ip),
            data_device="/dev/vdb" if data_gb else None,
            provisioned=[vm],
        )
