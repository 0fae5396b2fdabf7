"""nfs-mount.sh, docker-host.sh and swarm-tokens.sh run here for real, on a PATH that holds
only stand-ins for the commands that would change the machine (mount, mkfs, docker,
systemctl, ...) and the harmless tools the scripts need. The files a script writes go
under SYSROOT, a scratch directory, never this machine's /etc."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import docker_archive, script_command

BASH = shutil.which("bash") or "/bin/bash"

# the real tools a script may use: they read, or write only where the script is pointed
REAL_TOOLS = ("bash", "awk", "cat", "chmod", "cmp", "dirname", "flock", "grep", "head", "mkdir",
              "mktemp", "mv", "rm", "sed", "seq", "sleep", "sort", "tail", "tr", "wc")

# stand-ins: they only record what they were asked, in $LOG_DIR/calls
FAKE_ID = '#!/bin/bash\n[ "$1" = -u ] && echo 0\n'
FAKE_RECORDER = '#!/bin/bash\necho "$(basename "$0") $*" >> "$LOG_DIR/calls"\n'
FAKE_NOT_MOUNTED = '#!/bin/bash\necho "mountpoint $*" >> "$LOG_DIR/calls"\nexit 1\n'
FAKE_FINDMNT = '#!/bin/bash\necho ro,relatime\n'

# blkid/wipefs see a signature when $LOG_DIR/fs-type names one (mkfs.ext4 writes it), and
# wipefs also one that $LOG_DIR/other-signature describes (e.g. a partition table)
FAKE_BLKID = """#!/bin/bash
echo "blkid $*" >> "$LOG_DIR/calls"
[ -f "$LOG_DIR/fs-type" ] || exit 2
read -r type < "$LOG_DIR/fs-type"
case " $* " in
  *" -s UUID "*) echo 0f6c3e1a-7d2b-4c55-9d0e-5a1f2b3c4d5e ;;
  *" -s TYPE "*) echo "$type" ;;
  *) echo "${!#}: UUID=\\"0f6c3e1a-7d2b-4c55-9d0e-5a1f2b3c4d5e\\" TYPE=\\"$type\\"" ;;
