"""Table 5.1 of the thesis as data: which host does what in each tier.

Pure Python on purpose (no Pulumi imports), so that the placement rules can be read and
tested without an engine. The manager-count rule lives here too: config.py reports it as a
configuration error, build_topology refuses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    MASTER = "master"
    CICD = "cicd"
    NFS = "nfs"
    MANAGER = "manager"
    WORKER = "worker"


TIERS = ("minimal", "default", "small", "medium")

# How many swarm managers each tier has when the stack does not say.
DEFAULT_MANAGERS = {"minimal": 1, "default": 1, "small": 3, "medium": 7}
# Tiers whose manager count the stack may change (the others have a single fixed manager).
MANAGER_COUNT_SETTABLE = ("small", "medium")
MAX_MANAGERS = 7


def manager_count_problem(tier: str, managers: int) -> str | None:
    """What is wrong with `managers` swarm managers in `tier`, or None. A tier outside
    MANAGER_COUNT_SETTABLE has its fixed count; the others an odd one up to MAX_MANAGERS, so
    that Raft keeps a majority."""
    fixed = DEFAULT_MANAGERS[tier]
    if tier not in MANAGER_COUNT_SETTABLE:
        return None if managers == fixed else f"tier {tier} always has {fixed} manager"
    if managers < 1 or managers > MAX_MANAGERS or managers % 2 == 0:
        return (f"must be odd and between 1 and {MAX_MANAGERS} so that Raft keeps a majority "
                f"(3 tolerates 1 lost manager, 5 tolerates 2); got {managers}")
    return None


@dataclass(frozen=True)
class HostSpec:
    name: str
    roles: frozenset[Role]
    # What the host's block volume holds: "nfs" (exported data), "ci" (Gitea/Drone/registry
    # data) or None when the host keeps nothing that must outlive it.
    volume: str | None = None

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def primary_role(self) -> Role:
        """The role that names the host in tags and labels (the first in table order)."""
        return next(r for r in Role if r in self.roles)


@dataclass(frozen=True)
class Export:
    """One NFS export. Hosts in `writers` mount it read-write, hosts in `readers` read-only;
    `cluster_readable` also makes it read-only to the whole private network."""

    name: str
    server: str
    path: str
    writers: tuple[str, ...]
    readers: tuple[str, ...] = ()
    cluster_readable: bool = False
    # medium's read server keeps a copy of the write server's export instead of its own data.
    replica_of: str | None = None


@dataclass(frozen=True)
class Mount:
    host: str
    export: str
    path: str
    writable: bool


@dataclass(frozen=True)
class Topology:
    tier: str
    hosts: tuple[HostSpec, ...]
    exports: tuple[Export, ...]
    mounts: tuple[Mount, ...]

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def with_role(self, role: Role) -> list[HostSpec]:
        return [h for h in self.hosts if h.has(role)]

    def export(self, name: str) -> Export:
        for e in self.exports:
            if e.name == name:
                return e
        raise KeyError(name)

    @property
    def master(self) -> HostSpec:
        return self.with_role(Role.MASTER)[0]

    @property
    def managers(self) -> list[HostSpec]:
        """Swarm managers; the first one initialises the swarm."""
        return self.with_role(Role.MANAGER)

    @property
    def workers(self) -> list[HostSpec]:
        return self.with_role(Role.WORKER)

    def mounts_of(self, host: str) -> list[Mount]:
        return [m for m in self.mounts if m.host == host]


def _host(name: str, *roles: Role, volume: str | None = None) -> HostSpec:
    return HostSpec(name, frozenset(roles), volume)


def build_topology(
    tier: str,
    workers: int,
    managers: int | None = None,
    export_root: str = "/srv/nfs",
    mount_root: str = "/mnt/nfs",
) -> Topology:
    """Hosts, NFS exports and mounts of a tier with `workers` workers (table 5.1)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    if workers < 0:
        raise ValueError("workers must be 0 or more")
    managers = DEFAULT_MANAGERS[tier] if managers is None else managers
    problem = manager_count_problem(tier, managers)
    if problem:
        raise ValueError(f"managers: {problem}")

    worker_hosts = [_host(f"w{i}", Role.WORKER) for i in range(1, workers + 1)]
    worker_names = tuple(h.name for h in worker_hosts)

    if tier == "minimal":
        hosts = [_host("a", Role.MASTER, Role.NFS, Role.MANAGER, volume="nfs")]
        exports = [Export("data", "a", f"{export_root}/data", writers=("a",), cluster_readable=True)]
        mounts = [Mount("a", "data", f"{mount_root}/data", True)]
        mounts += [Mount(w, "data", f"{mount_root}/data", False) for w in worker_names]
    elif tier == "default":
        hosts = [
            _host("a", Role.MASTER, Role.CICD, volume="ci"),
            _host("b", Role.NFS, Role.MANAGER, volume="nfs"),
        ]
        exports = [Export("data", "b", f"{export_root}/data", writers=("b",), cluster_readable=True)]
        mounts = [Mount("b", "data", f"{mount_root}/data", True)]
        mounts += [Mount(w, "data", f"{mount_root}/data", False) for w in worker_names]
    elif tier == "small":
        manager_names = tuple(f"c{i}" for i in range(1, managers + 1))
        hosts = [
            _host("a", Role.MASTER, Role.CICD, volume="ci"),
            _host("b", Role.NFS, volume="nfs"),
            *(_host(m, Role.MANAGER) for m in manager_names),
        ]
        # Read/write split on one server: `rw` is the managers' private writable space;
        # `ro` is what the whole cluster reads and only the managers may change.
        exports = [
            Export("rw", "b", f"{export_root}/rw", writers=manager_names),
            Export("ro", "b", f"{export_root}/ro", writers=manager_names, cluster_readable=True),
        ]
        mounts = [Mount(m, e, f"{mount_root}/{e}", True) for m in manager_names for e in ("rw", "ro")]
        mounts += [Mount(w, "ro", f"{mount_root}/ro", False) for w in worker_names]
    else:  # medium
        manager_names = tuple(f"d{i}" for i in range(1, managers + 1))
        hosts = [
            _host("a", Role.MASTER),
            _host("b", Role.CICD, volume="ci"),
            _host("c1", Role.NFS, volume="nfs"),
            _host("c2", Role.NFS, volume="nfs"),
            *(_host(m, Role.MANAGER) for m in manager_names),
        ]
        # Read/write separation across the pair: managers write to c1; c2 serves a copy
        # of it, read-only, to the whole cluster.
        exports = [
            Export("rw", "c1", f"{export_root}/rw", writers=manager_names, readers=("c2",)),
            Export("ro", "c2", f"{export_root}/ro", writers=(), cluster_readable=True, replica_of="rw"),
        ]
        mounts = [Mount(m, "rw", f"{mount_root}/rw", True) for m in manager_names]
        mounts += [Mount(m, "ro", f"{mount_root}/ro", False) for m in manager_names]
        mounts += [Mount(w, "ro", f"{mount_root}/ro", False) for w in worker_names]

    return Topology(tier, tuple(hosts + worker_hosts), tuple(exports), tuple(mounts))
