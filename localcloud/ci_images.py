"""Gitea, Drone and the Drone docker runner as docker-archives, built on this machine from
the Go module proxy and Debian packages, for hosts that cannot reach Docker Hub.

    python3 -m localcloud ci-images --out DIR

writes DIR/gitea.tar, DIR/drone.tar and DIR/drone-runner.tar and prints the `dockyard:`
settings that use them. For pipelines it also writes DIR/drone-pipeline.tar (the clone
step, and a docker CLI with ssh for build and deploy steps; `ciImages.droneClone`) and
DIR/busybox.tar (for test steps and as a base image). The binaries are cached in
~/.cache/dockyard/ci-bin, the Debian base layer in ~/.cache/dockyard/ci-base; a second run
only writes the archives.

Each image but busybox is a Debian 12 minbase layer (git, ca-certificates, curl, wget,
openssh-client) plus its binaries and, for Gitea, an entrypoint that does what the
official image's does: an app.ini under /data/gitea, GITEA__section__KEY variables written
into it, then `gitea web` as the user git (uid 1000)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localcloud.images import ImageSpec, deb_file, write_archive
from localcloud.system import CACHE, LocalCloudError

BASE_PACKAGES = "git,ca-certificates,curl,wget,openssh-client"
GITEA_STATIC = "/usr/local/share/gitea"


@dataclass(frozen=True)
class GoBuild:
    module: str
    version: str
    binaries: tuple[tuple[str, str], ...]   # (name, package inside the module)
    tags: str = ""
    cgo: bool = False
    # module path -> replacement, for dependencies the proxy no longer serves
    replaces: tuple[tuple[str, str], ...] = ()
    # modules the checksum database does not know (their own go.sum still pins their deps)
    nosumdb: str = ""
    # the Go release to build with (fetched through the module proxy), when not this machine's
    toolchain: str = "local"
    # files of this repository put into the module before the build: (path in the module, file)
    added: tuple[tuple[str, Path], ...] = ()

    def cache_key(self) -> str:
        key = f"{self.module.replace('/', '_')}@{self.version}-{self.toolchain}"
        if self.added:
            # what was added or replaced is part of what was built
            digest = hashlib.sha256(repr(self.replaces).encode() + b"".join(
                path.encode() + b"\0" + source.read_bytes() for path, source in self.added)).hexdigest()
            key += f"-{digest[:12]}"
        return key


GITEA = GoBuild("code.gitea.io/gitea", "v1.22.6",
                (("gitea", "."), ("environment-to-ini", "./contrib/environment-to-ini")),
                tags="sqlite sqlite_unlock_notify", cgo=True, nosumdb="code.gitea.io/gitea",
                # built with Go 1.26 its logger dies at start ("concurrent map read and map write")
                toolchain="go1.23.12")
# Drone 2.x is not on the proxy (its v2 tags lack a /v2 module path); 1.10.1 is, and has the
# same Gitea OAuth2 and runner settings. docker.io/go-docker moved to GitHub.
DRONE = GoBuild("github.com/drone/drone", "v1.10.1", (("drone-server", "./cmd/drone-server"),),
                tags="nolimit", cgo=True,
                replaces=(("docker.io/go-docker", "github.com/docker/go-docker@v1.0.0"),))
RUNNER = GoBuild("github.com/drone-runners/drone-runner-docker", "v1.8.3", (("drone-runner-docker", "."),))

# restic's REST server: the local e2e's backup repository, on this machine (README, "Backups")
REST_SERVER = GoBuild("github.com/restic/rest-server", "v0.12.1", (("rest-server", "./cmd/rest-server"),))

GITEA_ENTRYPOINT = """#!/bin/sh
# What the official image's s6 setup does: app.ini under /data, GITEA__* variables into it.
set -eu
ini=/data/gitea/conf/app.ini
mkdir -p /data/gitea/conf /data/gitea/log /data/git/repositories
if [ ! -f "$ini" ]; then
  cat > "$ini" <<EOF
