"""What the local cloud's modules share: where its state and cache live, its error, its log
line and the way it runs a command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("DOCKYARD_STATE_DIR", Path.home() / ".local" / "state" / "dockyard"))
CACHE = Path(os.environ.get("DOCKYARD_CACHE_DIR", Path.home() / ".cache" / "dockyard"))


class LocalCloudError(Exception):
    pass


def log(message: str) -> None:
    print(f"localcloud: {message}", file=sys.stderr, flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), text=True, capture_output=True)
    if check and result.returncode != 0:
        raise LocalCloudError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result
