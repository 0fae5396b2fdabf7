"""docker-archive tarballs (what `docker save` writes and `docker load` reads), as the stack
reads them on the machine running Pulumi. Pure Python, so that config.py checks them."""
from __future__ import annotations

import json
import re
import tarfile


def archive_image_id(path: str) -> str:
    """The ID (sha256:...) of the image in a docker-archive: the digest of its config, which
    manifest.json names ("<id>.json" before Docker 25, "blobs/sha256/<id>" in OCI layout).
    Raises ValueError when the file is not one."""
    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            manifest = json.load(member) if member else []
    except (OSError, KeyError, tarfile.TarError, ValueError) as error:
        raise ValueError(f"{path} is not a docker-archive ({error})") from None
    config = manifest[0].get("Config", "") if isinstance(manifest, list) and manifest else ""
    digest = config.removeprefix("blobs/sha256/").removesuffix(".json")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{path} is not a docker-archive: its manifest.json names no image config")
    return f"sha256:{digest}"