esac
"""
FAKE_WIPEFS = """#!/bin/bash
echo "wipefs $*" >> "$LOG_DIR/calls"
found=
[ -f "$LOG_DIR/fs-type" ] && found="$(< "$LOG_DIR/fs-type")"
[ -f "$LOG_DIR/other-signature" ] && found="$(< "$LOG_DIR/other-signature")"
[ -n "$found" ] || exit 0
echo "DEVICE OFFSET TYPE UUID LABEL"
echo "${!#} 0x438 $found 0f6c3e1a-7d2b-4c55-9d0e-5a1f2b3c4d5e"
"""
FAKE_MKFS = """#!/bin/bash
echo "mkfs.ext4 $*" >> "$LOG_DIR/calls"
echo ext4 > "$LOG_DIR/fs-type"
"""
FAKE_DPKG_QUERY = '#!/bin/bash\necho 27.5.1-0ubuntu1\n'
FAKE_SYSTEMCTL = """#!/bin/bash
echo "systemctl $*" >> "$LOG_DIR/calls"
[ "$1" = cat ] && exit 1
exit 0
"""
FAKE_DOCKER_ENGINE = """#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
[ "$1" = version ] && echo 27.5.1
exit 0
"""


def sandbox(tmp_path: Path, fakes: dict[str, str]) -> Path:
    """A bin directory with the stand-ins and links to REAL_TOOLS: the scripts' whole PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in REAL_TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool} is needed on this machine"
        (bin_dir / tool).symlink_to(real)
    (bin_dir / "basename").symlink_to(shutil.which("basename"))
    for name, text in fakes.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def run(script: str, bin_dir: Path, log_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": str(bin_dir), "LOG_DIR": str(log_dir), **env}
    return subprocess.run(script_command(script, bash=BASH), env=full, text=True, capture_output=True, timeout=120)


def calls(log_dir: Path) -> list[str]:
    log = log_dir / "calls"
    return log.read_text().splitlines() if log.exists() else []


# --- swarm-tokens.sh -------------------------------------------------------------------------

FAKE_DOCKER_MANAGER = """#!/bin/bash
case "$*" in
  "info --format {{.Swarm.ControlAvailable}}") echo true ;;
  "swarm join-token -q worker") echo SWMTKN-1-worker-secret ;;
  "swarm join-token -q manager")
    [ "${FAKE_MANAGER_TOKEN:-ok}" = fail ] && { echo "Error response from daemon: rpc error" >&2; exit 1; }
    [ "${FAKE_MANAGER_TOKEN:-ok}" = empty ] && exit 0
    echo SWMTKN-1-manager-secret ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def docker_manager(tmp_path) -> Path:
    return sandbox(tmp_path, {"docker": FAKE_DOCKER_MANAGER})


def test_swarm_tokens_prints_worker_then_manager_token(docker_manager, tmp_path):
    result = run("swarm-tokens.sh", docker_manager, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == ["SWMTKN-1-worker-secret", "SWMTKN-1-manager-secret", ""]


@pytest.mark.parametrize("failure", ["fail", "empty"])
def test_swarm_tokens_prints_no_token_when_a_later_step_fails(docker_manager, tmp_path, failure):
    result = run("swarm-tokens.sh", docker_manager, tmp_path, FAKE_MANAGER_TOKEN=failure)
    assert result.returncode != 0
    assert result.stdout == "", "a failed run prints nothing, so that no token ends up in an error " \
                                "message or a half-read output"
    assert "SWMTKN" not in result.stderr
    assert "manager" in result.stderr


# --- nfs-mount.sh: concurrent fstab edits ----------------------------------------------------

ORIGINAL_FSTAB = "# /etc/fstab\nUUID=1111 / ext4 defaults 0 1\nUUID=2222 /boot vfat defaults 0 2\n"


def test_concurrent_nfs_mounts_keep_every_fstab_line(tmp_path):
    """One host mounts several exports at once (rw and ro): each run rewrites fstab, and none
    may drop a line another run just added."""
    bin_dir = sandbox(tmp_path, {"id": FAKE_ID, "mountpoint": FAKE_NOT_MOUNTED, "mount": FAKE_RECORDER,
                                 "umount": FAKE_RECORDER, "findmnt": FAKE_FINDMNT})
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run" / "lock").mkdir(parents=True)
    fstab = root / "etc" / "fstab"
    fstab.write_text(ORIGINAL_FSTAB)
    fstab.chmod(0o644)
    source = tmp_path / "export"
    source.mkdir()
    runs = 40

    def mount(i: int) -> subprocess.CompletedProcess:
        return run("nfs-mount.sh", bin_dir, tmp_path, SYSROOT=str(root), SOURCE=str(source),
                   MOUNT_POINT=str(tmp_path / "mnt" / f"m{i}"), MODE="rw" if i % 2 else "ro")

    with ThreadPoolExecutor(max_workers=runs) as pool:
        results = list(pool.map(mount, range(runs)))
    lines = fstab.read_text().splitlines()
    expected = [f"{source} {tmp_path}/mnt/m{i} none bind,{'rw' if i % 2 else 'ro'},nofail 0 0"
                for i in range(runs)]
    missing = [line for line in expected if line not in lines]
    assert missing == [], f"{len(missing)} of {runs} mount lines lost"
    for result in results:
        assert result.returncode == 0, result.stderr
    assert lines[:3] == ORIGINAL_FSTAB.splitlines(), "the host's own lines stay, in order"
    assert len(lines) == 3 + runs
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["fstab"], "no temp file is left behind"
    assert fstab.stat().st_mode & 0o777 == 0o644

    # a second run of all of them changes nothing
    with ThreadPoolExecutor(max_workers=runs) as pool:
        again = list(pool.map(mount, range(runs)))
    assert all(r.returncode == 0 and "recording" not in r.stderr for r in again)
    assert fstab.read_text().splitlines() == lines


# --- docker-host.sh: formats only a blank data volume ------------------------------------------

MIB = 1024 * 1024


@pytest.fixture
def host(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {
        "id": FAKE_ID, "blkid": FAKE_BLKID, "wipefs": FAKE_WIPEFS, "mkfs.ext4": FAKE_MKFS,
        "mountpoint": FAKE_NOT_MOUNTED, "mount": FAKE_RECORDER, "dockerd": FAKE_RECORDER,
        "dpkg-query": FAKE_DPKG_QUERY, "systemctl": FAKE_SYSTEMCTL, "docker": FAKE_DOCKER_ENGINE,
    })
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run" / "lock").mkdir(parents=True)
    (root / "etc" / "fstab").write_text(ORIGINAL_FSTAB)
    return {"bin": bin_dir, "root": root, "disk": tmp_path / "disk.img", "logs": tmp_path,
            "mount": tmp_path / "data"}


def docker_host(host: dict, **env: str) -> subprocess.CompletedProcess:
    return run("docker-host.sh", host["bin"], host["logs"], SYSROOT=str(host["root"]), DATA_DEVICE=str(host["disk"]),
               DATA_DEVICE_IS_FILE="yes", DATA_MOUNT=str(host["mount"]), **env)


def formatted(host: dict) -> bool:
    return any(c.startswith("mkfs") for c in calls(host["logs"]))


def test_a_blank_data_volume_is_formatted_and_mounted(host):
    with host["disk"].open("wb") as disk:
        disk.truncate(4 * MIB)  # reads as zeros
    result = docker_host(host)
    assert result.returncode == 0, result.stderr
    assert formatted(host)
    fstab = (host["root"] / "etc" / "fstab").read_text()
    assert f"UUID=0f6c3e1a-7d2b-4c55-9d0e-5a1f2b3c4d5e {host['mount']} ext4 defaults,nofail,discard 0 2" in fstab
    assert fstab.startswith(ORIGINAL_FSTAB)
    assert f"mount {host['mount']}" in calls(host["logs"])
    # run twice: the filesystem is there now and is kept
    (host["logs"] / "calls").unlink()
    again = docker_host(host)
    assert again.returncode == 0, again.stderr
    assert not formatted(host)
    assert (host["root"] / "etc" / "fstab").read_text() == fstab


def test_a_data_volume_with_data_but_no_signature_is_not_formatted(host):
    # e.g. a filesystem blkid does not know, or one whose superblock is damaged
    host["disk"].write_bytes(b"\0" * (MIB - 4096) + os.urandom(4096) + b"\0" * MIB)
    result = docker_host(host)
    assert not formatted(host), "mkfs would destroy what is on the volume"
    assert result.returncode != 0
    assert str(host["disk"]) in result.stderr and "not formatting" in result.stderr


def test_a_data_volume_with_any_signature_is_not_formatted(host):
    # zeros in its first MiB, but wipefs finds a signature (e.g. a backup GPT at its end)
    with host["disk"].open("wb") as disk:
        disk.truncate(4 * MIB)
    (host["logs"] / "other-signature").write_text("PMBR\n")
    result = docker_host(host)
    assert not formatted(host)
    assert result.returncode != 0
    assert "PMBR" in result.stderr, "the message shows what wipefs found"


def test_a_data_volume_with_a_filesystem_is_kept(host):
    host["disk"].write_bytes(os.urandom(2 * MIB))
    (host["logs"] / "fs-type").write_text("ext4\n")
    result = docker_host(host)
    assert result.returncode == 0, result.stderr
    assert not formatted(host)
    assert "UUID=0f6c3e1a-7d2b-4c55-9d0e-5a1f2b3c4d5e" in (host["root"] / "etc" / "fstab").read_text()


def test_a_data_volume_with_another_filesystem_is_left_alone(host):
    host["disk"].write_bytes(os.urandom(2 * MIB))
    (host["logs"] / "fs-type").write_text("xfs\n")
    result = docker_host(host)
    assert result.returncode != 0 and "holds xfs" in result.stderr
    assert not formatted(host)
    assert (host["root"] / "etc" / "fstab").read_text() == ORIGINAL_FSTAB, "nothing mounts it as ext4"


@pytest.mark.parametrize("live_restore", ["true", "false"])
def test_live_restore_is_in_daemon_json_as_the_host_asks(host, live_restore):
    """Issue 14 (CIS Docker benchmark): containers outlive a restart of dockerd, on the hosts
    that are no swarm node (Docker refuses live-restore in swarm mode)."""
    host["disk"].write_bytes(os.urandom(2 * MIB))
    (host["logs"] / "fs-type").write_text("ext4\n")
    result = docker_host(host, LIVE_RESTORE=live_restore)
    assert result.returncode == 0, result.stderr
    daemon = json.loads((host["root"] / "etc/docker/daemon.json").read_text())
    assert daemon["live-restore"] is (live_restore == "true") and daemon["no-new-privileges"] is True
    assert docker_host(host, LIVE_RESTORE="yes").returncode != 0


def test_what_keeps_data_on_the_volume_does_not_start_without_it(host):
    host["disk"].write_bytes(os.urandom(2 * MIB))
    (host["logs"] / "fs-type").write_text("ext4\n")
    result = docker_host(host, DATA_OWNERS="docker nfs-server")
    assert result.returncode == 0, result.stderr
    for unit in ("docker", "nfs-server"):
        dropin = host["root"] / f"etc/systemd/system/{unit}.service.d/dockyard-data.conf"
        assert dropin.read_text() == f"[Unit]\nRequiresMountsFor={host['mount']}\n"
    assert "systemctl daemon-reload" in calls(host["logs"])
    assert '"no-new-privileges": true' in (host["root"] / "etc/docker/daemon.json").read_text()
    (host["logs"] / "calls").unlink()
    again = docker_host(host, DATA_OWNERS="docker nfs-server")
    assert again.returncode == 0 and "requirement" not in again.stderr
    assert "systemctl daemon-reload" not in calls(host["logs"])



# --- docker-host.sh: containers cannot reach the metadata service ------------------------------

METADATA_UNIT = "etc/systemd/system/dockyard-metadata-block.service"
METADATA_RULE = "DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable"

# systemctl that remembers what it enabled and started, so that is-enabled and is-active answer
# as systemd would ("$LOG_DIR/enabled-UNIT", "$LOG_DIR/active-UNIT")
FAKE_SYSTEMCTL_STATEFUL = """#!/bin/bash
echo "systemctl $*" >> "$LOG_DIR/calls"
unit=${!#}
case "$1" in
  cat) exit 1 ;;
  is-enabled) [ -f "$LOG_DIR/enabled-$unit" ] ;;
  is-active) [ -f "$LOG_DIR/active-$unit" ] ;;
  enable) echo > "$LOG_DIR/enabled-$unit" ;;
  start | restart) echo > "$LOG_DIR/active-$unit" ;;
