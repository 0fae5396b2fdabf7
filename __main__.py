"""dockyard: read the stack's configuration, create its hosts, bring the platform up."""
from pathlib import Path

import pulumi

from components.config import ConfigError, parse_config, read_raw_config
from components.platform import deploy
from components.quorum import MANAGER_COUNT_OUTPUT, guard_manager_change
from components.topology import build_topology

settings = pulumi.Config("dockyard")
try:
    config = parse_config(pulumi.get_stack(), read_raw_config(settings))
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

topology = build_topology(config.tier, config.workers, config.managers,
                          config.nfs.export_root, config.nfs.mount_root)

private_key = settings.get_secret("sshPrivateKey")
if private_key is None and config.ssh.private_key_path:
    private_key = pulumi.Output.secret(Path(config.ssh.private_key_path).read_text())

# refuses, before any change, to remove half of the swarm's managers or more in one update
manager_count = guard_manager_change(config.managers, config.allow_manager_majority_loss)
deployment = deploy(config, topology, private_key)

pulumi.export("tier", config.tier)
pulumi.export("hosts", {h.name: sorted(r.value for r in h.roles) for h in topology.hosts})
pulumi.export(MANAGER_COUNT_OUTPUT, manager_count)
for name, value in deployment.outputs().items():
    pulumi.export(name, value)
platform = deployment.cluster.platform
if platform.ssh_private_key is not None:
    # the key the stack made for its hosts: pulumi stack output --show-secrets ssh_private_key
    pulumi.export("ssh_private_key", platform.ssh_private_key)
