"""Every host's upkeep (host-maintenance.sh): the prune's schedule and age by default, and
the environment the script runs with. Pure Python: the local VMs' warm template
(localcloud/warm.py) runs the script with these defaults without importing Pulumi."""
from __future__ import annotations

DEFAULT_PRUNE_SCHEDULE = "*-*-* 03:30:00"
DEFAULT_PRUNE_AFTER = "168h"


def maintenance_env(schedule: str = DEFAULT_PRUNE_SCHEDULE, after: str = DEFAULT_PRUNE_AFTER,
                    keep_images: tuple[str, ...] = ()) -> dict[str, str]:
    return {"PRUNE_SCHEDULE": schedule, "PRUNE_AFTER": after, "KEEP_IMAGES": " ".join(keep_images)}
