"""Backups of a host's data with restic (backup.sh): the directories on its data volume, to the
stack's repository, on a schedule and on demand; on a new host of a stack that restores, that
data first, before anything on the host uses it (cluster.Cluster.engine_up waits for it). One
manager also backs up the swarm's Raft state, which swarm-recover.sh brings back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi

from .ci_common import CI_ROOT
from .config import BackupSettings, CiSettings
from .hosts import Host
from .remote import run_script
from .topology import HostSpec, Topology


@dataclass(frozen=True)
class BackupSecrets:
    """What the program reads as secrets for the backups (program.StackSettings)."""

    password: pulumi.Input[str]
    secret_access_key: Optional[pulumi.Input[str]] = None


def swarm_state_host(topology: Topology) -> str:
    """The manager that backs up the swarm's state: the last, so that on small and medium the
    engine it stops for the copy is not the first manager's, which runs the pinned services,
    and the others keep the quorum meanwhile."""
    return topology.managers[-1].name


def data_paths(topology: Topology, spec: HostSpec) -> tuple[str, ...]:
    """What a host keeps that must outlive it: the exports it serves (not the copies a replica
    holds, which come back from the export they copy), or the CI/CD services' data."""
    if spec.volume == "nfs":
        return tuple(e.path for e in topology.exports if e.server == spec.name and not e.replica_of)
    if spec.volume == "ci":
        return (CI_ROOT,)
    return ()


def paused_during_backup(ci: CiSettings, spec: HostSpec) -> tuple[str, ...]:
    """The containers frozen while a host's data is read: on the CI host, Gitea and Drone,
    whose SQLite databases and repositories are then read as of one moment (what a crash
    would leave, which both recover from). The registry is not: its blobs are written once,
    under their digest, and pushes go on meanwhile."""
    if spec.volume != "ci":
        return ()
    return tuple(service for service in ("gitea", "drone") if ci.runs(service))


@dataclass
class BackupArgs:
    host: Host
    host_name: str          # the name the host's snapshots carry: its name in the tier, the same in a new stack
    settings: BackupSettings
    secrets: BackupSecrets
    paths: tuple[str, ...]
    # containers paused while the paths are read (paused_during_backup)
    paused: tuple[str, ...] = ()
    # this manager also backs up the swarm's Raft state (its engine stopped for the copy)
    swarm_state: bool = False
    # this host creates the repository when it does not exist; the others wait for it
    creates_repository: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class Backup(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackupArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:host:Backup", name, None, opts)
        settings = args.settings
        env = {
            "BACKUP_HOST": args.host_name,
            "BACKUP_PATHS": " ".join(args.paths),
            "BACKUP_PAUSE": " ".join(args.paused),
            "RESTIC_REPOSITORY": settings.repository or "",
            "BACKUP_SCHEDULE": settings.schedule,
            "BACKUP_KEEP": settings.forget_options(),
            "RESTORE": settings.restore_from or "",
            "AWS_ACCESS_KEY_ID": settings.access_key_id or "",
            "SWARM_STATE": "yes" if args.swarm_state else "",
            "INIT_REPOSITORY": "yes" if args.creates_repository else "",
        }
        secret_env = {"RESTIC_PASSWORD": args.secrets.password}
        if args.secrets.secret_access_key is not None:
            secret_env["AWS_SECRET_ACCESS_KEY"] = args.secrets.secret_access_key
        # the restore, when the stack asks for one, happens in this run: what uses the paths waits for it
        self.setup = run_script(
            f"{name}-restic", connection=args.host.connection, script="backup.sh", env=env, secret_env=secret_env,
            delete_env={"REMOVE": "1"},
            # backups turned off stop the timer; a host going away takes it along
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, deleted_with=args.host.machine))
        self.register_outputs({})
