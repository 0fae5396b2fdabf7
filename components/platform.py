"""Choose the stack's cloud and bring the platform up on it."""
from __future__ import annotations

import pulumi

from .cluster import Cluster, ClusterArgs
from .config import DockyardConfig
from .topology import Topology


class CloudNotAvailable(Exception):
    pass


def deploy(config: DockyardConfig, topology: Topology, private_key: pulumi.Input[str]) -> Cluster:
    if config.cloud == "digitalocean":
        from .hosts.digitalocean import DigitalOceanCloud, DigitalOceanCloudArgs

        cloud = DigitalOceanCloud("do", DigitalOceanCloudArgs(config=config, topology=topology,
                                                               private_key=private_key))
        platform = cloud.platform
    else:
        raise CloudNotAvailable(
            "dockyard:cloud local is not available yet: the local-VM host layer is still being built. "
            "Use a DigitalOcean stack (pulumi stack select small) for now.")
    return Cluster(config.stack, ClusterArgs(config=config, topology=topology, platform=platform))
