"""The NFS file server role (thesis 3.4) and the NFS clients of the cluster hosts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi

from .hosts import Host
from .remote import run_script
from .topology import Export, Mount

RW_OPTIONS = "rw,sync,no_subtree_check,no_root_squash"
RO_OPTIONS = "ro,sync,no_subtree_check,root_squash"
# a replica server reads everything, as root, to make a complete copy (files of mode 0600
# included), and still cannot write
REPLICATOR_OPTIONS = "ro,sync,no_subtree_check,no_root_squash"


def export_line(export: Export, addresses: Mapping[str, str], private_cidr: str,
                replicators: tuple[str, ...] = ()) -> str:
    """One exports(5) line. Single addresses take precedence over the network entry, so
    the writers get rw, the replica servers read as root, and the rest of the private
    network reads as nobody."""
    clients = [f"{addresses[h]}({RW_OPTIONS})" for h in export.writers if h != export.server]
    clients += [f"{addresses[h]}({REPLICATOR_OPTIONS})" for h in replicators]
    clients += [f"{addresses[h]}({RO_OPTIONS})" for h in export.readers
                if h != export.server and h not in replicators]
    if export.cluster_readable:
        clients.append(f"{private_cidr}({RO_OPTIONS})")
    if not clients:  # only the server itself uses it (through a bind mount)
        clients.append(f"127.0.0.1({RO_OPTIONS})")
    return f"{export.path} {' '.join(clients)}"


@dataclass
class NfsServerArgs:
    host: Host
    exports: list[Export]
    # private address of every host named in the exports (and of the replica sources)
    addresses: Mapping[str, pulumi.Output[str]]
    private_cidr: str
    # exports of other servers, for replicas (name -> export)
    all_exports: Mapping[str, Export]
    depends_on: list[pulumi.Resource]
    # what serves each export of the servers made before this one: a replica waits for it
    export_served: Mapping[str, list[pulumi.Resource]] = field(default_factory=dict)


class NfsServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: NfsServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:NfsServer", name, None, opts)

        def replicators_of(export: Export) -> tuple[str, ...]:
            return tuple(e.server for e in args.all_exports.values() if e.replica_of == export.name)

        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        names = sorted(args.addresses)
        lines = pulumi.Output.all(*[args.addresses[n] for n in names]).apply(
            lambda ips: "\n".join(export_line(e, dict(zip(names, ips)), args.private_cidr, replicators_of(e))
                                  for e in args.exports)
        )
        self.server = run_script(f"{name}-exports", connection=args.host.connection, script="nfs-server.sh",
                                 env={"EXPORTS": lines}, opts=child)
        # what serves this server's exports: the exports, and the copies of a replica
        self.serving: list[pulumi.Resource] = [self.server]
        self.replicas = []
        for export in args.exports:
            if not export.replica_of:
                continue
            source = args.all_exports[export.replica_of]
            source_dir = f"/var/lib/dockyard/replica-source/{source.name}"
            source_mount = run_script(
                f"{name}-{export.name}-replica-source",
                connection=args.host.connection,
                script="nfs-mount.sh",
                env={"SOURCE": args.addresses[source.server].apply(lambda ip, p=source.path: f"{ip}:{p}"),
                     "MOUNT_POINT": source_dir, "MODE": "ro"},
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=args.depends_on + list(args.export_served[source.name])),
            )
            replica = run_script(
                f"{name}-{export.name}-replica",
                connection=args.host.connection,
                script="nfs-replica.sh",
                env={"SOURCE_DIR": source_dir, "TARGET": export.path},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.server, source_mount]),
            )
            self.replicas.append(replica)
            self.serving.append(replica)
        self.exports = pulumi.Output.all(args.host.private_ip).apply(
            lambda ip: [f"{ip[0]}:{e.path}" for e in args.exports]
        )
        self.register_outputs({"exports": self.exports})


@dataclass
class NfsClientArgs:
    host: Host
    mounts: list[Mount]
    exports: Mapping[str, Export]
    addresses: Mapping[str, pulumi.Output[str]]
    # per mount: what must be in place first (the server's exports, the host's engine)
    depends_on: Mapping[str, list[pulumi.Resource]]


class NfsClient(pulumi.ComponentResource):
    """The NFS mounts of one host, recorded in fstab so that they survive reboot."""

    def __init__(self, name: str, args: NfsClientArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:role:NfsClient", name, None, opts)
        self.mounts = {}
        for mount in args.mounts:
            export = args.exports[mount.export]
            if export.server == args.host.name:
                source: pulumi.Input[str] = export.path
            else:
                source = args.addresses[export.server].apply(lambda ip, p=export.path: f"{ip}:{p}")
            self.mounts[mount.export] = run_script(
                f"{name}-mount-{mount.export}",
                connection=args.host.connection,
                script="nfs-mount.sh",
                env={"SOURCE": source, "MOUNT_POINT": mount.path, "MODE": "rw" if mount.writable else "ro"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on[mount.export]),
            )
        self.register_outputs({})
