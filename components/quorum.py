"""The manager-count check made before any change: the stack's previous manager count
(its own last outputs) against the one the configuration asks for.

Raft keeps the swarm writable while a majority of its managers answer. Removing managers
one at a time (the removal chain) keeps each step safe, but removing as many as half of
them in one update leaves the swarm with no margin if one of the remaining managers is
down while the others go, so dockyard refuses it unless the operator says they checked."""
from __future__ import annotations

from typing import Optional

import pulumi

from .config import ConfigError

MANAGER_COUNT_OUTPUT = "manager_count"


def majority(count: int) -> int:
    return count // 2 + 1


def check_manager_change(previous: Optional[int], requested: int, forced: bool = False) -> None:
    """Raise ConfigError when going from `previous` managers to `requested` would keep fewer
    than a majority of the managers the swarm has now. `previous` is None on a new stack."""
    if previous is None or requested >= previous or forced:
        return
    keep = majority(previous)
    if requested < keep:
        safe = keep if keep % 2 else keep + 1  # manager counts are odd
        step = (f"lower it to {safe} in this update and further in the next one, or"
                if safe < previous else "no smaller odd count keeps a majority, so")
        raise ConfigError(
            f"invalid stack configuration:\n  dockyard:managers: going from {previous} to {requested} managers "
            f"in one update keeps fewer than a majority ({keep}) of the swarm's {previous} managers; "
            f"{step} after `docker node ls` shows every manager Reachable, set "
            f"dockyard:allowManagerMajorityLoss to true for this update")


def own_stack() -> pulumi.StackReference:
    """The stack's own last outputs (nothing on a new stack), which the guards compare the
    configuration with. One per program: a second would have the same name."""
    # the file backend's stacks all live in the organization called "organization"
    organization = pulumi.get_organization() or "organization"
    return pulumi.StackReference(f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}")


def guard_manager_change(requested: int, forced: bool, own: Optional[pulumi.StackReference] = None) -> pulumi.Output:
    """Check the change against the stack's own last outputs. A refusal fails
    `pulumi preview`, which `pulumi up` runs first."""
    own = own or own_stack()

    def check(previous):
        check_manager_change(None if previous is None else int(previous), requested, forced)
        return requested
    return own.get_output(MANAGER_COUNT_OUTPUT).apply(check)
