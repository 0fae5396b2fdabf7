"""The platform services' images as docker-archives, built on this machine from the Go
module proxy, for hosts that cannot reach Docker Hub:

    python3 -m localcloud platform-images --out DIR

writes DIR/traefik.tar and prints the `dockyard:platformImages` settings that use it. The
binary is cached in ~/.cache/dockyard/ci-bin. Portainer is neither in Debian nor on the Go
module proxy, so it cannot be built here (README, "Platform services on local VMs").

traefik 3.6.12 is the newest v3 release that builds from the proxy: 3.7 needs a nested
module its zip does not carry (pkg/config/dynamic/ext) and ACME DNS providers the proxy
refuses."""
from __future__ import annotations

from pathlib import Path

from localcloud.ci_images import GoBuild, go_binaries
from localcloud.images import ImageSpec, write_archive

TRAEFIK = GoBuild("github.com/traefik/traefik/v3", "v3.6.12", (("traefik", "./cmd/traefik"),))
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


def build_platform_images(out: Path) -> dict[str, str]:
    """Write the archives to `out`; returns the `dockyard:platformImages` settings for them."""
    spec = traefik_image(go_binaries(TRAEFIK)["traefik"].read_bytes(), CA_BUNDLE.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    write_archive(spec, out / "traefik.tar")
    return {"traefik": spec.repo_tag}