APP_NAME = Gitea
RUN_USER = git
WORK_PATH = /data/gitea
[repository]
ROOT = /data/git/repositories
[server]
APP_DATA_PATH = /data/gitea
STATIC_ROOT_PATH = /usr/local/share/gitea
HTTP_PORT = 3000
[database]
PATH = /data/gitea/gitea.db
[log]
ROOT_PATH = /data/gitea/log
EOF
fi
environment-to-ini --config "$ini"
chown -R git:git /data
exec setpriv --reuid=git --regid=git --init-groups env HOME=/data/git USER=git gitea web --config "$ini"
"""


# Bump when the pipeline image's content changes.
PIPELINE_VERSION = "2"
PIPELINE_TAG = f"dockyard/drone-pipeline:{PIPELINE_VERSION}"

DRONE_CLONE = """#!/bin/sh
# drone-clone: the clone step of a Drone pipeline, which the runner runs in its workspace
# before the other steps (the job of the drone/git image, for hosts without Docker Hub).
#
# Inputs (environment, set by the runner):
#   DRONE_REMOTE_URL     the repository
#   DRONE_COMMIT_REF     what to fetch (refs/heads/main); else DRONE_COMMIT_BRANCH
#   DRONE_COMMIT_SHA     the commit to check out; else what was fetched
#   DRONE_TARGET_BRANCH  for a pull request, the branch it goes into: fetched as origin/<it>
#   DRONE_NETRC_MACHINE, DRONE_NETRC_USERNAME, DRONE_NETRC_PASSWORD  credentials, if private
#   PLUGIN_DEPTH         clone depth (pipeline `clone: depth:`)
set -eu

fatal() { echo "drone-clone: error: $*" >&2; exit 1; }

[ -n "${DRONE_REMOTE_URL:-}" ] || fatal "DRONE_REMOTE_URL must be set"
if [ -n "${DRONE_NETRC_MACHINE:-}" ]; then
  umask 077
  printf 'machine %s\nlogin %s\npassword %s\n' \
    "$DRONE_NETRC_MACHINE" "$DRONE_NETRC_USERNAME" "$DRONE_NETRC_PASSWORD" > "${HOME:-/root}/.netrc"
  umask 022
fi
[ -d .git ] || git init -q
git remote add origin "$DRONE_REMOTE_URL" 2>/dev/null || git remote set-url origin "$DRONE_REMOTE_URL"
ref=${DRONE_COMMIT_REF:-refs/heads/${DRONE_COMMIT_BRANCH:-main}}
echo "+ git fetch origin $ref"
if [ -n "${PLUGIN_DEPTH:-}" ]; then
  git fetch -q --depth="$PLUGIN_DEPTH" origin "$ref"
else
  git fetch -q origin "$ref"
fi
commit=${DRONE_COMMIT_SHA:-FETCH_HEAD}
echo "+ git checkout $commit"
git checkout -q -f "$commit"
# a pull request's steps compare it with the branch it goes into (origin/<target>), and only
# this step has the credentials to fetch it
target=${DRONE_TARGET_BRANCH:-}
if [ -n "$target" ] && [ "$ref" != "refs/heads/$target" ]; then
  echo "+ git fetch origin $target"
  git fetch -q origin "+refs/heads/$target:refs/remotes/origin/$target"
fi
"""


def docker_cli() -> bytes:
    """Debian's docker CLI (linked against libc only), cached."""
    cached = CACHE / "ci-bin" / "docker-cli"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.with_suffix(".partial").write_bytes(deb_file("docker.io", "/usr/bin/docker"))
        cached.with_suffix(".partial").rename(cached)
    return cached.read_bytes()


def busybox_image() -> ImageSpec:
    """busybox from Debian's busybox-static, every applet linked, tagged with its version."""
    busybox = deb_file("busybox-static", "/bin/busybox")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "busybox"
        binary.write_bytes(busybox)
        binary.chmod(0o755)
        banner = subprocess.run([str(binary)], capture_output=True, text=True).stdout
        applets = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout.split()
    version = banner.split()[1].lstrip("v")  # "BusyBox v1.35.0 (Debian ...)"
    return ImageSpec(
        repo_tag=f"dockyard/busybox:{version}",
        cmd=["sh"],
        files={"/bin/busybox": (busybox, 0o755)},
        symlinks={f"/bin/{applet}": "busybox" for applet in applets if applet != "busybox"},
        env=("PATH=/bin",),
    )


