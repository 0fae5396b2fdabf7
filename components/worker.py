"""Swarm workers (thesis 3.5): they run the tasks the managers hand them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .hosts import Host
from .manager import SwarmJoin, node_labels, node_membership
from .remote import run_script


@dataclass
class SwarmWorkerArgs:
    host: Host
    join: SwarmJoin
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]


class SwarmWorker(pulumi.ComponentResource):
    def __init__(self, name: str, args: SwarmWorkerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:SwarmWorker", name, None, opts)
        self.membership = run_script(
            f"{name}-swarm-join",
            connection=args.host.connection,
            script="swarm-join.sh",
            env={"MANAGER_ADDR": args.join.manager_address, "ADVERTISE_ADDR": args.host.private_ip,
                 "JOIN_ROLE": "worker"},
            secret_env={"JOIN_TOKEN": args.join.worker_token},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on + args.join.ready),
        )
        self.node_id = self.membership.stdout.apply(lambda s: s.strip())
        self.removal = node_membership(name, node_id=self.node_id, join=args.join, parent=self,
                                       depends_on=[self.membership] + args.join.ready)
        self.labels = node_labels(name, node_id=self.node_id, labels=args.labels, join=args.join, parent=self,
                                  depends_on=[self.membership] + args.join.ready)
        self.register_outputs({"node_id": self.node_id})
