"""Swarm managers (thesis 3.5). The first manager initialises the swarm and hands out the
join tokens, which stay Pulumi secrets from `docker swarm join-token` to the joining host."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Optional

import pulumi
from pulumi_command import local, remote

from .hosts import Host
from .remote import run_script, script_text


@dataclass
class ManagerAccess:
    """How the operator's machine reaches the managers over ssh, to keep the memberships."""

    # the managers' Host aliases in `ssh_config`, the first manager first
    aliases: list[str]
    # an ssh_config text for those aliases (and the master they are reached through)
    ssh_config: pulumi.Output[str]
    # what must exist before ssh can use the key (the key file of local VMs)
    ssh_files_written: list[pulumi.Resource] = field(default_factory=list)


@dataclass
class SwarmJoin:
    """What a host needs to join the swarm."""

    manager_address: pulumi.Output[str]
    # the first manager's node ID: a host that is in a swarm without it is in another swarm
    first_manager_id: pulumi.Output[str]
    manager_connection: remote.ConnectionArgs
    worker_token: pulumi.Output[str]
    manager_token: pulumi.Output[str]
    # the swarm's init and the command that read its tokens: joins wait for them
    init_and_tokens: list[pulumi.Resource]
    access: ManagerAccess


def node_labels(name: str, *, node_id: pulumi.Output[str], labels: dict[str, str], join: SwarmJoin,
                parent: pulumi.Resource, depends_on: list[pulumi.Resource]):
    """Set a node's labels from a manager (labels can only be set there)."""
    return run_script(
        f"{name}-labels",
        connection=join.manager_connection,
        script="swarm-labels.sh",
        env={"NODE_ID": node_id, "LABELS": " ".join(f"{k}={v}" for k, v in sorted(labels.items()))},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )


def data_path_env(data_path_address: Optional[pulumi.Output[str]]) -> dict[str, pulumi.Output[str]]:
    """Where a node's overlay traffic goes, for swarm-init.sh and swarm-join.sh: its address
    on the encrypted data path; nothing (its private address) when the stack has none."""
    return {} if data_path_address is None else {"DATA_PATH_ADDR": data_path_address}


def join_swarm(name: str, *, host: Host, join: SwarmJoin, role: str, parent: pulumi.Resource,
               depends_on: list[pulumi.Resource], data_path_address: Optional[pulumi.Output[str]] = None
               ) -> tuple[remote.Command, pulumi.Output[str]]:
    """Join `host` to the swarm as `role`; returns the command and the new node's ID."""
    command = run_script(
        f"{name}-swarm-join",
        connection=host.connection,
        script="swarm-join.sh",
        env={"MANAGER_ADDR": join.manager_address, "ADVERTISE_ADDR": host.private_ip, "JOIN_ROLE": role,
             "FIRST_MANAGER_ID": join.first_manager_id, **data_path_env(data_path_address)},
        secret_env={"JOIN_TOKEN": join.manager_token if role == "manager" else join.worker_token},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on + join.init_and_tokens),
    )
    return command, command.stdout.apply(lambda s: s.strip())


def node_membership(name: str, *, node_id: pulumi.Output[str], join: SwarmJoin, parent: pulumi.Resource,
                    depends_on: list[pulumi.Resource]) -> local.Command:
    """The node's place in the swarm. Deleting it (a lower worker or manager count, or
    `pulumi destroy`) drains the node and removes it from the swarm. It depends on the join,
    which depends on the host, so the engine deletes it first.

    It runs on the operator's machine and reaches whichever manager answers, first manager
    first: a membership held on one manager could not be deleted once that manager is gone,
    and a destroy would stop there (pulumi-command#104). A change of managers or addresses is
    an update (the check runs again), never a new membership, which would remove the node."""
    driver = shlex.quote(script_text("swarm-membership.sh"))
    return local.Command(
        f"{name}-membership",
        create=f"bash -c {driver} swarm-membership.sh check",
        delete=f"bash -c {driver} swarm-membership.sh remove",
        stdin=script_text("swarm-remove-node.sh"),
        environment={"NODE_ID": node_id, "MANAGERS": " ".join(join.access.aliases),
                     "SSH_CONFIG": join.access.ssh_config},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on + join.access.ssh_files_written),
    )