def module_dir(build: GoBuild) -> Path:
    """Where the module's source is in the Go module cache (downloaded if needed)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    if build.nosumdb:
        env["GONOSUMDB"] = build.nosumdb
    download = subprocess.run(["go", "mod", "download", "-json", f"{build.module}@{build.version}"],
                              env=env, capture_output=True, text=True)
    info = json.loads(download.stdout or "{}")
    if download.returncode != 0 or not info.get("Dir"):
        raise RuntimeError(f"cannot download {build.module}@{build.version}: {info.get('Error') or download.stderr}")
    return Path(info["Dir"])


def tree_files(source: Path, target: str) -> dict[str, tuple[bytes, int]]:
    """Every file under `source`, placed under `target` in an image."""
    return {f"{target}/{path.relative_to(source)}": (path.read_bytes(), 0o644)
            for path in sorted(source.rglob("*")) if path.is_file()}


def go_binaries(build: GoBuild) -> dict[str, Path]:
    """Build (once) the binaries of a module version from the Go module proxy."""
    out = CACHE / "ci-bin" / build.cache_key()
    wanted = {name: out / name for name, _ in build.binaries}
    if all(p.exists() for p in wanted.values()):
        return wanted
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": build.toolchain, "CGO_ENABLED": "1" if build.cgo else "0"}
    if build.nosumdb:
        env["GONOSUMDB"] = build.nosumdb
    source = module_dir(build)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(source, src)
        subprocess.run(["chmod", "-R", "u+w", str(src)], check=True)
        for old, new in build.replaces:
            subprocess.run(["go", "mod", "edit", f"-replace={old}={new}"], cwd=src, env=env, check=True)
        for path, added in build.added:
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(added, src / path)
        out.mkdir(parents=True, exist_ok=True)
        for name, package in build.binaries:
            print(f"ci-images: building {name} from {build.module}@{build.version}", flush=True)
            subprocess.run(["go", "build", "-tags", build.tags, "-trimpath", "-ldflags", "-s -w",
                            "-o", str(out / f"{name}.partial"), package], cwd=src, env=env, check=True)
            (out / f"{name}.partial").rename(out / name)
    return wanted


def base_layer(packages: str = BASE_PACKAGES) -> bytes:
    """A Debian 12 minbase root filesystem with `packages` (comma-separated), as a layer."""
    digest = hashlib.sha256(packages.encode()).hexdigest()[:12]
    cached = CACHE / "ci-base" / f"bookworm-{digest}.tar"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            print("ci-images: debootstrap of the base layer", flush=True)
            # debootstrap refuses a --cache-dir that does not exist yet (a first run)
            (CACHE / "debs").mkdir(parents=True, exist_ok=True)
            bootstrap = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={packages}", f"--cache-dir={CACHE / 'debs'}",
                 "bookworm", str(root), "http://deb.debian.org/debian"], text=True, capture_output=True)
            if bootstrap.returncode != 0:
                log_tail = (root / "debootstrap" / "debootstrap.log")
                detail = log_tail.read_text()[-2000:] if log_tail.exists() else ""
                raise LocalCloudError(f"debootstrap of the CI images' base layer failed: "
                                      f"{bootstrap.stderr.strip() or bootstrap.stdout.strip()}\n{detail}".strip())
            # uid 1000 is the user the official Gitea image runs as
            subprocess.run(["chroot", str(root), "useradd", "--uid", "1000", "--home-dir", "/data/git",
                            "--shell", "/bin/sh", "--no-create-home", "git"], check=True)
            subprocess.run(["chroot", str(root), "sh", "-c", "apt-get clean; rm -rf /var/lib/apt/lists/*"],
                           check=True)
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            with tarfile.open(partial, "w") as tar:
                for entry in sorted(root.iterdir()):
                    if entry.name not in ("dev", "proc", "sys"):
                        tar.add(entry, arcname=entry.name)
            partial.rename(cached)
    return cached.read_bytes()


# Everything goes under /usr/local: Debian's /bin is a link to usr/bin, which a file under
# /bin in the top layer would replace by a directory (and /bin/sh would be gone).
def ci_images(base: bytes, gitea: dict[str, Path], drone: dict[str, Path], runner: dict[str, Path],
              gitea_source: Path, docker: bytes) -> dict[str, ImageSpec]:
    path = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    # Without the `bindata` build tag Gitea reads its locales, templates and static files
    # from STATIC_ROOT_PATH; they come from the module's source (the web UI's compiled
    # JavaScript is not there, which the API and git over HTTP do not need).
    gitea_static = {}
    for tree in ("options", "templates", "public"):
        gitea_static.update(tree_files(gitea_source / tree, f"{GITEA_STATIC}/{tree}"))
    return {
        "gitea": ImageSpec(
            repo_tag=f"dockyard/gitea:{GITEA.version.lstrip('v')}",
            cmd=[], entrypoint=["/usr/local/bin/gitea-entrypoint"],
            files={"/usr/local/bin/gitea": (gitea["gitea"].read_bytes(), 0o755),
                   "/usr/local/bin/environment-to-ini": (gitea["environment-to-ini"].read_bytes(), 0o755),
                   "/usr/local/bin/gitea-entrypoint": (GITEA_ENTRYPOINT.encode(), 0o755), **gitea_static},
            env=path + ("GITEA_CUSTOM=/data/gitea", "GITEA_WORK_DIR=/data/gitea", "USER=git"),
            exposed_ports=("3000/tcp",), base_layers=(base,)),
        "drone": ImageSpec(
            repo_tag=f"dockyard/drone:{DRONE.version.lstrip('v')}",
            cmd=[], entrypoint=["/usr/local/bin/drone-server"],
            files={"/usr/local/bin/drone-server": (drone["drone-server"].read_bytes(), 0o755)},
            env=path + ("XDG_CACHE_HOME=/data", "DRONE_DATABASE_DRIVER=sqlite3",
                        "DRONE_DATABASE_DATASOURCE=/data/database.sqlite", "DRONE_RUNNER_OS=linux",
                        "DRONE_RUNNER_ARCH=amd64", "DRONE_SERVER_PORT=:80", "DRONE_SERVER_HOST=localhost"),
            exposed_ports=("80/tcp",), base_layers=(base,)),
        "drone-runner": ImageSpec(
            repo_tag=f"dockyard/drone-runner-docker:{RUNNER.version.lstrip('v')}",
            cmd=[], entrypoint=["/usr/local/bin/drone-runner-docker"],
            files={"/usr/local/bin/drone-runner-docker": (runner["drone-runner-docker"].read_bytes(), 0o755)},
            env=path + ("GODEBUG=netdns=go", "DRONE_PLATFORM_OS=linux", "DRONE_PLATFORM_ARCH=amd64"),
            exposed_ports=("3000/tcp",), base_layers=(base,)),
        # the runner replaces the entrypoint of steps with commands by /bin/sh
        "drone-pipeline": ImageSpec(
            repo_tag=PIPELINE_TAG,
            cmd=[], entrypoint=["/usr/local/bin/drone-clone"],
            files={"/usr/local/bin/docker": (docker, 0o755),
                   "/usr/local/bin/drone-clone": (DRONE_CLONE.encode(), 0o755)},
            env=path, base_layers=(base,)),
    }


def build_ci_images(out: Path) -> dict[str, str]:
    """Write the archives to `out`; returns the `dockyard:ciImages` settings for them."""
    specs = ci_images(base_layer(), go_binaries(GITEA), go_binaries(DRONE), go_binaries(RUNNER), module_dir(GITEA),
                      docker_cli())
    settings = {}
    for name, spec in specs.items():
        write_archive(spec, out / f"{name}.tar")
        key = {"gitea": "gitea", "drone": "drone", "drone-runner": "droneRunner", "drone-pipeline": "droneClone"}[name]
        settings[key] = spec.repo_tag
    write_archive(busybox_image(), out / "busybox.tar")
    return settings