esac
"""

# iptables that keeps its rules in "$LOG_DIR/iptables", one "CHAIN RULESPEC" a line, in order:
# -C answers from it, -I puts the rule first, -A last; -w (wait for the lock) is taken and ignored
FAKE_IPTABLES = """#!/bin/bash
echo "iptables $*" >> "$LOG_DIR/calls"
rules="$LOG_DIR/iptables"
touch "$rules"
[ "$1" = -w ] && shift
action=$1 chain=$2
shift 2
line="$chain $*"
case "$action" in
  -N) exit 1 ;;  # Docker made the chain already
  -C) grep -qxF -- "$line" "$rules" || { echo "iptables: Bad rule (does a matching rule exist in that chain?)." >&2; exit 1; } ;;
  -I) { echo "$line"; cat "$rules"; } > "$rules.next" && mv "$rules.next" "$rules" ;;
  -A) echo "$line" >> "$rules" ;;
  *) echo "fake iptables: $action is not implemented" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def metadata_host(host) -> dict:
    (host["bin"] / "systemctl").write_text(FAKE_SYSTEMCTL_STATEFUL)
    host["disk"].write_bytes(os.urandom(2 * MIB))
    (host["logs"] / "fs-type").write_text("ext4\n")
    return host


def unit_settings(text: str) -> dict[str, str]:
    return {key: value for key, _, value in (line.partition("=") for line in text.splitlines() if "=" in line)}


def test_docker_host_installs_and_starts_the_metadata_block_before_docker(metadata_host):
    result = docker_host(metadata_host)
    assert result.returncode == 0, result.stderr
    unit = unit_settings((metadata_host["root"] / METADATA_UNIT).read_text())
    # before Docker (re)starts the containers it runs, after a reboot too
    assert unit["Before"] == "docker.service" and unit["PartOf"] == "docker.service"
    assert unit["ExecStart"].startswith("/bin/sh -c 'iptables -w -N DOCKER-USER 2>/dev/null; ")
    assert unit["WantedBy"] == "docker.service", "enabled, it starts whenever docker does, e.g. after a reboot"
    assert unit["Type"] == "oneshot" and unit["RemainAfterExit"] == "yes"
    assert "$" not in unit["ExecStart"], "systemd would expand it"
    made = calls(metadata_host["logs"])
    enable = made.index("systemctl enable --quiet dockyard-metadata-block.service")
    start = next(i for i, c in enumerate(made) if c.endswith(" dockyard-metadata-block.service")
                 and c.split()[1] in ("start", "restart"))
    reload = made.index("systemctl daemon-reload")
    docker_up = max(i for i, c in enumerate(made) if c == "docker info")
    assert reload < start and docker_up < enable < start, "systemd reads the new unit first"


def test_docker_host_run_again_leaves_the_metadata_block_alone(metadata_host):
    assert docker_host(metadata_host).returncode == 0
    unit = metadata_host["root"] / METADATA_UNIT
    written = unit.stat().st_mtime_ns, unit.stat().st_ino
    (metadata_host["logs"] / "calls").unlink()
    again = docker_host(metadata_host)
    assert again.returncode == 0, again.stderr
    assert (unit.stat().st_mtime_ns, unit.stat().st_ino) == written, "the unit is not written again"
    made = calls(metadata_host["logs"])
    touched = [c for c in made if "dockyard-metadata-block" in c and not c.split()[1].startswith("is-")]
    assert touched == [], "neither enabled nor (re)started again"
    assert "systemctl daemon-reload" not in made
    # a block that is not running (e.g. it failed) is started by the next run
    (metadata_host["logs"] / "active-dockyard-metadata-block.service").unlink()
    third = docker_host(metadata_host)
    assert third.returncode == 0, third.stderr
    assert "systemctl start dockyard-metadata-block.service" in calls(metadata_host["logs"])


