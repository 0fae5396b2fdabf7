"""Container images without a registry: docker-archive tarballs (what `docker save` writes
and `docker load` reads) built from Debian packages, for hosts that cannot reach Docker Hub.

An image here is one layer made of files taken from .deb packages (fetched with
`apt-get download`) plus files written directly."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImageSpec:
    repo_tag: str
    cmd: list[str]
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    symlinks: dict[str, str] = field(default_factory=dict)             # path -> target
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/bin",)


def deb_file(package: str, path: str) -> bytes:
    """One file out of a Debian package, fetched with apt-get download."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True)
        return Path(f"{tmp}/root/{path.lstrip('/')}").read_bytes()


def _layer(spec: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = set()
        for path in list(spec.files) + list(spec.symlinks):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directories.add("/".join(parts[:i]))
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, (content, mode) in sorted(spec.files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
        for path, target in sorted(spec.symlinks.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
    return buffer.getvalue()


def write_archive(spec: ImageSpec, out: Path) -> str:
    """Write `spec` as a docker-archive to `out`; returns the image ID (sha256 of its config)."""
    layer = _layer(spec)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": spec.cmd, "Env": list(spec.env), "WorkingDir": "/",
                   "ExposedPorts": {p: {} for p in spec.exposed_ports}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "dockyard localcloud/images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_dir = diff_id.split(":")[1]
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [spec.repo_tag], "Layers": [f"{layer_dir}/layer.tar"]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, content in ((f"{image_id}.json", config_bytes), (f"{layer_dir}/layer.tar", layer),
                              (f"{layer_dir}/VERSION", b"1.0"),
                              ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 0
            tar.addfile(info, io.BytesIO(content))
    return image_id


WEB_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "dockyard web {version} from $(hostname)"
"""


def web_image(version: str, busybox: bytes) -> ImageSpec:
    """A tiny web app: busybox httpd answering on 8080 with its version and container name."""
    return ImageSpec(
        repo_tag=f"dockyard/web:{version}",
        cmd=["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
        files={
            "/bin/busybox": (busybox, 0o755),
            "/www/index.html": (f"dockyard web {version}\n".encode(), 0o644),
            "/www/cgi-bin/index.cgi": (WEB_CGI.format(version=version).encode(), 0o755),
        },
        symlinks={"/bin/sh": "busybox", "/bin/hostname": "busybox"},
        exposed_ports=("8080/tcp",),
    )
