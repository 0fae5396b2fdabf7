"""The part of the bootstrap every host shares: its data volume, the Docker engine and its upkeep."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from .maintenance import DEFAULT_PRUNE_AFTER, DEFAULT_PRUNE_SCHEDULE, maintenance_env
from .hosts import Host
from .remote import run_script


@dataclass
class DockerHostArgs:
    host: Host
    docker_version: str
    registry_mirrors: tuple[str, ...]
    data_mount: Optional[str] = None  # where the host's data volume goes, when it has one
    data_owners: tuple[str, ...] = ()  # systemd units that keep their data there
    prune_schedule: str = DEFAULT_PRUNE_SCHEDULE
    prune_after: str = DEFAULT_PRUNE_AFTER
    keep_images: tuple[str, ...] = ()  # image IDs the prune never removes (preloaded ones)
    # containers outlive a restart of dockerd; Docker refuses it on a swarm node
    live_restore: bool = False


class DockerHost(pulumi.ComponentResource):
    def __init__(self, name: str, args: DockerHostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:host:DockerHost", name, None, opts)
        host = args.host
        env = {
            "HOST_NAME": name,
            "DOCKER_VERSION": args.docker_version,
            "REGISTRY_MIRRORS": " ".join(args.registry_mirrors),
            "LIVE_RESTORE": "true" if args.live_restore else "false",
        }
        if host.data_device is not None and args.data_mount:
            env["DATA_DEVICE"] = host.data_device
            env["DATA_MOUNT"] = args.data_mount
            env["DATA_OWNERS"] = " ".join(args.data_owners)
        self.engine = run_script(
            f"{name}-docker",
            connection=host.connection,
            script="docker-host.sh",
            env=env,
            opts=pulumi.ResourceOptions(parent=self, depends_on=host.provisioned),
        )
        # the engine's upkeep: timers for pruning and for a Docker that stops answering
        self.maintenance = run_script(
            f"{name}-maintenance",
            connection=host.connection,
            script="host-maintenance.sh",
            env=maintenance_env(args.prune_schedule, args.prune_after, args.keep_images),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.engine]),
        )
        self.register_outputs({})