def rules_after_exec_start(exec_start: str, tmp_path: Path, rules: str = "", runs: int = 3) -> list[str]:
    """Run a unit's ExecStart `runs` times, as systemd would (every start of docker), against
    an iptables that keeps its rules (starting with `rules`); the rules it holds then."""
    bin_dir = tmp_path / "iptables-bin"
    bin_dir.mkdir()
    (bin_dir / "iptables").write_text(FAKE_IPTABLES)
    (bin_dir / "iptables").chmod(0o755)
    for tool in ("cat", "grep", "mv", "touch"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    logs = tmp_path / "iptables-logs"
    logs.mkdir()
    (logs / "iptables").write_text(rules)
    for _ in range(runs):
        ran = subprocess.run(shlex.split(exec_start), env={"PATH": str(bin_dir), "LOG_DIR": str(logs)}, text=True,
                             capture_output=True, timeout=30)
        assert ran.returncode == 0, ran.stderr
    assert all(c.startswith("iptables -w ") for c in calls(logs)), "waits for the xtables lock"
    return (logs / "iptables").read_text().splitlines()


def test_the_metadata_block_adds_its_rule_once_and_first(metadata_host, tmp_path):
    """One REJECT, ahead of what DOCKER-USER already holds."""
    assert docker_host(metadata_host).returncode == 0
    exec_start = unit_settings((metadata_host["root"] / METADATA_UNIT).read_text())["ExecStart"]
    # "-j RETURN": what older Dockers put there
    assert rules_after_exec_start(exec_start, tmp_path, "DOCKER-USER -j RETURN\n") == [METADATA_RULE, "DOCKER-USER -j RETURN"]


# --- ci-secrets.sh ---------------------------------------------------------------------------

@pytest.fixture
def ci_volume(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {"mountpoint": FAKE_NOT_MOUNTED})
    for tool in ("od", "cat"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    root = tmp_path / "srv-ci"
    root.mkdir()
    return {"bin": bin_dir, "logs": tmp_path, "root": root}


def ci_secrets(volume: dict, **env: str) -> subprocess.CompletedProcess:
    return run("ci-secrets.sh", volume["bin"], volume["logs"], CI_ROOT=str(volume["root"]), **env)


def printed(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_ci_secrets_are_made_once_on_the_volume_and_kept(ci_volume):
    first = printed(ci_secrets(ci_volume, CI_ROOT_IS_DIR="yes"))
    assert len(first["GITEA_SECRET_KEY"]) == 64 and len(first["DRONE_DATABASE_SECRET"]) == 32
    for name in ("gitea_secret_key", "drone_database_secret"):
        assert (ci_volume["root"] / "secrets" / name).stat().st_mode & 0o777 == 0o600
    again = ci_secrets(ci_volume, CI_ROOT_IS_DIR="yes")
    assert printed(again) == first, "a second run, or a recreated stack on the same volume, gets the same keys"
    assert "recording" not in again.stderr


def test_gitea_keeps_the_key_its_app_ini_already_has(ci_volume):
    app_ini = ci_volume["root"] / "gitea/gitea/conf/app.ini"
    app_ini.parent.mkdir(parents=True)
    app_ini.write_text("[security]\nINSTALL_LOCK = true\nSECRET_KEY = k3y-from-an-older-volume\n")
    assert printed(ci_secrets(ci_volume, CI_ROOT_IS_DIR="yes"))["GITEA_SECRET_KEY"] == "k3y-from-an-older-volume"


def test_a_drone_database_made_without_a_secret_gets_none(ci_volume):
    database = ci_volume["root"] / "drone/data/database.sqlite"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"SQLite format 3\0")
    result = ci_secrets(ci_volume, CI_ROOT_IS_DIR="yes")
    assert printed(result)["DRONE_DATABASE_SECRET"] == ""
    assert "stay unencrypted" in result.stderr
    assert not (ci_volume["root"] / "secrets/drone_database_secret").exists()


def test_ci_secrets_refuse_a_volume_that_is_not_mounted(ci_volume):
    result = ci_secrets(ci_volume)
    assert result.returncode != 0 and "is not mounted" in result.stderr
    assert result.stdout == "" and not (ci_volume["root"] / "secrets").exists()


# --- swarm-init.sh, swarm-join.sh --------------------------------------------------------------

FAKE_DOCKER_NEW_NODE = """#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
case "$*" in
  "info --format {{.Swarm.LocalNodeState}}") [ -f "$LOG_DIR/joined" ] && echo active || echo inactive ;;
  "info --format {{.Swarm.NodeID}}") echo n0de ;;
  "info --format {{.Swarm.ControlAvailable}}") echo true ;;
  "swarm init "*) : > "$LOG_DIR/joined" ;;
  "info --format {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}")
    cat "$LOG_DIR/heartbeat" 2>/dev/null || echo 5000000000 ;;
  "swarm update --dispatcher-heartbeat "*) echo $(( ${4%s} * 1000000000 )) > "$LOG_DIR/heartbeat" ;;
esac
"""
FAKE_CURL = """#!/bin/bash
echo "curl $*" >> "$LOG_DIR/calls"
cat > "$LOG_DIR/join-request"
: > "$LOG_DIR/joined"
printf '\\n200'
"""


def test_the_swarm_data_path_is_the_private_address(tmp_path):
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_NEW_NODE, "curl": FAKE_CURL})
    init = run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5")
    assert init.returncode == 0, init.stderr
    assert ("docker swarm init --advertise-addr 10.210.0.5 --listen-addr 10.210.0.5:2377 "
            "--data-path-addr 10.210.0.5") in calls(tmp_path)

    (tmp_path / "joined").unlink()
    join = run("swarm-join.sh", bin_dir, tmp_path, MANAGER_ADDR="10.210.0.5", ADVERTISE_ADDR="10.210.0.6",
               JOIN_ROLE="worker", JOIN_TOKEN="SWMTKN-1-secret")
    assert join.returncode == 0, join.stderr
    request = json.loads((tmp_path / "join-request").read_text())
    assert request["DataPathAddr"] == request["AdvertiseAddr"] == "10.210.0.6"
    assert request["JoinToken"] == "SWMTKN-1-secret"
    assert not [c for c in calls(tmp_path) if "SWMTKN" in c], "the token is in no argv"


def test_with_an_encrypted_data_path_the_overlays_traffic_goes_to_the_wireguard_address(tmp_path):
    """Issue 14: the overlays' VXLAN goes to the nodes' data path (WireGuard) addresses; the
    swarm's control traffic stays on the private ones."""
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_NEW_NODE, "curl": FAKE_CURL})
    init = run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5", DATA_PATH_ADDR="100.90.0.5")
    assert init.returncode == 0, init.stderr
    assert ("docker swarm init --advertise-addr 10.210.0.5 --listen-addr 10.210.0.5:2377 "
            "--data-path-addr 100.90.0.5") in calls(tmp_path)
    (tmp_path / "joined").unlink()
    join = run("swarm-join.sh", bin_dir, tmp_path, MANAGER_ADDR="10.210.0.5", ADVERTISE_ADDR="10.210.0.6",
               DATA_PATH_ADDR="100.90.0.6", JOIN_ROLE="worker", JOIN_TOKEN="SWMTKN-1-secret")
    assert join.returncode == 0, join.stderr
    request = json.loads((tmp_path / "join-request").read_text())
    assert (request["AdvertiseAddr"], request["DataPathAddr"]) == ("10.210.0.6", "100.90.0.6")


