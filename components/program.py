"""The dockyard program, from a stack's settings to its exports: parse the configuration, lay
out the tier (table 5.1), refuse a manager change that loses the swarm's majority, make the
hosts on the stack's cloud, bring the platform up on them, and say what to export.

`__main__.py` runs it in the engine; tests/harness.py runs the same `run` on mocks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi

from .backup import BackupSecrets
from .config import NAMESPACE, ConfigError, DockyardConfig, parse_config, read_raw_config
from .hosts import Platform
from .hosts.digitalocean import KNOWN_HOSTS_OUTPUT, DigitalOceanCloud, DigitalOceanCloudArgs
from .hosts.local import LocalCloud, LocalCloudArgs
from .deployment import Deployment, deploy
from .datapath import DATA_PATH_OUTPUT, guard_data_path_change
from .quorum import MANAGER_COUNT_OUTPUT, guard_manager_change, own_stack
from .topology import Topology, build_topology


@dataclass(frozen=True)
class StackSettings:
    """What the program reads of its stack."""

    stack: str
    # the `dockyard:*` values, secrets only as a presence flag (config.read_raw_config)
    raw: Mapping[str, Any]
    # dockyard:sshPrivateKey, a secret the program reads itself
    ssh_private_key: Optional[pulumi.Output[str]] = None
    # the other secrets it reads: dockyard:backupPassword and backupSecretAccessKey, when set
    backup_password: Optional[pulumi.Output[str]] = None
    backup_secret_access_key: Optional[pulumi.Output[str]] = None

    @classmethod
    def of_this_stack(cls) -> "StackSettings":
        settings = pulumi.Config(NAMESPACE)
        return cls(pulumi.get_stack(), read_raw_config(settings), settings.get_secret("sshPrivateKey"),
                   settings.get_secret("backupPassword"), settings.get_secret("backupSecretAccessKey"))

    def backup_secrets(self) -> Optional[BackupSecrets]:
        if self.backup_password is None:
            return None
        return BackupSecrets(self.backup_password, self.backup_secret_access_key)


@dataclass(frozen=True)
class Cloud:
    """How the hosts of a cloud come to exist."""

    # (config, topology, the key the hosts accept, the stack's own last outputs) -> the hosts
    make: Callable[[DockyardConfig, Topology, Optional[pulumi.Input[str]], pulumi.StackReference], Platform]
    # the hosts accept the user's key (dockyard:sshPrivateKey or sshPrivateKeyPath); a cloud
    # that makes a key for its hosts needs none
    takes_users_key: bool


CLOUDS: dict[str, Cloud] = {
    "digitalocean": Cloud(
        # the droplets' known_hosts file is written first from the stack's last output of it
        make=lambda config, topology, key, own: DigitalOceanCloud(
            "do", DigitalOceanCloudArgs(config=config, topology=topology, private_key=key,
                                        previous_known_hosts=own.get_output(KNOWN_HOSTS_OUTPUT))).platform,
        takes_users_key=True),
    "local": Cloud(
        make=lambda config, topology, key, own: LocalCloud(
            "local", LocalCloudArgs(config=config, topology=topology)).platform,
        takes_users_key=False),
}


@dataclass
class Program:
    """What one run of the program made, and what the stack exports."""

    config: DockyardConfig
    topology: Topology
    # the key the bootstrap logs in with, a secret; None where the cloud makes its own
    private_key: Optional[pulumi.Input[str]]
    deployment: Deployment
    exports: dict[str, Any]


def users_private_key(settings: StackSettings, config: DockyardConfig) -> Optional[pulumi.Input[str]]:
    """dockyard:sshPrivateKey, or the file at dockyard:sshPrivateKeyPath read as a secret:
    the key never travels in clear, in the state or in a log."""
    if settings.ssh_private_key is not None:
        return settings.ssh_private_key
    if config.ssh.private_key_path:
        return pulumi.Output.secret(Path(config.ssh.private_key_path).read_text())
    return None


def run(settings: StackSettings) -> Program:
    """The whole program for one stack. Raises ConfigError, before any resource, when the
    configuration is bad."""
    config = parse_config(settings.stack, settings.raw)
    topology = build_topology(config.tier, config.workers, config.managers,
                              config.nfs.export_root, config.nfs.mount_root)
    cloud = CLOUDS[config.cloud]
    private_key = users_private_key(settings, config) if cloud.takes_users_key else None
    # refuse, before any change, to remove half of the swarm's managers or more in one update,
    # and to move the overlays' traffic of a live swarm; the one reference to the stack's own
    # last outputs (a second would have the same name), which the cloud reads too
    own = own_stack()
    manager_count = guard_manager_change(config.managers, config.allow_manager_majority_loss, own)
    data_path = guard_data_path_change(own, config.data_path_cidr)
    deployment = deploy(config, topology, cloud.make(config, topology, private_key, own), settings.backup_secrets())
    return Program(config, topology, private_key, deployment,
                   stack_exports(config, topology, manager_count, data_path, deployment))


def stack_exports(config: DockyardConfig, topology: Topology, manager_count: pulumi.Output[int],
                  data_path: pulumi.Output[str], deployment: Deployment) -> dict[str, Any]:
    exports: dict[str, Any] = {
        "tier": config.tier,
        "hosts": {h.name: sorted(r.value for r in h.roles) for h in topology.hosts},
        MANAGER_COUNT_OUTPUT: manager_count,
        DATA_PATH_OUTPUT: data_path,
        **deployment.outputs(),
    }
    platform = deployment.cluster.platform
    if platform.ssh_private_key is not None:
        # the key the stack made for its hosts: pulumi stack output --show-secrets ssh_private_key
        exports["ssh_private_key"] = platform.ssh_private_key
    return exports


def main() -> None:
    """The program in the engine: this stack's settings in, its outputs exported."""
    try:
        program = run(StackSettings.of_this_stack())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    for name, value in program.exports.items():
        pulumi.export(name, value)
