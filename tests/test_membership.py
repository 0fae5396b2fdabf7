"""swarm-membership.sh (run on the operator's machine) finds a manager that can act and
hands it the removal; swarm-remove-node.sh tells it when this manager cannot act. Both run
here for real, against stand-ins for `ssh` and `docker` on PATH that answer as a host
would and record what they were asked."""
import os
import subprocess
from pathlib import Path

import pytest

from components.shell import script_text
from tests.harness import script_command

DRIVER = "swarm-membership.sh"
REMOVAL = "swarm-remove-node.sh"

# ssh -F CONFIG ALIAS COMMAND: records the call and its stdin, then exits as ANSWER_<alias> says
FAKE_SSH = """#!/usr/bin/env bash
[ "$1" = -F ] || exit 99
config=$2 alias=$3 command=$4
cp "$config" "$LOG_DIR/config"
stdin=$(cat)
{ echo "alias=$alias"; echo "command=$command"; echo "stdin=${#stdin}"; } >> "$LOG_DIR/calls"
printf '%s' "$stdin" > "$LOG_DIR/stdin-$alias"
key="ANSWER_${alias//-/_}"
answer=${!key:-255}
[ "$answer" = 0 ] && echo "${NODE_ID}"
[ "$answer" = 255 ] && echo "ssh: connect to host $alias port 22: No route to host" >&2
exit "$answer"
"""

# docker as a manager sees it; FAKE_* say what kind of manager
FAKE_DOCKER = """#!/usr/bin/env bash
echo "docker $*" >> "$LOG_DIR/docker.log"
case "$*" in
  "info --format {{.Swarm.ControlAvailable}}") echo "${FAKE_CONTROL:-true}" ;;
  "info --format {{.Swarm.NodeID}}") echo "${FAKE_SELF:-self}" ;;
  "node ls -q") exit "${FAKE_LS_RC:-0}" ;;
  "node inspect "*) [ "${FAKE_KNOWN:-yes}" = yes ] || exit 1 ;;
  "service ls -q" | "service ls -q --filter mode=replicated")
    [ -z "${FAKE_STARTING:-}${FAKE_SHORT:-}" ] || echo svc1 ;;
  "service inspect --format {{.Spec.Mode.Replicated.Replicas}} svc1") echo 2 ;;
  "service ps "*)
    # svc1 has 2 replicas, one of them was on the node: for the first FAKE_SHORT asks its
    # replacement does not exist yet, for the next FAKE_STARTING asks it is starting
    asked=$(( $(cat "$LOG_DIR/service-ps" 2>/dev/null || echo 0) + 1 )); echo "$asked" > "$LOG_DIR/service-ps"
    echo "Running 5 minutes ago"
    if [ "$asked" -le "${FAKE_SHORT:-0}" ]; then :
    elif [ "$asked" -le $(( ${FAKE_SHORT:-0} + ${FAKE_STARTING:-0} )) ]; then echo "Starting 2 seconds ago"
    else echo "Running 1 second ago"; fi ;;
  *) exit 0 ;;
esac
"""

SSH_CONFIG = "Host dockyard-s-c1\n  HostName 10.0.0.1\nHost *\n  ConnectTimeout 10\n"


