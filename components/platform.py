"""Choose the stack's cloud and bring the platform up on it."""
from __future__ import annotations

from typing import Optional

import pulumi

from .cluster import Cluster, ClusterArgs
from .config import DockyardConfig
from .topology import Topology


def deploy(config: DockyardConfig, topology: Topology,
           private_key: Optional[pulumi.Input[str]]) -> Cluster:
    """The stack's hosts on its cloud, and the platform on them. DigitalOcean hosts take
    the configured key; local VMs get a key made for the stack."""
    if config.cloud == "digitalocean":
        from .hosts.digitalocean import DigitalOceanCloud, DigitalOceanCloudArgs

        cloud = DigitalOceanCloud("do", DigitalOceanCloudArgs(config=config, topology=topology,
                                                               private_key=private_key))
        platform = cloud.platform
    else:
        from .hosts.local import LocalCloud, LocalCloudArgs

        cloud = LocalCloud("local", LocalCloudArgs(config=config, topology=topology))
        platform = cloud.platform
    return Cluster(config.stack, ClusterArgs(config=config, topology=topology, platform=platform))