@pytest.mark.parametrize("script", ["swarm-init.sh", "swarm-join.sh"])
def test_a_node_that_joined_with_another_data_path_stops_the_run(tmp_path, script):
    """Docker fixes a node's data path when it joins: a stack made with its overlays in clear
    cannot move them onto WireGuard in place, and says what to do instead."""
    fake = FAKE_DOCKER_NEW_NODE.replace('echo true ;;', 'echo "${FAKE_MANAGER:-true}" ;;', 1)
    bin_dir = sandbox(tmp_path, {"docker": fake, "curl": FAKE_CURL})
    (tmp_path / "joined").write_text("")
    state = tmp_path / "docker-state.json"
    state.write_text('{"LocalAddr":"","RemoteAddr":"10.210.0.5:2377","ListenAddr":"0.0.0.0:2377",'
                     '"AdvertiseAddr":"10.210.0.6","DataPathAddr":"10.210.0.6","DataPathPort":4789}')
    env = {"ADVERTISE_ADDR": "10.210.0.6", "MANAGER_ADDR": "10.210.0.5", "JOIN_ROLE": "manager",
           "JOIN_TOKEN": "SWMTKN-1-secret", "DOCKER_SWARM_STATE": str(state)}
    moved = run(script, bin_dir, tmp_path, DATA_PATH_ADDR="100.90.0.6", **env)
    assert moved.returncode != 0
    assert "goes over 10.210.0.6, not 100.90.0.6" in moved.stderr and "dockyard:encryptDataPath" in moved.stderr
    kept = run(script, bin_dir, tmp_path, **env)  # no DATA_PATH_ADDR: the private address, as it joined
    assert kept.returncode == 0, kept.stderr
    assert not [c for c in calls(tmp_path) if "swarm init" in c or "leave" in c]


def test_the_swarm_heartbeat_is_set_once_and_only_when_it_differs(tmp_path):
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_NEW_NODE})
    assert run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5").returncode == 0
    assert not [c for c in calls(tmp_path) if "swarm update" in c], "Docker's 5 s is left alone"
    slow = run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5", HEARTBEAT="20s")
    assert slow.returncode == 0, slow.stderr
    assert (tmp_path / "heartbeat").read_text().strip() == "20000000000"
    again = run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5", HEARTBEAT="20s")
    assert again.returncode == 0 and "heartbeat" not in again.stderr
    assert len([c for c in calls(tmp_path) if "swarm update" in c]) == 1
    bad = run("swarm-init.sh", bin_dir, tmp_path, ADVERTISE_ADDR="10.210.0.5", HEARTBEAT="5m; reboot")
    assert bad.returncode != 0 and "HEARTBEAT must be seconds" in bad.stderr


UNLOCK_KEY = "SWMKEY-1-fake-unlock-key"
FAKE_DOCKER_AUTOLOCK = """#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
case "$*" in
  "info --format {{.Swarm.LocalNodeState}}") cat "$LOG_DIR/state" 2>/dev/null || echo active ;;
  "info --format {{.Swarm.NodeID}}") echo n0de ;;
  "info --format {{.Swarm.ControlAvailable}}") echo true ;;
  "info --format {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}") echo 5000000000 ;;
  "info --format {{.Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}")
    [ -f "$LOG_DIR/autolock" ] && echo true || echo false ;;
  "swarm update --autolock=true")
    : > "$LOG_DIR/autolock"
    printf 'Swarm updated.\nTo unlock a swarm manager after it restarts, run the `docker swarm unlock`\n'
    printf 'command and provide the following key:\n\n    %s\n' "$UNLOCK_KEY" ;;
  "swarm update --autolock=false") rm -f "$LOG_DIR/autolock" ;;
  "swarm unlock-key -q") [ -f "$LOG_DIR/autolock" ] && echo "$UNLOCK_KEY" ;;
esac
"""


def test_autolock_is_turned_on_and_off_as_the_stack_says_and_its_key_only_printed_by_its_own_script(tmp_path):
    """Issue 14: dockyard:swarmAutolock. swarm-init.sh turns it on once, without printing the
    key docker shows; swarm-unlock-key.sh prints it (to a secret output), and nothing when
    the swarm is not autolocked."""
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_AUTOLOCK})
    env = {"ADVERTISE_ADDR": "10.210.0.5", "UNLOCK_KEY": UNLOCK_KEY}
    off = run("swarm-unlock-key.sh", bin_dir, tmp_path, **env)
    assert off.returncode == 0 and off.stdout == "", "no key while the swarm is not autolocked"
    on = run("swarm-init.sh", bin_dir, tmp_path, AUTOLOCK="true", **env)
    assert on.returncode == 0, on.stderr
    assert on.stdout == "n0de\n" and UNLOCK_KEY not in on.stdout + on.stderr, "the key docker printed is dropped"
    assert "docker swarm update --autolock=true" in calls(tmp_path)
    key = run("swarm-unlock-key.sh", bin_dir, tmp_path, **env)
    assert key.returncode == 0 and key.stdout == f"{UNLOCK_KEY}\n"
    again = run("swarm-init.sh", bin_dir, tmp_path, AUTOLOCK="true", **env)
    assert again.returncode == 0 and "autolock" not in again.stderr, "safe to run twice"
    assert len([c for c in calls(tmp_path) if "--autolock" in c]) == 1
    default = run("swarm-init.sh", bin_dir, tmp_path, **env)
    assert default.returncode == 0 and "turning the swarm's autolock off" in default.stderr
    assert not (tmp_path / "autolock").exists()
    (tmp_path / "state").write_text("locked\n")
    locked = run("swarm-init.sh", bin_dir, tmp_path, AUTOLOCK="true", **env)
    assert locked.returncode != 0 and "docker swarm unlock" in locked.stderr and "swarm_unlock_key" in locked.stderr
    assert run("swarm-init.sh", bin_dir, tmp_path, AUTOLOCK="yes", **env).returncode != 0


