"""Container images that arrive as files: docker-archive tarballs on the machine running
Pulumi, loaded into a host's engine over ssh. For hosts that cannot reach a registry
(air-gapped installs, the local VMs). A host that already has an image (a local VM started
from a warm template that holds it) receives nothing for it."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Optional

import pulumi
from pulumi_command import local

from .remote import script_digest, script_text


@dataclass
class ImagePreloadArgs:
    # the host's ssh Host alias, and an ssh_config text that defines it
    host_alias: str
    ssh_config: pulumi.Input[str]
    archives: tuple[str, ...]  # paths on the machine running Pulumi
    image_ids: tuple[str, ...]  # the images they hold (a changed archive holds another)
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class ImagePreload(pulumi.ComponentResource):
    def __init__(self, name: str, args: ImagePreloadArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:host:ImagePreload", name, None, opts)
        script = "images-send.sh"
        self.load = local.Command(
            f"{name}-load",
            create=f"bash -c {shlex.quote(script_text(script))} {script}",
            environment={"HOST": args.host_alias, "SSH_CONFIG": args.ssh_config, "ARCHIVES": "\n".join(args.archives)},
            # a changed archive or script runs it again
            triggers=[f"{script}@{script_digest(script)}", *args.image_ids],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs({})
