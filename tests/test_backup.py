"""Backups and restore (issue 17): backup.sh run for real with restic (Debian's, cached as the
monitoring tools are) against a repository in a temp directory, its configuration keys, and
the Backup components on mocks: which hosts back up what, the password only as a secret, and
what waits for a restore."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from components.config import ConfigError, parse_config
from components.topology import build_topology
from components.backup import data_paths
import shlex
from tests.harness import BASE_CONFIG, TEST_BACKUP_PASSWORD, TEST_BACKUP_SECRET_KEY, run_program, script_command
from tests.test_monitoring import debian_tool

PASSWORD = "correct horse 'battery' $staple"


@pytest.fixture(scope="module")
def restic() -> Path:
    return debian_tool("restic", "/usr/bin/restic")


@pytest.fixture
def site(tmp_path, restic):
    """One host (its own root for the files backup.sh writes, its data directory) and a
    repository the hosts share."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "restic").symlink_to(restic)
    return {"tmp": tmp_path, "bin": bin_dir, "repo": tmp_path / "repository"}


def host(site, name: str) -> dict:
    """A host's own root; its data directory is at the same path on every host, as the
    stack's are (a snapshot holds absolute paths)."""
    root = site["tmp"] / name / "root"
    data = site["tmp"] / "srv" / "data"
    root.mkdir(parents=True, exist_ok=True)
    return {"root": root, "data": data, "name": name}


def setup(site, h, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": f"{site['bin']}:{os.environ['PATH']}", "SYSROOT": str(h["root"]), "SKIP_SYSTEMD": "yes",
            "BACKUP_HOST": "b", "BACKUP_PATHS": str(h["data"]), "RESTIC_REPOSITORY": str(site["repo"]),
            "RESTIC_PASSWORD": PASSWORD, "BACKUP_SCHEDULE": "*-*-* 02:30:00", "BACKUP_KEEP": "--keep-last 2",
            "INIT_REPOSITORY": "yes", **env}
    return subprocess.run(script_command("backup.sh"), env=full, text=True, capture_output=True, timeout=120)


def backup_now(site, h, **overrides: str) -> subprocess.CompletedProcess:
    """What `systemctl start dockyard-backup` runs: the installed command with the installed
    settings (the paths of this machine put in for the host's)."""
    settings = h["root"] / "etc/dockyard/backup.env"
    local = {"RESTIC_PASSWORD_FILE": f"{h['root']}/etc/dockyard/backup.password",
             "RESTIC_CACHE_DIR": f"{h['root']}/cache", "LOCK_FILE": f"{h['root']}/backup.lock", **overrides}
    command = (f"set -a; . {settings}; " + "".join(f"{k}={shlex.quote(v)}; " for k, v in local.items())
               + f"set +a; exec {h['root']}/usr/local/sbin/dockyard-backup")
    return subprocess.run(["sh", "-c", command], env={"PATH": f"{site['bin']}:{os.environ['PATH']}",
                                                      "LOG_DIR": str(site["tmp"])},
                          text=True, capture_output=True, timeout=120)


# systemctl and docker as a manager's: they record what they are asked; docker has no leader
# until `swarm init --force-new-cluster`
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$LOG_DIR/calls"
"""
FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >> "$LOG_DIR/calls"
# FAKE_SELF_ELECTS: the restored state's only manager is this one, which is leader once started
[ -n "${FAKE_SELF_ELECTS:-}" ] && grep -q "systemctl start" "$LOG_DIR/calls" && touch "$LOG_DIR/leader"
case "$*" in
  # inspect --type container -f FORMAT NAME: FAKE_RUNNING run, FAKE_PAUSED run paused
  "inspect "*)
    case " ${FAKE_RUNNING:-} " in *" $6 "*) state="true false" ;; *)
      case " ${FAKE_PAUSED:-} " in *" $6 "*) state="true true" ;; *) exit 1 ;; esac ;;
    esac
    case "$5" in *Running*) echo "$state" ;; *) echo "${state#* }" ;; esac ;;
  # FAKE_STOP_ON_PAUSE: the backup is stopped (SIGTERM, as systemctl stop sends) while it pauses
  "pause "*) [ -z "${FAKE_STOP_ON_PAUSE:-}" ] || kill -TERM "$PPID" ;;
  "swarm init --force-new-cluster"*)
    touch "$LOG_DIR/leader"
    [ -z "${FAKE_INIT_TIMES_OUT:-}" ] || { echo "Error response from daemon: context deadline exceeded" >&2; exit 1; } ;;
  "node ls -q") [ -f "$LOG_DIR/leader" ] && echo n0de1 ;;
  "service ls -q") [ -f "$LOG_DIR/leader" ] && printf 'svc1\nsvc2\n' ;;
esac
[ "$1 $2" != "node ls" ] || [ -f "$LOG_DIR/leader" ]
"""