FAKE_DOCKER_MEMBER = """#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
case "$*" in
  "info --format {{.Swarm.LocalNodeState}}") [ -f "$LOG_DIR/left" ] && [ ! -f "$LOG_DIR/joined" ] && echo inactive || echo active ;;
  "info --format {{range .Swarm.RemoteManagers}}{{.NodeID}} {{end}}") echo "$FAKE_MANAGERS " ;;
  "info --format {{.Swarm.ControlAvailable}}") echo false ;;
  "info --format {{.Swarm.NodeID}}") echo w0rker ;;
  "swarm leave --force") : > "$LOG_DIR/left" ;;
esac
"""


@pytest.mark.parametrize("managers,rejoins", [("oldf1rst c2", True), ("newf1rst c2", False)])
def test_a_host_in_another_swarm_leaves_it_and_joins_this_one(tmp_path, managers, rejoins):
    # the first manager was made again (a new droplet) and started a new swarm; the other
    # hosts still belong to the old one
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_MEMBER, "curl": FAKE_CURL})
    join = run("swarm-join.sh", bin_dir, tmp_path, MANAGER_ADDR="10.210.0.5", ADVERTISE_ADDR="10.210.0.6",
               JOIN_ROLE="worker", JOIN_TOKEN="SWMTKN-1-secret", FIRST_MANAGER_ID="newf1rst", FAKE_MANAGERS=managers)
    assert join.returncode == 0, join.stderr
    assert ("docker swarm leave --force" in calls(tmp_path)) == rejoins
    assert (tmp_path / "join-request").exists() == rejoins
    if not rejoins:
        assert "already in the swarm" in join.stderr


# --- swarm-datapath.sh ---------------------------------------------------------------------

