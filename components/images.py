"""Container images that arrive as files: docker-archive tarballs copied to a host and loaded
into its engine. For hosts that cannot reach a registry (air-gapped installs, local VMs)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
from pulumi_command import remote

from .hosts import Host
from .remote import run_script

REMOTE_DIR = "/var/lib/dockyard/images"


def archive_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ImagePreloadArgs:
    host: Host
    archives: tuple[str, ...]  # paths on the machine running Pulumi
    depends_on: list[pulumi.Resource]


class ImagePreload(pulumi.ComponentResource):
    def __init__(self, name: str, args: ImagePreloadArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:host:ImagePreload", name, None, opts)
        copies = []
        remote_paths = []
        for path in args.archives:
            digest = archive_digest(path)
            remote_path = f"{REMOTE_DIR}/{digest[:12]}-{Path(path).name}"
            remote_paths.append(remote_path)
            copies.append(remote.CopyToRemote(
                f"{name}-copy-{Path(path).stem}",
                connection=args.host.connection,
                source=pulumi.FileAsset(path),
                remote_path=remote_path,
                triggers=[digest],
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
            ))
        self.load = run_script(
            f"{name}-load",
            connection=args.host.connection,
            script="images-load.sh",
            env={"ARCHIVES": " ".join(remote_paths)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=copies),
        )
        self.register_outputs({})