def with_fakes(site) -> None:
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("docker", FAKE_DOCKER)):
        path = site["bin"] / name
        path.write_text(text)
        path.chmod(0o755)


def with_logged_restic(site) -> None:
    """restic as it is, its subcommand also written to the calls' log (to see what it ran between)."""
    real = (site["bin"] / "restic").resolve()
    (site["bin"] / "restic").unlink()
    (site["bin"] / "restic").write_text(
        '#!/bin/sh\n'
        'case " $* " in *" --tag dockyard-unfrozen "*) echo "restic $1 unfrozen" ;; *) echo "restic $1" ;; esac'
        ' >> "$LOG_DIR/calls"\n'
        # FAIL_FROZEN: the frozen snapshot fails (the unfrozen pass before it does not)
        'case " $* " in *" --tag dockyard "*) [ -z "${FAIL_FROZEN:-}" ] || exit 1 ;; esac\n'
        f'exec {real} "$@"\n')
    (site["bin"] / "restic").chmod(0o755)


def calls(site) -> list[str]:
    log = site["tmp"] / "calls"
    return log.read_text().splitlines() if log.exists() else []


def swarm_state(site) -> Path:
    """A manager's /var/lib/docker/swarm, as the engine leaves it."""
    state = site["tmp"] / "var-lib-docker" / "swarm"
    (state / "raft" / "wal-v3-encrypted").mkdir(parents=True)
    (state / "raft" / "wal-v3-encrypted" / "0000000000000000-0000000000000000.wal").write_bytes(os.urandom(50_000))
    (state / "docker-state.json").write_text('{"LocalAddr":"10.233.0.12","ListenAddr":"10.233.0.12:2377",'
                                             '"AdvertiseAddr":"10.233.0.12","DataPathAddr":"10.233.0.12"}')
    return state