PRIVATE_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUBLIC_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PEER_B = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PEER_C = "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdEYmtPQo="
# wg: a fixed key pair; syncconf records the configuration it was given
FAKE_WG = f"""#!/bin/bash
echo "wg $*" >> "$LOG_DIR/calls"
case "$1" in
  genkey) echo {PRIVATE_KEY} ;;
  pubkey) read -r key; [ "$key" = {PRIVATE_KEY} ] && echo {PUBLIC_KEY} ;;
  addconf) cat "$3" > "$LOG_DIR/added" ;;
  show) cat "$LOG_DIR/dump" 2>/dev/null ;;
  set) echo "$*" >> "$LOG_DIR/removed" ;;
  *) exit 1 ;;
esac
"""
FAKE_WG_QUICK = """#!/bin/bash
[ "$1" = strip ] && grep -v '^Address' "$SYSROOT/etc/wireguard/$2.conf"
"""
# systemd brings the interface up with the configuration's address
FAKE_SYSTEMCTL_WG = """#!/bin/bash
echo "systemctl $*" >> "$LOG_DIR/calls"
case "$1" in
  is-enabled) [ -f "$LOG_DIR/enabled-$3" ] ;;
  enable) : > "$LOG_DIR/enabled-$3" ;;
  is-active) [ -f "$LOG_DIR/active-$3" ] ;;
  start | restart) : > "$LOG_DIR/active-$2"; [ "$2" != wg-quick@dockyard0 ] ||
    sed -n 's/^Address = //p' "$SYSROOT/etc/wireguard/dockyard0.conf" > "$LOG_DIR/address" ;;
esac
"""
FAKE_IP = """#!/bin/bash
case "$1 $2" in
  "link show") [ -f "$LOG_DIR/address" ] ;;
  "-o -4") printf '7: dockyard0    inet %s scope global dockyard0\\       valid_lft forever\n' "$(cat "$LOG_DIR/address")" ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def wg_host(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {"id": FAKE_ID, "wg": FAKE_WG, "wg-quick": FAKE_WG_QUICK,
                                 "systemctl": FAKE_SYSTEMCTL_WG, "ip": FAKE_IP})
    (tmp_path / "root").mkdir()
    return {"bin": bin_dir, "logs": tmp_path, "root": tmp_path / "root"}


def datapath(host: dict, **env: str) -> subprocess.CompletedProcess:
    return run("swarm-datapath.sh", host["bin"], host["logs"], SYSROOT=str(host["root"]), **env)


def wg_conf(host: dict) -> Path:
    return host["root"] / "etc/wireguard/dockyard0.conf"


def test_the_data_path_key_is_made_once_on_the_host_and_only_its_public_half_printed(wg_host):
    first = datapath(wg_host, ACTION="key")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{PUBLIC_KEY}\n"
    key = wg_host["root"] / "etc/wireguard/dockyard0.key"
    assert key.read_text() == f"{PRIVATE_KEY}\n" and key.stat().st_mode & 0o777 == 0o600
    assert (wg_host["root"] / "etc/wireguard").stat().st_mode & 0o777 == 0o700
    again = datapath(wg_host, ACTION="key")
    assert again.stdout == first.stdout
    assert calls(wg_host["logs"]).count("wg genkey") == 1, "the key pair is never made again"
    assert PRIVATE_KEY not in first.stderr + again.stderr
    assert datapath(wg_host, ACTION="keys").returncode != 0


UP = {"ACTION": "up", "ADDRESS": "100.90.0.5/16", "NETWORK": "100.90.0.0/16", "PORT": "51820"}


def test_the_data_path_comes_up_with_every_peer_before_docker_and_its_guard(wg_host):
    assert datapath(wg_host, ACTION="key").returncode == 0
    peers = f"{PEER_B} 10.210.0.6 100.90.0.6\n{PEER_C} 10.210.0.7 100.90.0.7"
    up = datapath(wg_host, **UP, PEERS=peers)
    assert up.returncode == 0, up.stderr
    conf = wg_conf(wg_host).read_text()
    assert conf.startswith(f"[Interface]\nAddress = 100.90.0.5/16\nListenPort = 51820\nPrivateKey = {PRIVATE_KEY}\n")
    assert f"[Peer]\nPublicKey = {PEER_B}\nEndpoint = 10.210.0.6:51820\nAllowedIPs = 100.90.0.6/32" in conf
    assert f"[Peer]\nPublicKey = {PEER_C}\nEndpoint = 10.210.0.7:51820\nAllowedIPs = 100.90.0.7/32" in conf
    assert wg_conf(wg_host).stat().st_mode & 0o777 == 0o600
    units = wg_host["root"] / "etc/systemd/system"
    after = (units / "docker.service.d/dockyard-datapath.conf").read_text()
    assert "After=wg-quick@dockyard0.service" in after, "at boot Docker starts after its data path"
    guard = unit_settings((units / "dockyard-datapath-guard.service").read_text())
    assert guard["Before"] == "docker.service" and guard["WantedBy"] == "docker.service"
    log = calls(wg_host["logs"])
    assert log.index("systemctl daemon-reload") < log.index("systemctl start wg-quick@dockyard0")
    assert {"systemctl enable --quiet wg-quick@dockyard0", "systemctl enable --quiet dockyard-datapath-guard.service",
            "systemctl restart dockyard-datapath-guard.service"} <= set(log)
    assert PRIVATE_KEY not in up.stdout + up.stderr


def test_the_data_path_guard_keeps_vxlan_inside_wireguard_and_containers_off_it(wg_host, tmp_path):
    """Its ExecStart as systemd runs it, before every start of docker: one rule of each, however
    often it runs."""
    assert datapath(wg_host, ACTION="key").returncode == 0
    assert datapath(wg_host, **UP, PEERS="").returncode == 0
    exec_start = unit_settings((wg_host["root"] / "etc/systemd/system/dockyard-datapath-guard.service")
                               .read_text())["ExecStart"]
    assert "$" not in exec_start
    assert sorted(rules_after_exec_start(exec_start, tmp_path)) == [
        "DOCKER-USER -d 100.90.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
        "INPUT -p udp --dport 4789 ! -i dockyard0 -j DROP",
        "OUTPUT -p udp --dport 4789 ! -o dockyard0 -j DROP"]


def test_peers_change_in_place_and_a_leaving_node_keeps_its_peer_until_it_is_gone(wg_host):
    """Issue 14 review: the peers are applied at every run (a run cut short after writing the
    file applies them the next time), added and changed in place; a node no longer listed
    keeps its peer while it is still heard from (it is being drained), and goes once silent
    or once a new node has its address."""
    assert datapath(wg_host, ACTION="key").returncode == 0
    both = f"{PEER_B} 10.210.0.6 100.90.0.6\n{PEER_C} 10.210.0.7 100.90.0.7"
    assert datapath(wg_host, **UP, PEERS=both).returncode == 0
    again = datapath(wg_host, **UP, PEERS=both)
    assert again.returncode == 0 and "data path up with 2 peer(s)" in again.stderr
    assert PEER_C in (wg_host["logs"] / "added").read_text(), "applied again, though the file did not change"
    assert not [c for c in calls(wg_host["logs"]) if "restart wg-quick" in c]

    # C leaves: B is still configured, C is heard from 10 s ago (draining), D left long ago,
    # E lost its address to a new node
    peer_d, peer_e = "oJ9sB2RwvS0F5lwqjwYp3dTnq0m7KCqH6bFsrnVbCUw=", "cO8kR3DrnE3ib1OWhWt0AbXz7d2GWr8MXw6rNp0rCn0="
    now = int(time.time())
    (wg_host["logs"] / "dump").write_text("\n".join([
        f"{PRIVATE_KEY}\t{PUBLIC_KEY}\t51820\toff",
        f"{PEER_B}\t(none)\t10.210.0.6:51820\t100.90.0.6/32\t{now - 5}\t1\t1\toff",
        f"{PEER_C}\t(none)\t10.210.0.7:51820\t100.90.0.7/32\t{now - 10}\t1\t1\toff",
        f"{peer_d}\t(none)\t10.210.0.8:51820\t100.90.0.8/32\t{now - 600}\t1\t1\toff",
        f"{peer_e}\t(none)\t10.210.0.9:51820\t(none)\t{now - 5}\t1\t1\toff"]) + "\n")
    fewer = datapath(wg_host, **UP, PEERS=f"{PEER_B} 10.210.0.6 100.90.0.6")
    assert fewer.returncode == 0, fewer.stderr
    added = (wg_host["logs"] / "added").read_text()
    assert PEER_B in added and PEER_C not in added and "Address" not in added
    removed = (wg_host["logs"] / "removed").read_text().splitlines()
    assert sorted(removed) == sorted([f"set dockyard0 peer {peer_d} remove", f"set dockyard0 peer {peer_e} remove"])

    moved = datapath(wg_host, **{**UP, "ADDRESS": "100.91.0.5/16"}, PEERS=both)
    assert moved.returncode == 0 and "systemctl restart wg-quick@dockyard0" in calls(wg_host["logs"])


@pytest.mark.parametrize("peers", [f"{PEER_B} 10.210.0.6", f"x;reboot 10.210.0.6 100.90.0.6",
                                   f"{PEER_B} 10.210.0.6 100.90.0.6/32", f"{PEER_B} 10.210.0.6 100.90.0.6 more"])
def test_a_bad_peer_changes_nothing(wg_host, peers):
    assert datapath(wg_host, ACTION="key").returncode == 0
    bad = datapath(wg_host, **UP, PEERS=peers)
    assert bad.returncode != 0 and "PEERS" in bad.stderr
    assert not wg_conf(wg_host).exists()


# --- images-send.sh --------------------------------------------------------------------------

# ssh to a host whose engine holds the image IDs listed in $LOG_DIR/present; "unreachable"
# there makes every connection fail as ssh does (255). A load records the bytes it was sent.
FAKE_SSH_TO_ENGINE = """#!/bin/bash
[ -f "$LOG_DIR/unreachable" ] && exit 255
# "busy" holds how many connections fail before one gets through
if [ -f "$LOG_DIR/busy" ]; then
  left=$(cat "$LOG_DIR/busy")
  [ "$left" -gt 0 ] && { echo $((left - 1)) > "$LOG_DIR/busy"; exit 255; }
fi
stdin=yes
[ "$1" = -n ] && { stdin=no; shift; }
shift 2  # -F config
host=$1; shift
# like ssh, it reads its stdin unless told -n
[ "$stdin" = yes ] && [ "$1 $2" != "docker load" ] && cat > /dev/null
echo "ssh $host $*" >> "$LOG_DIR/calls"
case "$1 $2" in
  "docker image") grep -qx "${!##sha256:}" "$LOG_DIR/present" 2>/dev/null ;;
  "docker load") cat > "$LOG_DIR/loaded-$(wc -l < "$LOG_DIR/calls")" ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def sender(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {"ssh": FAKE_SSH_TO_ENGINE})
    (bin_dir / "tar").symlink_to(shutil.which("tar"))
    ids = ["a" * 64, "b" * 64, "e" * 64]
    archives = [docker_archive(tmp_path / f"web {i}.tar", image_id) for i, image_id in enumerate(ids)]
    return {"bin": bin_dir, "logs": tmp_path, "ids": ids, "archives": archives}


