"""The host scripts as they leave the repository: components/scripts/<name> behind the shell
library they all use (scripts/lib.sh: log, fatal, require_env, put_file, apt_install, ...).
Every sender takes a script's text from here: run_script (remote.py), the memberships
(manager.py), the image preloads (preload.py), the droplet image (images/digitalocean) and
the local VMs' warm template (localcloud/warm.py, which runs without Pulumi: so does this).

The operator runs one by hand the same way, e.g. swarm-recover.sh (README):
    python3 -m components.shell swarm-recover.sh | ssh -F ssh_config HOST 'bash -s'"""
from __future__ import annotations

import hashlib
import re
import sys
from functools import lru_cache
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"
LIBRARY = SCRIPTS_DIR / "lib.sh"


@lru_cache(maxsize=None)
def script_text(name: str) -> str:
    """What a host runs for components/scripts/<name>: the library, the name its log lines
    carry (docker-host.sh logs as "docker-host: ..."), then the script."""
    script = SCRIPTS_DIR / name
    if not re.fullmatch(r"[a-z0-9-]+\.sh", name) or script == LIBRARY:
        raise ValueError(f"{name} is not one of the scripts in {SCRIPTS_DIR}")
    return f"{LIBRARY.read_text()}DOCKYARD_SCRIPT='{script.stem}'\n{script.read_text()}"


def script_digest(name: str) -> str:
    """The script's trigger: it follows the script and the library."""
    return hashlib.sha256(script_text(name).encode()).hexdigest()[:16]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 -m components.shell SCRIPT.sh   (prints what a host runs for it)")
    sys.stdout.write(script_text(sys.argv[1]))