@pytest.fixture
def bin_dir(tmp_path):
    for name, text in (("ssh", FAKE_SSH), ("docker", FAKE_DOCKER)):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def run(script: str, bin_dir: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG_DIR": str(bin_dir), **env}
    return subprocess.run(script_command(script, *args), input=stdin, env=full, text=True,
                          capture_output=True, timeout=60)


def calls(bin_dir: Path) -> list[dict]:
    log = bin_dir / "calls"
    if not log.exists():
        return []
    entries, current = [], {}
    for line in log.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "alias" and current:
            entries.append(current)
            current = {}
        current[key] = value
    return entries + ([current] if current else [])


def driver(bin_dir, action, stdin="", **answers):
    """answers: how each manager's ssh exits (lower-case aliases); upper-case names are the
    script's own inputs."""
    env = {"NODE_ID": "n0de1d", "MANAGERS": "dockyard-s-c1 dockyard-s-c2 dockyard-s-c3", "SSH_CONFIG": SSH_CONFIG,
           "ROUND_PAUSE": "0"}
    env.update({(k if k.isupper() else f"ANSWER_{k}"): str(v) for k, v in answers.items()})
    return run(DRIVER, bin_dir, action, stdin=stdin, **env)


def test_check_skips_a_manager_that_cannot_be_reached(bin_dir):
    result = driver(bin_dir, "check", dockyard_s_c1=255, dockyard_s_c2=0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "n0de1d"
    assert [c["alias"] for c in calls(bin_dir)] == ["dockyard-s-c1", "dockyard-s-c2"], "in order, then stop"
    assert "cannot reach manager dockyard-s-c1" in result.stderr
    assert (bin_dir / "config").read_text() == SSH_CONFIG + "\n", "ssh uses the stack's ssh_config"


def test_check_fails_when_no_manager_answers_round_after_round(bin_dir):
    result = driver(bin_dir, "check", CHECK_ROUNDS=3, ROUND_PAUSE=0)
    assert result.returncode == 1
    assert "no manager of dockyard-s-c1 dockyard-s-c2 dockyard-s-c3 answers" in result.stderr
    assert len(calls(bin_dir)) == 9, "3 rounds of 3 managers"
    assert "round 3 of 3" in result.stderr


def test_check_waits_for_a_manager_that_answers_late(bin_dir):
    # the real engine's first e2e up: the only manager, busy loading images, missed ssh's
    # 10 s banner exchange once ("Connection timed out during banner exchange")
    late = bin_dir / "ssh"
    late.write_text(FAKE_SSH.replace('answer=${!key:-255}',
                                     'answer=${!key:-255}\n[ "$(grep -c alias= "$LOG_DIR/calls")" -lt 3 ] && answer=255'))
    result = driver(bin_dir, "check", CHECK_ROUNDS=3, ROUND_PAUSE=0, dockyard_s_c1=0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "n0de1d"
    assert [c["alias"] for c in calls(bin_dir)] == ["dockyard-s-c1", "dockyard-s-c2", "dockyard-s-c3",
                                                    "dockyard-s-c1"]


def test_remove_hands_the_removal_to_the_first_manager_that_can_act(bin_dir):
    removal = script_text(REMOVAL)  # what the membership gives the driver on stdin (manager.py)
    result = driver(bin_dir, "remove", stdin=removal, dockyard_s_c1=255, dockyard_s_c2=3, dockyard_s_c3=0)
    assert result.returncode == 0, result.stderr
    tried = calls(bin_dir)
    assert [c["alias"] for c in tried] == ["dockyard-s-c1", "dockyard-s-c2", "dockyard-s-c3"]
    assert tried[-1]["command"] == "NODE_ID=n0de1d DRAIN_TIMEOUT=120 bash -s"
    assert (bin_dir / "stdin-dockyard-s-c3").read_text().strip() == removal.strip(), \
        "each attempt gets the whole removal script, not what an earlier one left of stdin"
    assert "manager dockyard-s-c2 cannot act for the swarm" in result.stderr


def test_remove_succeeds_with_a_warning_when_no_manager_answers(bin_dir):
    result = driver(bin_dir, "remove", stdin=script_text(REMOVAL), ROUND_PAUSE=100)
    assert result.returncode == 0, "a destroy whose managers are dead must finish"
    assert len(calls(bin_dir)) == 3, "in one round: it does not wait for dead managers"
    assert "was not removed from the swarm" in result.stderr
    assert "docker node rm --force n0de1d" in result.stderr, "it says what to do if the swarm lives on"


def test_remove_stops_at_a_manager_that_refuses(bin_dir):
    # e.g. the demotion would leave no majority: another manager would refuse too, and
    # removing the host anyway is what the refusal is there to stop
    result = driver(bin_dir, "remove", stdin=script_text(REMOVAL), dockyard_s_c1=1, dockyard_s_c2=0)
    assert result.returncode == 1
    assert [c["alias"] for c in calls(bin_dir)] == ["dockyard-s-c1"]
    assert "remove of node n0de1d on manager dockyard-s-c1 failed (exit 1)" in result.stderr


def test_remove_needs_the_removal_on_stdin(bin_dir):
    result = driver(bin_dir, "remove", stdin="", dockyard_s_c1=0)
    assert result.returncode == 1 and "must come on stdin" in result.stderr
    assert calls(bin_dir) == []


@pytest.mark.parametrize("node_id", ["abc; reboot", "$(id)", "a b"])
def test_a_node_id_that_is_not_one_is_refused_before_any_ssh(bin_dir, node_id):
    result = run(DRIVER, bin_dir, "check", NODE_ID=node_id, MANAGERS="dockyard-s-c1", SSH_CONFIG=SSH_CONFIG)
    assert result.returncode == 1 and "is not a swarm node ID" in result.stderr
    assert calls(bin_dir) == []


@pytest.mark.parametrize("fake, reason", [
    ({"FAKE_CONTROL": "false"}, "this host is not a swarm manager"),
    ({"FAKE_LS_RC": "1"}, "this manager has no leader in reach"),
    ({"FAKE_SELF": "n0de1d"}, "a manager cannot remove itself"),
])
def test_the_removal_exits_3_where_this_manager_cannot_act(bin_dir, fake, reason):
    result = run(REMOVAL, bin_dir, NODE_ID="n0de1d", **fake)
    assert result.returncode == 3, result.stderr
    assert reason in result.stderr
    assert "node rm" not in (bin_dir / "docker.log").read_text()


def test_the_removal_drains_then_removes_a_worker(bin_dir):
    result = run(REMOVAL, bin_dir, NODE_ID="n0de1d", DRAIN_TIMEOUT="5")
    assert result.returncode == 0, result.stderr
    asked = (bin_dir / "docker.log").read_text().splitlines()
    drain = asked.index("docker node update --availability drain n0de1d")
    assert asked.index("docker node rm --force n0de1d") > drain


def removal_rounds(bin_dir) -> tuple[list[int], list[str]]:
    asked = (bin_dir / "docker.log").read_text().splitlines()
    return [i for i, line in enumerate(asked) if line.startswith("docker service ps")], asked


def test_the_removal_waits_until_the_nodes_replicas_run_elsewhere(bin_dir):
    """Both replicas of a service on the leaving node: it leaves once their replacements run,
    so that the service is not left with none."""
    result = run(REMOVAL, bin_dir, NODE_ID="n0de1d", DRAIN_TIMEOUT="60", FAKE_STARTING="1")
    assert result.returncode == 0, result.stderr
    checks, asked = removal_rounds(bin_dir)
    assert len(checks) == 3, "asked again while the replacement was starting, then once for every service"
    assert asked.index("docker node rm --force n0de1d") > checks[-1]
    assert "warning" not in result.stderr


def test_the_removal_waits_while_the_nodes_replicas_have_no_replacement_yet(bin_dir):
    """Just after the drain the node's tasks are stopped and no replacement exists: no task is
    "starting" either (and the swarm's own count still counts the stopping task: the real
    engine's run), so only the count of tasks meant to run and running shows the service is
    short."""
    result = run(REMOVAL, bin_dir, NODE_ID="n0de1d", DRAIN_TIMEOUT="60", FAKE_SHORT="2", FAKE_STARTING="1")
    assert result.returncode == 0, result.stderr
    checks, asked = removal_rounds(bin_dir)
    assert len(checks) == 5, "2 rounds without the replacement, 1 with it starting, then all running"
    assert asked.index("docker node rm --force n0de1d") > checks[-1]
    assert "warning" not in result.stderr


def test_the_removal_leaves_a_node_that_is_gone_alone(bin_dir):
    result = run(REMOVAL, bin_dir, NODE_ID="n0de1d", FAKE_KNOWN="no")
    assert result.returncode == 0
    assert "not in the swarm any more" in result.stderr
    assert "node rm" not in (bin_dir / "docker.log").read_text()