def send(sender: dict) -> subprocess.CompletedProcess:
    return run("images-send.sh", sender["bin"], sender["logs"], HOST="dockyard-local-b", CONNECT_TRIES="3",
               RETRY_PAUSE="0",
               SSH_CONFIG="Host dockyard-local-b\n  HostName 10.0.0.12\n",
               ARCHIVES="\n".join(str(a) for a in sender["archives"]))


def test_images_send_loads_only_the_images_a_host_lacks(sender):
    (sender["logs"] / "present").write_text(sender["ids"][0] + "\n")
    result = send(sender)
    assert result.returncode == 0, result.stderr
    checks = [c for c in calls(sender["logs"]) if " docker image inspect" in c]
    assert len(checks) == 3, "every archive is checked"
    loads = [c for c in calls(sender["logs"]) if " docker load" in c]
    assert loads == ["ssh dockyard-local-b docker load -q"] * 2
    sent = sorted(sender["logs"].glob("loaded-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.read_bytes() for p in sent] == [a.read_bytes() for a in sender["archives"][1:]], \
        "the archives the host lacked, whole"
    assert "2 image(s) loaded, 1 already there" in result.stderr


def test_images_send_sends_nothing_to_a_host_that_has_every_image(sender):
    (sender["logs"] / "present").write_text("\n".join(sender["ids"]) + "\n")
    result = send(sender)
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls(sender["logs"]) if " docker load" in c]
    assert "0 image(s) loaded, 3 already there" in result.stderr


def test_images_send_fails_on_a_host_it_cannot_reach(sender):
    (sender["logs"] / "unreachable").touch()
    result = send(sender)
    assert result.returncode != 0
    assert "cannot reach dockyard-local-b over ssh (3 tries)" in result.stderr


def test_images_send_waits_for_a_host_too_busy_to_answer_at_first(sender):
    (sender["logs"] / "present").write_text("\n".join(sender["ids"]) + "\n")
    (sender["logs"] / "busy").write_text("2")
    result = send(sender)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cannot reach dockyard-local-b yet") == 2
    assert "0 image(s) loaded, 3 already there" in result.stderr


# --- host-maintenance.sh ---------------------------------------------------------------------

# A manager's engine: container c1 uses image "used", the service web uses "service", and
# "keep", "registry", "old", "new" and "garbled" are unused; "new" was built a minute ago,
# "garbled" has a date nobody can read, the others were built in 2020.
FAKE_DOCKER_FOR_PRUNE = """#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
case "$*" in
  "ps --all --quiet") echo c1 ;;
  "inspect --format {{.Image}} c1") echo sha256:used ;;
  "info --format {{.Swarm.ControlAvailable}}") echo true ;;
  "service ls --format {{.Image}}") echo "registry/web:1@sha256:0123" ;;
  "image inspect --format {{.Id}} registry/web:1@sha256:0123") echo sha256:service ;;
  "image ls --quiet --no-trunc") printf 'sha256:%s\\n' used service keep old new old registry garbled ;;
  "image inspect --format {{.Created}} sha256:new") date -u +%Y-%m-%dT%H:%M:%S.000000000Z ;;
  "image inspect --format {{.Id}} sha256:"*) echo "${!#}" ;;
  "image inspect --format {{.Id}} dockyard/registry:2.8.2") echo sha256:registry ;;
  "image inspect --format {{.Created}} sha256:garbled") echo not-a-date ;;
  "image inspect --format {{.Created}} "*) echo 2020-01-01T00:00:00.000000000Z ;;
esac
exit 0
"""


@pytest.fixture
def maintained(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_FOR_PRUNE})
    for tool in ("date", "xargs", "chmod"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    root = tmp_path / "root"
    return {"bin": bin_dir, "root": root, "logs": tmp_path}


def maintain(host: dict, **env: str) -> subprocess.CompletedProcess:
    return run("host-maintenance.sh", host["bin"], host["logs"], SYSROOT=str(host["root"]),
               **{"PRUNE_SCHEDULE": "*-*-* 03:30:00", "PRUNE_AFTER": "168h",
                  "KEEP_IMAGES": "sha256:keep dockyard/registry:2.8.2", **env})


def test_maintenance_installs_the_timers_and_a_docker_that_restarts_once(maintained):
    first = maintain(maintained)
    assert first.returncode == 0, first.stderr
    units = maintained["root"] / "etc/systemd/system"
    timer = (units / "dockyard-prune.timer").read_text()
    assert "OnCalendar=*-*-* 03:30:00" in timer and "Persistent=true" in timer
    assert "Restart=always" in (units / "docker.service.d/dockyard-restart.conf").read_text()
    assert "systemctl restart docker" in (units / "dockyard-docker-health.service").read_text()
    env = (maintained["root"] / "etc/dockyard/prune.env").read_text()
    assert "PRUNE_AFTER=168h" in env and 'KEEP_IMAGES="sha256:keep dockyard/registry:2.8.2"' in env
    again = maintain(maintained)
    assert again.returncode == 0 and "writing" not in again.stderr, "a second run changes nothing"
    changed = maintain(maintained, PRUNE_SCHEDULE="daily")
    assert changed.stderr.count("writing") == 1 and "OnCalendar=daily" in (units / "dockyard-prune.timer").read_text()


def test_the_prune_removes_only_old_images_nothing_uses_or_keeps(maintained):
    assert maintain(maintained).returncode == 0
    prune = maintained["root"] / "usr/local/sbin/dockyard-prune"
    result = subprocess.run([str(prune)], env={"PATH": str(maintained["bin"]), "LOG_DIR": str(maintained["logs"]),
                                              "PRUNE_AFTER": "168h",
                                              "KEEP_IMAGES": "sha256:keep dockyard/registry:2.8.2"},
                            text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    removed = [c.split()[-1] for c in calls(maintained["logs"]) if c.startswith("docker image rm")]
    assert removed == ["sha256:old"], "not the container's, the service's, a kept, the new or an undated image"
    made = calls(maintained["logs"])
    assert "docker container prune --force --filter until=168h" in made
    assert "docker image prune --force --filter until=168h" in made
    assert "1 unused image(s) removed" in result.stdout


@pytest.mark.parametrize("after", ["", "12", "h", "12m", "1h2h"])
def test_maintenance_refuses_an_age_that_is_not_hours(maintained, after):
    result = maintain(maintained, PRUNE_AFTER=after)
    assert result.returncode != 0 and "PRUNE_AFTER must be hours" in result.stderr
