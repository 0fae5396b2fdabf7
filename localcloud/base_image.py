"""The VMs' base image: a debootstrap of Debian bookworm (build-image.sh) with the registry's
container image inside, built once per recipe and shared by every VM."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from localcloud.system import CACHE, LocalCloudError, log

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "build-image.sh"


def recipe_digest() -> str:
    """Changes when the image's recipe does: the build script or the images built into it."""
    digest = hashlib.sha256(RECIPE.read_bytes())
    digest.update((Path(__file__).parent / "images.py").read_bytes())
    return digest.hexdigest()[:16]


def image_dir() -> Path:
    return CACHE / "images" / recipe_digest()


def ensure_image() -> Path:
    """The base image for the current recipe, built once and shared by every VM."""
    target = image_dir()
    if (target / "base.raw").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits for the first build
        if (target / "base.raw").exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        log(f"building the base image {target.name} (about 2 minutes, once per recipe)")
        preload = Path(tempfile.mkdtemp(prefix="dockyard-preload-"))
        try:
            from localcloud.images import registry_image, write_archive

            # Docker Hub is out of reach: the stack's registry image comes inside the VM image
            write_archive(registry_image(), preload / "registry.tar")
            env = {**os.environ, "OUT": str(partial), "PACKAGE_CACHE": str(CACHE / "debs"),
                   "PRELOAD_DIR": str(preload)}
            result = subprocess.run(["bash", str(RECIPE)], env=env)
        finally:
            shutil.rmtree(preload, ignore_errors=True)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalCloudError("the base image build failed (see the messages above)")
        partial.rename(target)
        for old in target.parent.iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
    return target