def snapshots(site, name: str) -> list[dict]:
    out = subprocess.run(["restic", "snapshots", "--host", name, "--tag", "dockyard", "--json"],
                         env={"PATH": f"{site['bin']}:{os.environ['PATH']}", "RESTIC_REPOSITORY": str(site["repo"]),
                              "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(site["tmp"] / "cache")},
                         text=True, capture_output=True, check=True).stdout
    return json.loads(out)


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def fill(data: Path) -> None:
    (data / "deep" / "er").mkdir(parents=True)
    (data / "probe").write_text("written-by-b\n")
    (data / "deep" / "er" / "blob").write_bytes(os.urandom(300_000))


def test_a_host_backs_up_on_demand_and_a_new_host_gets_the_same_bytes_back(site):
    old = host(site, "old")
    fill(old["data"])
    first = setup(site, old)
    assert first.returncode == 0, first.stderr
    assert "creating the repository" in first.stderr
    ran = backup_now(site, old)
    assert ran.returncode == 0, ran.stderr
    assert len(snapshots(site, "b")) == 1

    # the stack destroyed and made again: the same host name, an empty directory
    before = tree_digest(old["data"])
    old["data"].rename(site["tmp"] / "destroyed")
    new = host(site, "new")
    new["data"].mkdir(parents=True)
    restored = setup(site, new, RESTORE="latest")
    assert restored.returncode == 0, restored.stderr
    assert "restored b's newest snapshot" in restored.stderr
    assert tree_digest(new["data"]) == before and len(before) == 2
    # a restore happens once: data written after it is never overwritten by a later run
    (new["data"] / "probe").write_text("changed after the restore\n")
    again = setup(site, new, RESTORE="latest")
    assert again.returncode == 0, again.stderr
    assert "restor" not in again.stderr and "writing" not in again.stderr, "safe to run again"
    assert (new["data"] / "probe").read_text() == "changed after the restore\n"


def test_the_password_is_only_in_a_file_only_root_reads(site):
    h = host(site, "h")
    h["data"].mkdir(parents=True)
    assert setup(site, h).returncode == 0
    password = h["root"] / "etc/dockyard/backup.password"
    assert password.read_text() == PASSWORD + "\n"
    assert oct(password.stat().st_mode & 0o777) == "0o600"
    assert oct((h["root"] / "etc/dockyard/backup.env").stat().st_mode & 0o777) == "0o600"
    for path in h["root"].rglob("*"):
        if path.is_file() and path != password:
            assert "battery" not in path.read_text(errors="replace"), path
    timer = (h["root"] / "etc/systemd/system/dockyard-backup.timer").read_text()
    assert "OnCalendar=*-*-* 02:30:00" in timer


def test_a_restore_never_writes_over_data(site):
    old = host(site, "old")
    fill(old["data"])
    assert setup(site, old).returncode == 0 and backup_now(site, old).returncode == 0
    busy = host(site, "busy")
    subprocess.run(["rm", "-rf", str(busy["data"])], check=True)
    busy["data"].mkdir(parents=True)
    (busy["data"] / "mine").write_text("kept")
    refused = setup(site, busy, RESTORE="latest")
    assert refused.returncode == 1
    assert f"{busy['data']} already holds data" in refused.stderr and "dockyard:restoreFrom" in refused.stderr
    assert [p.name for p in busy["data"].iterdir()] == ["mine"]
    assert not (busy["root"] / "var/lib/dockyard/backup-restored").exists()


def test_a_restore_without_a_snapshot_of_the_host_fails_and_says_what_to_change(site):
    h = host(site, "h")
    h["data"].mkdir(parents=True)
    assert setup(site, h).returncode == 0
    missing = setup(site, host(site, "new"), RESTORE="latest", BACKUP_HOST="c9")
    assert missing.returncode == 1
    assert "no snapshot of host c9" in missing.stderr and "unset dockyard:restoreFrom" in missing.stderr


def test_old_snapshots_are_forgotten_beyond_what_the_stack_keeps(site):
    h = host(site, "h")
    h["data"].mkdir(parents=True)
    assert setup(site, h, BACKUP_KEEP="--keep-last 2").returncode == 0
    for n in range(3):
        (h["data"] / "n").write_text(str(n))
        result = backup_now(site, h)
        assert result.returncode == 0, result.stderr
    assert len(snapshots(site, "b")) == 2


def test_a_wrong_password_is_refused_without_touching_the_repository(site):
    h = host(site, "h")
    h["data"].mkdir(parents=True)
    assert setup(site, h).returncode == 0
    wrong = setup(site, host(site, "other"), RESTIC_PASSWORD="not the password")
    assert wrong.returncode == 1
    assert "cannot open or create the restic repository" in wrong.stderr and "restic: " in wrong.stderr, \
        "restic's words"
    assert "not the password" not in wrong.stderr


def test_only_the_host_that_creates_the_repository_does_and_never_for_a_restore(site):
    h = host(site, "h")
    h["data"].mkdir(parents=True)
    waiting = setup(site, h, INIT_REPOSITORY="")
    assert waiting.returncode == 1 and "cannot open the restic repository" in waiting.stderr
    restoring = setup(site, h, RESTORE="latest")
    assert restoring.returncode == 1 and "cannot open the restic repository" in restoring.stderr
    assert not site["repo"].exists()


def test_a_restore_that_stopped_halfway_is_taken_up_by_the_next_run(site):
    old = host(site, "old")
    fill(old["data"])
    assert setup(site, old).returncode == 0 and backup_now(site, old).returncode == 0
    before = tree_digest(old["data"])
    subprocess.run(["rm", "-rf", str(old["data"])], check=True)
    new = host(site, "new")
    # what a restore cut short leaves: part of the data and its own marker
    (new["data"] / "deep").mkdir(parents=True)
    (new["data"] / "probe").write_text("writ")
    (new["root"] / "var/lib/dockyard").mkdir(parents=True)
    (new["root"] / "var/lib/dockyard/backup-restoring").touch()
    again = setup(site, new, RESTORE="latest")
    assert again.returncode == 0, again.stderr
    assert tree_digest(new["data"]) == before
    assert not (new["root"] / "var/lib/dockyard/backup-restoring").exists()


def test_remove_takes_away_the_timer_and_the_keys_and_leaves_the_data(site):
    h = host(site, "h")
    fill(h["data"])
    assert setup(site, h).returncode == 0
    removed = subprocess.run(script_command("backup.sh"), env={"PATH": os.environ["PATH"], "SYSROOT": str(h["root"]),
                                                               "SKIP_SYSTEMD": "yes", "REMOVE": "1"},
                             text=True, capture_output=True)
    assert removed.returncode == 0, removed.stderr
    assert not list(h["root"].rglob("dockyard-backup*")) and not list(h["root"].rglob("backup.*"))
    assert (h["data"] / "probe").read_text() == "written-by-b\n"


@pytest.mark.parametrize("env, message", [
    ({"BACKUP_PATHS": "relative/dir"}, "absolute"),
    ({"AWS_SECRET_ACCESS_KEY": "abc\nLD_PRELOAD=/tmp/x.so"}, "cannot hold here"),
    ({"RESTIC_REPOSITORY": "rest:http://10.0.0.5:8000/s'"}, "cannot hold here"),
    ({"BACKUP_SCHEDULE": "daily\nExecStartPre=/bin/true"}, "calendar event"),
    ({"BACKUP_PATHS": "/srv/$(reboot)"}, "plain path"),
    ({"BACKUP_KEEP": "--keep-last 2; rm -rf /"}, "BACKUP_KEEP"),
    ({"RESTORE": "yesterday"}, "RESTORE must be latest"),
    ({"RESTIC_PASSWORD": ""}, "RESTIC_PASSWORD must be set"),
])
def test_inputs_it_cannot_use_are_refused_before_anything_is_done(site, env, message):
    h = host(site, "h")
    result = setup(site, h, **env)
    assert result.returncode == 1 and message in result.stderr
    assert "LD_PRELOAD" not in result.stderr, "a key's value is never repeated"
    assert not site["repo"].exists() and not list(h["root"].rglob("*"))


# --- configuration --------------------------------------------------------------------------

def problems(**raw) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config("s", {**BASE_CONFIG, **raw}, file_exists=lambda _: True)
    return str(error.value)


def test_a_repository_needs_the_password_the_stack_keeps():
    assert "dockyard:backupPassword: the repository is encrypted" in problems(
        backupRepository="rest:http://10.0.0.5:8000/s")


def test_an_s3_repository_needs_its_keys_and_no_credential_goes_in_the_url():
    assert "dockyard:backupAccessKeyId: an s3: repository needs" in problems(
        backupRepository="s3:https://fra1.digitaloceanspaces.com/bucket/s", backupPassword=True)
    assert "in clear" in problems(backupRepository="rest:http://user:pw@10.0.0.5:8000/s", backupPassword=True)


def test_backup_keys_without_a_repository_are_named():
    text = problems(backupPassword=True, restoreFrom="latest")
    assert "dockyard:restoreFrom: has no effect without dockyard:backupRepository" in text
    assert "dockyard:backupPassword: has no effect" in text


def test_only_latest_can_be_restored_and_the_keep_periods_are_restics():
    text = problems(backupRepository="rest:http://10.0.0.5:8000/s", backupPassword=True, restoreFrom="monday",
                    backupKeep={"fortnightly": 2, "daily": 0})
    assert "only latest" in text and "unknown period 'fortnightly'" in text and "daily: 0" in text


def test_the_defaults_keep_a_week_of_days_a_month_of_weeks_and_half_a_year_of_months():
    config = parse_config("s", {**BASE_CONFIG, "backupRepository": "rest:http://10.0.0.5:8000/s",
                                "backupPassword": True}, file_exists=lambda _: True)
    assert config.backup.forget_options() == "--keep-daily 7 --keep-weekly 4 --keep-monthly 6"
    assert config.backup.restore_from is None
    assert not parse_config("s", BASE_CONFIG, file_exists=lambda _: True).backup.enabled


# --- the components, on mocks ---------------------------------------------------------------

def test_each_tier_backs_up_the_exports_it_serves_and_the_ci_data_not_the_replicas():
    medium = build_topology("medium", 2)
    paths = {h.name: data_paths(medium, h) for h in medium.hosts if data_paths(medium, h)}
    replica = next(e for e in medium.exports if e.replica_of)
    assert replica.path not in [p for ps in paths.values() for p in ps], "a replica comes back from its source"
    assert "/srv/ci" in paths[next(h.name for h in medium.hosts if h.volume == "ci")]
    default = build_topology("default", 1)
    assert {h.name: data_paths(default, h) for h in default.hosts if data_paths(default, h)} == {
        h.name: ("/srv/ci",) if h.volume == "ci" else ("/srv/nfs/data",) for h in default.hosts if h.volume}


@pytest.fixture(scope="module")
def backed_up():
    return run_program(stack="bk", tier="default", workers="1", backupRepository="s3:https://fra1.digitaloceanspaces.com/b/bk",
                       backupPassword=True, backupAccessKeyId="DO00EXAMPLEKEY", backupSecretAccessKey=True,
                       restoreFrom="latest")


def test_the_password_and_the_secret_key_reach_the_hosts_only_as_secrets(backed_up):
    commands = [r for r in backed_up.of_type("command:remote:Command") if r.name.endswith("-backup-restic")]
    assert sorted(c.name for c in commands) == sorted(f"{h.name}-backup-restic" for h in
                                                      build_topology("default", 1).hosts if h.volume)
    for command in commands:
        assert "stdin" in command.secret_inputs
        assert TEST_BACKUP_PASSWORD in command.inputs["stdin"] and TEST_BACKUP_SECRET_KEY in command.inputs["stdin"]
        create = command.inputs["create"]
        assert TEST_BACKUP_PASSWORD not in create and TEST_BACKUP_SECRET_KEY not in create
        assert "RESTORE=latest" in create and "AWS_ACCESS_KEY_ID=DO00EXAMPLEKEY" in create
        assert command.inputs["delete"] == "REMOVE=1 bash -s" and command.delete_before_replace
    assert TEST_BACKUP_PASSWORD not in str(backed_up.outputs)


def test_one_host_creates_the_repository_and_the_other_waits_for_it(backed_up):
    commands = {r.name: r for r in backed_up.of_type("command:remote:Command") if r.name.endswith("-backup-restic")}
    creators = [name for name, c in commands.items() if "INIT_REPOSITORY=yes" in c.inputs["create"]]
    assert len(creators) == 1
    for name, command in commands.items():
        if name not in creators:
            assert backed_up.depends_on(command, commands[creators[0]])


def test_the_last_manager_backs_up_the_swarm_state():
    small = run_program(stack="bks", tier="small", workers="1", backupRepository="rest:http://10.0.0.5:8000/bks",
                        backupPassword=True)
    topo = build_topology("small", 1)
    swarm = [r.name for r in small.of_type("command:remote:Command")
             if r.name.endswith("-backup-restic") and "SWARM_STATE=yes" in r.inputs["create"]]
    assert swarm == [f"{topo.managers[-1].name}-backup-restic"] and topo.managers[-1] != topo.managers[0]
    off = run_program(stack="bko", tier="small", workers="1", backupRepository="rest:http://10.0.0.5:8000/bko",
                      backupPassword=True, backupSwarmState="false")
    assert not [r for r in off.of_type("command:remote:Command") if "SWARM_STATE=yes" in r.inputs.get("create", "")]


def test_what_uses_the_data_waits_for_its_restore(backed_up):
    topo = build_topology("default", 1)
    nfs = next(h.name for h in topo.hosts if h.volume == "nfs")
    ci = next(h.name for h in topo.hosts if h.volume == "ci")
    assert backed_up.depends_on(backed_up.named(f"{nfs}-nfs-exports"), backed_up.named(f"{nfs}-backup-restic"))
    registry = next(r for r in backed_up.of_type("docker:index/container:Container") if "registry" in r.name)
    assert backed_up.depends_on(registry, backed_up.named(f"{ci}-backup-restic"))
    # and the restore waits for the host's engine and volume
    assert backed_up.depends_on(backed_up.named(f"{nfs}-backup-restic"), backed_up.named(f"{nfs}-docker"))


def test_gitea_and_drone_are_paused_for_the_ci_hosts_backup_and_wait_for_its_restore():
    ci_stack = run_program(stack="bkci", tier="default", workers="1", backupRepository="rest:http://10.0.0.5:8000/c",
                           backupPassword=True, restoreFrom="latest", ciServices=["registry", "gitea", "drone"])
    topo = build_topology("default", 1)
    ci = next(h.name for h in topo.hosts if h.volume == "ci")
    nfs = next(h.name for h in topo.hosts if h.volume == "nfs")
    pause = {}
    for name in (ci, nfs):
        words = shlex.split(ci_stack.named(f"{name}-backup-restic").inputs["create"])
        pause[name] = next(w.split("=", 1)[1] for w in words if w.startswith("BACKUP_PAUSE="))
    assert pause == {ci: "gitea drone", nfs: ""}
    restore = ci_stack.named(f"{ci}-backup-restic")
    for container in ci_stack.of_type("docker:index/container:Container"):
        if container.name.endswith(("-gitea", "-drone", "-drone-runner")):
            assert ci_stack.depends_on(container, restore), container.name


def test_a_stack_without_a_repository_makes_no_backup():
    plain = run_program(stack="nobk", tier="default", workers="1")
    assert not [r for r in plain.registrations if "backup" in r.name]


# --- Gitea and Drone, frozen while their data is read --------------------------------------

def ci_host(site) -> dict:
    with_fakes(site)
    ci = host(site, "ci")
    fill(ci["data"])
    assert setup(site, ci, BACKUP_PAUSE="gitea drone").returncode == 0
    with_logged_restic(site)
    (site["bin"] / "sleep").write_text("#!/bin/sh\n")  # the retries' pauses
    (site["bin"] / "sleep").chmod(0o755)
    return ci


def pauses(site) -> list[str]:
    return [c for c in calls(site) if c.startswith(("docker pause", "docker unpause", "restic"))]


def test_the_running_ci_containers_are_paused_only_for_a_read_of_what_changed(site):
    ci = ci_host(site)
    assert 'BACKUP_PAUSE="gitea drone"' in (ci["root"] / "etc/dockyard/backup.env").read_text()
    ran = backup_now(site, ci, FAKE_RUNNING="gitea")
    assert ran.returncode == 0, ran.stderr
    # the bulk read unfrozen, then the frozen snapshot (drone is not running: nothing to
    # pause, nothing started that was stopped), then the unfrozen pass forgotten
    assert pauses(site) == ["restic backup unfrozen", "docker pause gitea", "restic backup", "docker unpause gitea",
                            "restic forget", "restic forget unfrozen"]
    assert "paused gitea while their data is read" in ran.stdout
    latest = snapshots(site, "b")
    assert [s["tags"] for s in latest] == [["dockyard"]], "a restore finds the frozen snapshot"
    assert latest[0]["parent"], "the frozen snapshot reads only what changed since the unfrozen one"


def test_a_backup_that_fails_leaves_nothing_paused(site):
    ci = ci_host(site)
    ran = backup_now(site, ci, FAKE_RUNNING="gitea drone", FAIL_FROZEN="1")
    assert ran.returncode != 0
    asked = [c for c in calls(site) if c.startswith(("docker pause", "docker unpause"))]
    # each attempt freezes and thaws; the waits between attempts are not spent frozen
    assert asked == ["docker pause gitea", "docker pause drone", "docker unpause gitea", "docker unpause drone"] * 8


def test_a_backup_stopped_while_it_pauses_thaws_what_it_paused(site):
    ci = ci_host(site)
    ran = backup_now(site, ci, FAKE_RUNNING="gitea drone", FAKE_STOP_ON_PAUSE="1")
    assert ran.returncode != 0
    # stopped during `docker pause gitea`: gitea may be paused by then, so it is unpaused
    assert [c for c in calls(site) if c.startswith(("docker pause", "docker unpause"))] == [
        "docker pause gitea", "docker unpause gitea"]


def test_a_container_a_stopped_backup_left_paused_runs_again_at_the_next(site):
    ci = ci_host(site)
    ran = backup_now(site, ci, FAKE_RUNNING="gitea", FAKE_PAUSED="drone")
    assert ran.returncode == 0, ran.stderr
    assert calls(site).index("docker unpause drone") < calls(site).index("restic backup unfrozen")
    assert "left paused by a backup that was stopped" in ran.stderr


def test_one_backup_of_a_host_at_a_time(site):
    ci = ci_host(site)
    lock = ci["root"] / "backup.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        for _ in range(50):
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
            time.sleep(0.1)
        ran = backup_now(site, ci, FAKE_RUNNING="gitea drone")
    finally:
        holder.kill()
    assert ran.returncode != 0 and "another backup of this host is running" in ran.stderr
    assert not [c for c in calls(site) if c.startswith(("docker pause", "restic"))]


def test_a_container_name_that_is_not_one_is_refused(site):
    refused = setup(site, host(site, "ci"), BACKUP_PAUSE="gitea $(reboot)")
    assert refused.returncode != 0 and "BACKUP_PAUSE must be container names" in refused.stderr


# --- the swarm's Raft state -----------------------------------------------------------------

def test_the_swarm_state_is_copied_with_the_engine_stopped_and_never_restored_with_the_data(site):
    with_fakes(site)
    manager = host(site, "manager")
    fill(manager["data"])
    state = swarm_state(site)
    assert setup(site, manager, SWARM_STATE="yes").returncode == 0
    ran = backup_now(site, manager, SWARM_DIR=str(state))
    assert ran.returncode == 0, ran.stderr
    assert "backed up the swarm's state" in ran.stdout
    asked = calls(site)
    assert asked == ["systemctl stop docker.socket docker.service", "systemctl start docker.service"]
    tagged = {tuple(s["tags"]): s["paths"] for s in snapshots(site, "b")} | {
        tuple(s["tags"]): s["paths"] for s in json.loads(subprocess.run(
            ["restic", "snapshots", "--host", "b", "--tag", "dockyard-swarm", "--json"], check=True, text=True,
            capture_output=True, env={"PATH": f"{site['bin']}:{os.environ['PATH']}",
                                      "RESTIC_REPOSITORY": str(site["repo"]), "RESTIC_PASSWORD": PASSWORD,
                                      "RESTIC_CACHE_DIR": str(site["tmp"] / "cache")}).stdout)}
    assert tagged == {("dockyard",): [str(manager["data"])], ("dockyard-swarm",): [str(state)]}
    # a new host that restores its data gets the data, not the old swarm
    subprocess.run(["rm", "-rf", str(manager["data"]), str(state)], check=True)
    manager["data"].mkdir(parents=True)
    restored = setup(site, host(site, "new"), SWARM_STATE="yes", RESTORE="latest")
    assert restored.returncode == 0, restored.stderr
    assert (manager["data"] / "probe").exists() and not state.exists()


def test_the_engine_is_started_again_when_the_copy_fails(site):
    with_fakes(site)
    manager = host(site, "manager")
    state = swarm_state(site)
    assert setup(site, manager, SWARM_STATE="yes", BACKUP_PATHS="").returncode == 0
    (site["bin"] / "sleep").write_text("#!/bin/sh\n")  # the retries' pauses
    (site["bin"] / "sleep").chmod(0o755)
    subprocess.run(["rm", "-rf", str(site["repo"])], check=True)
    ran = backup_now(site, manager, SWARM_DIR=str(state))
    assert ran.returncode != 0
    assert calls(site)[-1] == "systemctl start docker.service"


def recover(site, h, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(script_command("swarm-recover.sh"),
                          env={"PATH": f"{site['bin']}:{os.environ['PATH']}", "LOG_DIR": str(site["tmp"]),
                               "SYSROOT": str(h["root"]), "SETTLE_SECONDS": "0", **env},
                          text=True, capture_output=True, timeout=120)


def recovering_manager(site) -> tuple[dict, Path, dict[str, str]]:
    """A manager that backed up its swarm state, its settings as they would be on the host."""
    with_fakes(site)
    manager = host(site, "manager")
    state = swarm_state(site)
    assert setup(site, manager, SWARM_STATE="yes", BACKUP_PATHS="").returncode == 0
    assert backup_now(site, manager, SWARM_DIR=str(state)).returncode == 0
    settings = manager["root"] / "etc/dockyard/backup.env"
    text = settings.read_text().replace("SWARM_DIR=/var/lib/docker/swarm", f"SWARM_DIR={state}")
    text = text.replace("/etc/dockyard/backup.password", f"{manager['root']}/etc/dockyard/backup.password")
    settings.write_text(text.replace("/var/cache/dockyard-restic", str(site["tmp"] / "cache")))
    (site["tmp"] / "calls").unlink()
    return manager, state, tree_digest(state)


def test_a_swarm_whose_manager_lost_its_state_is_recovered_from_the_raft_backup(site):
    manager, state, backed_up = recovering_manager(site)
    # the engine lost its swarm: a new, empty state where the old one was
    subprocess.run(["rm", "-rf", str(state)], check=True)
    (state / "worker").mkdir(parents=True)
    (state / "worker" / "tasks.db").write_text("what the engine had after the loss")
    result = recover(site, manager)
    assert result.returncode == 0, result.stderr
    assert tree_digest(state) == backed_up
    aside = [p for p in state.parent.iterdir() if p.name.startswith("swarm.before-recovery-")]
    assert len(aside) == 1 and (aside[0] / "worker" / "tasks.db").exists(), "what the engine had is kept"
    asked = calls(site)
    assert asked[:3] == ["docker node ls -q", "systemctl stop docker.socket docker.service",
                         "systemctl start docker.service"]
    # no leader came back by itself: a new cluster is forced at the restored state's address
    assert asked.count("docker swarm init --force-new-cluster --advertise-addr 10.233.0.12") == 1
    assert asked[-1] == "systemctl start docker.service"  # on its way out, whatever happened
    assert "recovered in" in result.stderr and "2 service(s)" in result.stderr


def test_a_restored_state_that_elects_its_only_manager_needs_no_forced_cluster(site):
    """The real engine's run: the single manager's restored state came back by itself, and a
    forced `swarm init` timed out against it."""
    manager, state, backed_up = recovering_manager(site)
    subprocess.run(["rm", "-rf", str(state)], check=True)
    result = recover(site, manager, FAKE_SELF_ELECTS="1", SETTLE_SECONDS="10")
    assert result.returncode == 0, result.stderr
    assert tree_digest(state) == backed_up
    assert not [c for c in calls(site) if "swarm init" in c]


def test_a_forced_cluster_that_does_not_answer_in_time_still_recovers_once_a_leader_is_there(site):
    manager, state, _ = recovering_manager(site)
    result = recover(site, manager, FAKE_INIT_TIMES_OUT="1")
    assert result.returncode == 0, result.stderr
    assert "did not answer in time" in result.stderr and "recovered in" in result.stderr


def test_a_manager_that_reaches_its_leader_is_left_alone(site):
    manager, state, backed_up = recovering_manager(site)
    (site["tmp"] / "leader").touch()
    result = recover(site, manager)
    assert result.returncode == 0 and "nothing to recover" in result.stderr
    assert calls(site) == ["docker node ls -q"]


def test_a_recovery_where_backups_are_off_says_where_to_run_it(site):
    with_fakes(site)
    result = recover(site, host(site, "w1"))
    assert result.returncode == 1 and "backups are off" in result.stderr
