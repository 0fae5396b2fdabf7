"""Host A: the master. It manages every other host and is their bastion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .hosts import Host
from .remote import run_script


@dataclass
class MasterArgs:
    host: Host
    hosts: list[Host]  # every host of the stack, the master included
    public_address: pulumi.Input[str]
    depends_on: list[pulumi.Resource]


class Master(pulumi.ComponentResource):
    def __init__(self, name: str, args: MasterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:Master", name, None, opts)
        inventory = pulumi.Output.all(*[h.private_ip for h in args.hosts]).apply(
            lambda ips: "\n".join(
                f"{h.name} {ip} {','.join(sorted(r.value for r in h.spec.roles))}" for h, ip in zip(args.hosts, ips)
            )
        )
        self.setup = run_script(
            f"{name}-bastion",
            connection=args.host.connection,
            script="master.sh",
            env={"INVENTORY": inventory},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.address = pulumi.Output.from_input(args.public_address)
        self.register_outputs({"address": self.address})
