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
    base_layers: tuple[bytes, ...] = ()  # layer tarballs under the files above (e.g. a rootfs)
    entrypoint: list[str] | None = None


def deb_files(package: str, *paths: str) -> list[bytes]:
    """Files out of a Debian package, fetched with apt-get download."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True)
        # a path may be a symlink inside the package (libc's loader is)
        return [Path(f"{tmp}/root/{path.lstrip('/')}").resolve().read_bytes() for path in paths]


def deb_file(package: str, path: str) -> bytes:
    return deb_files(package, path)[0]


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
    layers = [*spec.base_layers, _layer(spec)]
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    image_config = {"Cmd": spec.cmd, "Env": list(spec.env), "WorkingDir": "/",
                    "ExposedPorts": {p: {} for p in spec.exposed_ports}}
    if spec.entrypoint:
        image_config["Entrypoint"] = spec.entrypoint
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "dockyard localcloud/images.py"} for _ in layers],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_dirs = [d.split(":")[1] for d in diff_ids]
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [spec.repo_tag],
                 "Layers": [f"{d}/layer.tar" for d in layer_dirs]}]
    members = [(f"{image_id}.json", config_bytes)]
    for layer_dir, layer in zip(layer_dirs, layers):
        members += [(f"{layer_dir}/layer.tar", layer), (f"{layer_dir}/VERSION", b"1.0")]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, content in members:
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


REGISTRY_VERSION = "2.8.2"
# The official image's configuration: TLS and auth come from REGISTRY_* variables.
REGISTRY_CONFIG = """version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def registry_image() -> ImageSpec:
    """Distribution's registry from Debian's docker-registry package, laid out like the
    official registry image (same binary name, configuration path and data directory), with
    busybox for the health check. The binary is dynamically linked against libc only."""
    (registry,) = deb_files("docker-registry", "/usr/bin/docker-registry")
    libc, loader = deb_files("libc6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")
    busybox = deb_file("busybox-static", "/bin/busybox")
    return ImageSpec(
        repo_tag=f"dockyard/registry:{REGISTRY_VERSION}",
        cmd=["/bin/registry", "serve", "/etc/docker/registry/config.yml"],
        files={
            "/bin/registry": (registry, 0o755),
            "/bin/busybox": (busybox, 0o755),
            "/lib/x86_64-linux-gnu/libc.so.6": (libc, 0o755),
            "/lib64/ld-linux-x86-64.so.2": (loader, 0o755),
            "/etc/docker/registry/config.yml": (REGISTRY_CONFIG.encode(), 0o644),
            "/var/lib/registry/.keep": (b"", 0o644),
        },
        symlinks={"/bin/sh": "busybox", "/bin/wget": "busybox"},
        exposed_ports=("5000/tcp",),
    )
