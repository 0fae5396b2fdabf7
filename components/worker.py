"""Swarm workers (thesis 3.5): they run the tasks the managers hand them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .hosts import Host
from .manager import SwarmJoin, join_swarm, node_labels, node_membership


@dataclass
class SwarmWorkerArgs:
    host: Host
    join: SwarmJoin
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]
    # the node's address on the encrypted data path; None: its private address
    data_path_address: Optional[pulumi.Output[str]] = None


class SwarmWorker(pulumi.ComponentResource):
    def __init__(self, name: str, args: SwarmWorkerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:SwarmWorker", name, None, opts)
        self.joined, self.node_id = join_swarm(name, host=args.host, join=args.join, role="worker", parent=self,
                                               depends_on=args.depends_on,
                                               data_path_address=args.data_path_address)
        self.membership = node_membership(name, node_id=self.node_id, join=args.join, parent=self,
                                          depends_on=[self.joined] + args.join.init_and_tokens)
        self.labels = node_labels(name, node_id=self.node_id, labels=args.labels, join=args.join, parent=self,
                                  depends_on=[self.joined] + args.join.init_and_tokens)
        self.register_outputs({"node_id": self.node_id})
