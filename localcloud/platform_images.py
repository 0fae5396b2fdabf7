"""The platform services' images as docker-archives, built on this machine from the Go
module proxy, for hosts that cannot reach Docker Hub:

    python3 -m localcloud platform-images --out DIR

writes DIR/traefik.tar, DIR/prometheus.tar, DIR/alertmanager.tar, DIR/node-exporter.tar,
DIR/cadvisor.tar, DIR/loki.tar and DIR/promtail.tar, and prints the `dockyard:platformImages`
settings that use them. traefik, cAdvisor, Loki and promtail are built from the Go module
proxy (cached in ~/.cache/dockyard/ci-bin);
Prometheus, Alertmanager and node-exporter are Debian 12's packages, on Debian's libc and
nothing else. Portainer is neither in Debian nor on the Go module proxy, so it cannot be
built here (README, "Platform services on local VMs").

traefik 3.6.12 is the newest v3 release that builds from the proxy: 3.7 needs a nested
module its zip does not carry (pkg/config/dynamic/ext) and ACME DNS providers the proxy
refuses."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import hashlib
import os
import shutil

from localcloud.ci_images import CACHE, GoBuild, go_binaries, tree_files
from localcloud.images import ImageSpec, deb_files, write_archive

TRAEFIK = GoBuild("github.com/traefik/traefik/v3", "v3.6.12", (("traefik", "./cmd/traefik"),))
# cAdvisor's command is a module of its own that the proxy does not serve: localcloud/cadvisor
# is a small one on cAdvisor's library (this version, in its go.mod), with the same metrics
CADVISOR_SOURCE = Path(__file__).parent / "cadvisor"
CADVISOR_VERSION = "0.49.2"
# Loki and promtail from Loki's module. Its pkg/push is a nested module its zip leaves out
# (the proxy serves it apart); promtail's command left the module in 3.6, its library did not:
# localcloud/promtail/main.go is a small command on it.
LOKI = GoBuild("github.com/grafana/loki/v3", "v3.7.8",
               (("loki", "./cmd/loki"), ("promtail", "./cmd/dockyard-promtail")),
               replaces=(("github.com/grafana/loki/pkg/push",
                          "github.com/grafana/loki/pkg/push@v0.0.0-20250630054201-94c0ba7b0952"),),
               added=(("cmd/dockyard-promtail/main.go", Path(__file__).parent / "promtail" / "main.go"),))
LIBC = {"/lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"}
# Debian 12's packages: (image, package, binary, what else of the package the image needs)
DEBIAN = {
    "prometheus": ("prometheus", "/usr/bin/prometheus", ("/usr/share/prometheus/web",)),
    # Debian's build reads its notification templates from there: without them it exits
    "alertmanager": ("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager",
                     ("/usr/share/prometheus/alertmanager",)),
    "nodeExporter": ("prometheus-node-exporter", "/usr/bin/prometheus-node-exporter", ()),
}
# the CA bundle of this machine (Debian's ca-certificates), for ACME and upstream TLS
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def traefik_image(binary: bytes, ca_bundle: bytes) -> ImageSpec:
    return ImageSpec(
        repo_tag=f"dockyard/traefik:{TRAEFIK.version.lstrip('v')}",
        cmd=[], entrypoint=["/usr/local/bin/traefik"],
        files={"/usr/local/bin/traefik": (binary, 0o755), "/etc/ssl/certs/ca-certificates.crt": (ca_bundle, 0o644)},
        env=("PATH=/usr/local/bin",),
        exposed_ports=("80/tcp", "443/tcp"),
    )


def libc_files() -> dict[str, tuple[bytes, int]]:
    """Debian 12's C library and loader: all that the packaged Go programs link."""
    contents = deb_files("libc6", *LIBC.values())
    return {path: (content, 0o755) for path, content in zip(LIBC, contents)}


def package_version(package: str) -> str:
    """The version apt would install, without its epoch and Debian revision: 2.42.0."""
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=True).stdout
    candidate = next(line.split()[1] for line in policy.splitlines() if "Candidate:" in line)
    return candidate.split(":")[-1].split("+")[0].split("-")[0]


def debian_image(key: str, libc: dict[str, tuple[bytes, int]]) -> ImageSpec:
    package, binary, trees = DEBIAN[key]
    name = {"nodeExporter": "node-exporter"}.get(key, key)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True)
        files = {f"/usr/local/bin/{name}": (Path(f"{tmp}/root{binary}").read_bytes(), 0o755), **libc}
        for tree in trees:
            files.update(tree_files(Path(f"{tmp}/root{tree}"), tree))
    return ImageSpec(
        repo_tag=f"dockyard/{name}:{package_version(package)}",
        cmd=[], entrypoint=[f"/usr/local/bin/{name}"],
        files=files, env=("PATH=/usr/local/bin",),
    )


def local_go_binary(source: Path, name: str) -> Path:
    """Build (once per content of `source`) a Go program of this repository, its
    dependencies from the module proxy, pinned by its go.sum."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(source.iterdir()) if p.is_file())).hexdigest()
    out = CACHE / "ci-bin" / f"{name}-{digest[:12]}" / name
    if out.exists():
        return out
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(source, src)
        print(f"platform-images: building {name} from {source}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out) + ".partial", "."],
                       cwd=src, env=env, check=True)
        Path(str(out) + ".partial").rename(out)
    return out


def static_binary_image(name: str, version: str, binary: bytes, exposed_ports: tuple[str, ...] = ()) -> ImageSpec:
    """An image of one static Go program and nothing else: dockyard/<name>:<version>."""
    return ImageSpec(
        repo_tag=f"dockyard/{name}:{version}",
        cmd=[], entrypoint=[f"/usr/local/bin/{name}"],
        files={f"/usr/local/bin/{name}": (binary, 0o755)},
        env=("PATH=/usr/local/bin",), exposed_ports=exposed_ports,
    )


def build_platform_images(out: Path) -> dict[str, str]:
    """Write the archives to `out`; returns the `dockyard:platformImages` settings for them."""
    libc = libc_files()
    specs = {
        "traefik": traefik_image(go_binaries(TRAEFIK)["traefik"].read_bytes(), CA_BUNDLE.read_bytes()),
        "cadvisor": static_binary_image("cadvisor", CADVISOR_VERSION,
                                        local_go_binary(CADVISOR_SOURCE, "cadvisor").read_bytes(), ("8080/tcp",)),
        **{key: debian_image(key, libc) for key in DEBIAN},
        **{name: static_binary_image(name, LOKI.version.lstrip("v"), binary.read_bytes())
           for name, binary in go_binaries(LOKI).items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    for key, spec in specs.items():
        write_archive(spec, out / f"{spec.repo_tag.split('/')[1].split(':')[0]}.tar")
    return {key: spec.repo_tag for key, spec in specs.items()}