@dataclass
class SwarmManagerArgs:
    host: Host
    labels: dict[str, str]
    depends_on: list[pulumi.Resource]
    # the first manager hands it on to the nodes that join
    access: Optional[ManagerAccess] = None
    # None: this manager initialises the swarm
    join: Optional[SwarmJoin] = None
    # the swarm's node heartbeat (dockyard:swarmHeartbeat), set by the manager that initialises it
    heartbeat: str = "5s"
    # dockyard:swarmAutolock, set by the manager that initialises the swarm
    autolock: bool = False
    # memberships of the managers before this one: removals then run one at a time, newest
    # first, so that each demotion leaves a majority of the managers that remain
    membership_after: list[pulumi.Resource] = field(default_factory=list)
    # the node's address on the encrypted data path (depends_on has what brought it up);
    # None: its overlay traffic goes over its private address
    data_path_address: Optional[pulumi.Output[str]] = None


class SwarmManager(pulumi.ComponentResource):
    join: SwarmJoin
    node_id: pulumi.Output[str]

    def __init__(self, name: str, args: SwarmManagerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:SwarmManager", name, None, opts)
        host = args.host
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        if args.join is None:
            if args.access is None:
                raise ValueError("the first manager needs the managers' ssh access for the memberships")
            init = run_script(f"{name}-swarm-init", connection=host.connection, script="swarm-init.sh",
                              env={"ADVERTISE_ADDR": host.private_ip, "HEARTBEAT": args.heartbeat,
                                   "AUTOLOCK": "true" if args.autolock else "false",
                                   **data_path_env(args.data_path_address)}, opts=child)
            self.node_id = init.stdout.apply(lambda s: s.strip())
            self.unlock_key: Optional[pulumi.Output[str]] = None
            if args.autolock:
                unlock_key = run_script(
                    f"{name}-swarm-unlock-key", connection=host.connection, script="swarm-unlock-key.sh",
                    # read again when the swarm or its autolock changes
                    env={"SWARM_NODE": self.node_id}, secret_stdout=True,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[init]))
                self.unlock_key = pulumi.Output.secret(unlock_key.stdout.apply(lambda s: s.strip()))
            tokens = run_script(
                f"{name}-join-tokens",
                connection=host.connection,
                script="swarm-tokens.sh",
                # a new swarm (a new first manager) has new tokens
                env={"SWARM_NODE": self.node_id},
                secret_stdout=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[init]),
            )
            lines = tokens.stdout.apply(lambda s: s.split())
            self.join = SwarmJoin(
                manager_address=host.private_ip,
                first_manager_id=self.node_id,
                manager_connection=host.connection,
                worker_token=pulumi.Output.secret(lines.apply(lambda t: t[0])),
                manager_token=pulumi.Output.secret(lines.apply(lambda t: t[1])),
                init_and_tokens=[init, tokens],
                access=args.access,
            )
            self.joined = init
            self.membership = None  # the first manager stays for the swarm's lifetime
        else:
            self.unlock_key = None
            self.join = args.join
            self.joined, self.node_id = join_swarm(name, host=host, join=self.join, role="manager", parent=self,
                                                   depends_on=args.depends_on,
                                                   data_path_address=args.data_path_address)
            self.membership = node_membership(
                name, node_id=self.node_id, join=self.join, parent=self,
                depends_on=[self.joined] + self.join.init_and_tokens + args.membership_after)
        self.labels = node_labels(name, node_id=self.node_id, labels=args.labels, join=self.join, parent=self,
                                  depends_on=[self.joined] + self.join.init_and_tokens)
        self.register_outputs({"node_id": self.node_id})
