"""Bad configuration fails before any resource, with a message naming the key."""
import json

import pytest

from components.config import ConfigError, parse_config

GOOD = {
    "tier": "small",
    "cloud": "digitalocean",
    "workers": "2",
    "adminCidrs": ["203.0.113.7/32"],
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey user@host",
    "sshPrivateKeyPath": "/keys/id_ed25519",
}


def parse(**changes):
    raw = {**GOOD, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    return parse_config("test", raw, file_exists=lambda path: path == "/keys/id_ed25519")


def error_of(**changes) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**changes)
    return str(info.value)


def test_good_config_parses():
    config = parse()
    assert (config.tier, config.cloud, config.workers, config.managers) == ("small", "digitalocean", 2, 3)
    assert config.admin_cidrs == ("203.0.113.7/32",)
    # 80 and 443 are the ingress's, on the managers; the routing mesh publishes nothing by default
    assert config.platform.services == ("ingress", "panel", "monitoring", "dashboards") and config.public_ports == ()
    assert config.disposable is False


def test_unknown_tier():
    message = error_of(tier="huge")
    assert "dockyard:tier" in message and "minimal, default, small, medium" in message


@pytest.mark.parametrize("workers", ["-1", "two"])
def test_bad_worker_count(workers):
    assert "dockyard:workers" in error_of(workers=workers)


@pytest.mark.parametrize("cidr,hint", [("10.0.0.1/24", "did you mean 10.0.0.0/24"),
                                       ("not-a-cidr", "not a CIDR"),
                                       ("0.0.0.0/0", "whole internet")])
def test_bad_admin_cidr(cidr, hint):
    message = error_of(adminCidrs=[cidr])
    assert "dockyard:adminCidrs" in message and hint in message


def test_admin_cidrs_are_required_on_digitalocean():
    assert "dockyard:adminCidrs" in error_of(adminCidrs=None)


@pytest.mark.parametrize("managers", ["2", "4", "9", "0"])
def test_even_or_too_many_managers(managers):
    message = error_of(managers=managers)
    assert "dockyard:managers" in message and "odd" in message


def test_manager_count_fixed_in_default_tier():
    message = error_of(tier="default", managers="3")
    assert "dockyard:managers" in message and "tier default always has 1 manager" in message


def test_odd_manager_count_accepted_in_medium():
    assert parse(tier="medium", managers="5").managers == 5


def test_missing_private_key_file():
    message = error_of(sshPrivateKeyPath="/keys/missing")
    assert "dockyard:sshPrivateKeyPath" in message and "no file at /keys/missing" in message


def test_private_key_in_config_needs_no_file():
    config = parse(sshPrivateKeyPath=None, sshPrivateKey=True)
    assert config.ssh.private_key_in_config


def test_ssh_public_key_or_key_id_required():
    assert "dockyard:sshPublicKey" in error_of(sshPublicKey=None)
    assert parse(sshPublicKey=None, sshKeyId="12345").ssh.key_id == "12345"


def test_control_ports_cannot_be_published():
    message = error_of(publicPorts=["8080", "2377"])
    assert "dockyard:publicPorts" in message and "2377" in message


def test_bad_vpc_cidr():
    assert "dockyard:vpcCidr" in error_of(vpcCidr="8.8.8.0/24")


def test_every_problem_is_reported_at_once():
    message = error_of(tier="huge", workers="-3", adminCidrs=["1.2.3.4/8"])
    assert all(key in message for key in ("dockyard:tier", "dockyard:workers", "dockyard:adminCidrs"))


def test_unknown_size_role():
    assert "unknown role 'database'" in error_of(sizes={"database": "s-1vcpu-1gb"})


@pytest.mark.parametrize("user", ["ubuntu", "root", "_svc", "deploy-user", "a" * 32])
def test_ssh_user_accepts_posix_user_names(user):
    assert parse(sshUser=user).ssh.user == user


@pytest.mark.parametrize("user", ["root\n  ProxyCommand sh -c 'touch /tmp/pwned'", "root ProxyCommand=x",
                                  "Root", "-oProxyCommand=x", "9lives", "ubuntu@host", "a" * 33, "r\"oot",
                                  "ro%ot", " root", "root\r"])
def test_ssh_user_must_be_a_posix_user_name(user):
    message = error_of(sshUser=user)
    assert "dockyard:sshUser" in message and "POSIX user name" in message
    assert "pulumi config set dockyard:sshUser" in message, "it says what to change"


@pytest.mark.parametrize("path", ["/keys/id\nProxyCommand x", "/keys/\"id", "/keys/id\t", "/keys\\id"])
def test_private_key_path_cannot_break_out_of_ssh_config(path):
    message = parse_with_any_file(sshPrivateKeyPath=path)
    assert "dockyard:sshPrivateKeyPath" in message and "ssh_config" in message


def test_private_key_path_may_have_spaces():
    config = parse_config("test", {**GOOD, "sshPrivateKeyPath": "/home/me/my keys/id"}, file_exists=lambda p: True)
    assert config.ssh.private_key_path == "/home/me/my keys/id"


def parse_with_any_file(**changes) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config("test", {**GOOD, **changes}, file_exists=lambda path: True)
    return str(info.value)


@pytest.mark.parametrize("typo,meant", [("wokers", "workers"), ("sshuser", "sshUser"), ("adminCidr", "adminCidrs"),
                                        ("tiers", "tier"), ("SSHPrivateKeyPath", "sshPrivateKeyPath"),
                                        ("allowManagerMajorityLos", "allowManagerMajorityLoss")])
def test_an_unknown_key_is_an_error_naming_the_closest_key(typo, meant):
    message = error_of(**{typo: "3"})
    assert f"dockyard:{typo}: unknown key" in message
    assert f"did you mean dockyard:{meant}?" in message
    assert f"pulumi config rm dockyard:{typo}" in message, "it says what to change"


def test_an_unknown_key_with_no_close_match_lists_the_keys():
    message = error_of(flavour="vanilla")
    assert "dockyard:flavour: unknown key" in message and "did you mean" not in message
    assert "workers" in message and "sshUser" in message


def test_every_known_key_is_accepted_as_a_key():
    from components.config import KNOWN_KEYS, unknown_key_problems
    assert unknown_key_problems(KNOWN_KEYS) == []
    assert "sshPrivateKey" in KNOWN_KEYS, "the secret key is set with `pulumi config set --secret`"


def test_the_stack_keys_reach_the_check(monkeypatch):
    """The program reads the stack's keys from the runtime's config (what the language host
    hands it in PULUMI_CONFIG), since pulumi.Config cannot list them."""
    import pulumi

    from components.config import configured_keys, read_raw_config
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"dockyard:tier": "small", "dockyard:wokers": "3",
                                                    "digitalocean:token": "x"}))
    pulumi.runtime.set_all_config({"dockyard:tier": "small", "dockyard:wokers": "3",
                                   "dockyard:sshPrivateKeyPath": "/keys/id_ed25519"})
    try:
        assert configured_keys() == ["sshPrivateKeyPath", "tier", "wokers"]
        raw = read_raw_config(pulumi.Config("dockyard"))
    finally:
        pulumi.runtime.set_all_config({})
    assert raw["tier"] == "small" and "wokers" in raw
    with pytest.raises(ConfigError) as info:
        parse_config("test", raw, file_exists=lambda path: True)
    assert "dockyard:wokers: unknown key" in str(info.value)


@pytest.mark.parametrize("cidr,clash", [("172.17.0.0/20", "docker0"), ("172.18.4.0/24", "docker_gwbridge"),
                                        ("10.0.0.0/16", "ingress")])
def test_a_vpc_that_overlaps_dockers_own_networks_is_refused(cidr, clash):
    message = error_of(vpcCidr=cidr)
    assert "dockyard:vpcCidr" in message and clash in message


@pytest.mark.parametrize("nfs,hint", [
    ({"exportRoot": "/etc/exports-data"}, "is in /etc"),
    ({"exportRoot": "/var/lib/docker/volumes"}, "is in /var/lib/docker"),
    ({"mountRoot": "/"}, "absolute path"),
    ({"mountRoot": "/var"}, "contains /var/lib/docker"),
    ({"exportRoot": "/srv/ci/nfs"}, "is in /srv/ci"),
    ({"exportRoot": "/srv/data/../../etc"}, "'..'"),
    ({"exportRoot": "/data", "mountRoot": "/data/mnt"}, "must not contain each other"),
])
def test_nfs_paths_that_would_break_a_host_are_refused(nfs, hint):
    message = error_of(nfs=nfs)
    assert "dockyard:nfs" in message and hint in message


def test_own_nfs_directories_are_fine():
    config = parse(nfs={"exportRoot": "/data/exports", "mountRoot": "/mnt/shared"})
    assert (config.nfs.export_root, config.nfs.mount_root) == ("/data/exports", "/mnt/shared")


@pytest.mark.parametrize("key,value,hint", [
    ("pruneAfter", "7d", "number of hours such as 168h"),
    ("pruneAfter", "168", "number of hours"),
    ("pruneSchedule", "daily\nExecStart=/bin/evil", "systemd calendar event"),
    ("pruneSchedule", "'03:00'", "systemd calendar event"),
])
def test_bad_prune_settings(key, value, hint):
    message = error_of(**{key: value})
    assert f"dockyard:{key}" in message and hint in message


@pytest.mark.parametrize("value", ["5", "1m", "0s", "5s; reboot"])
def test_a_heartbeat_that_is_not_seconds_is_refused(value):
    message = error_of(swarmHeartbeat=value)
    assert "dockyard:swarmHeartbeat" in message and "number of seconds" in message


def test_the_heartbeat_is_dockers_but_slower_on_local_vms():
    assert parse().swarm_heartbeat == "5s"
    assert parse_config("l", {"cloud": "local"}).swarm_heartbeat == "20s"
    assert parse(swarmHeartbeat="10s").swarm_heartbeat == "10s"


def test_prune_defaults_to_nightly_for_week_old_leftovers():
    config = parse()
    assert (config.prune_schedule, config.prune_after) == ("*-*-* 03:30:00", "168h")


def test_a_preload_that_is_not_a_docker_archive_is_refused_before_anything_is_made(tmp_path):
    from tests.harness import docker_archive

    not_an_archive = tmp_path / "web.tar"
    not_an_archive.write_text("hello")
    with pytest.raises(ConfigError) as info:
        parse_config("test", {**GOOD, "preloadImages": [str(not_an_archive)]}, file_exists=lambda path: True)
    assert "dockyard:preloadImages" in str(info.value) and "is not a docker-archive" in str(info.value)
    good = docker_archive(tmp_path / "good.tar", "b" * 64)
    config = parse_config("test", {**GOOD, "preloadImages": [str(good)]}, file_exists=lambda path: True)
    assert config.preload_image_ids == ("sha256:" + "b" * 64,)


def test_autolock_and_the_nightly_raft_backup_cannot_go_together():
    base = {"cloud": "local", "tier": "small", "workers": "1", "swarmAutolock": "true",
            "backupRepository": "rest:http://10.0.0.1:8000/x", "backupPassword": True}
    with pytest.raises(ConfigError, match="dockyard:swarmAutolock: .*backupSwarmState false"):
        parse_config("locked", base)
    config = parse_config("locked", {**base, "backupSwarmState": "false"})
    assert config.swarm_autolock is True and config.backup.swarm_state is False
    assert parse_config("plain", {"cloud": "local"}).swarm_autolock is False


def test_the_data_path_is_encrypted_by_default_on_its_own_network():
    assert parse().data_path_cidr == "100.90.0.0/16"
    assert parse(dataPathCidr="100.64.0.0/12").data_path_cidr == "100.64.0.0/12"
    assert parse(encryptDataPath="false").data_path_cidr is None


@pytest.mark.parametrize("changes,hint", [
    ({"dataPathCidr": "100.90.0.0/24"}, "smaller than the VPC 10.210.0.0/20"),
    ({"dataPathCidr": "10.210.0.0/16"}, "overlaps 10.210.0.0/20, the stack's VPC"),
    ({"dataPathCidr": "10.0.0.0/16"}, "overlaps 10.0.0.0/24, the swarm's ingress network"),
    ({"dataPathCidr": "172.16.0.0/12"}, "overlaps 172.17.0.0/16"),
    ({"dataPathCidr": "8.8.0.0/16"}, "must be a private (RFC 1918) or shared"),
    ({"dataPathCidr": "0.0.0.0/8"}, "must be a private (RFC 1918) or shared"),
    ({"dataPathCidr": "240.0.0.0/8"}, "must be a private (RFC 1918) or shared"),
    ({"dataPathCidr": "100.90.0.1/16"}, "dockyard:dataPathCidr"),
    ({"encryptDataPath": "false", "dataPathCidr": "100.90.0.0/16"}, "only with dockyard:encryptDataPath true"),
    ({"encryptDataPath": "maybe"}, "dockyard:encryptDataPath"),
])
def test_a_data_path_network_that_cannot_work_is_refused(changes, hint):
    message = error_of(**changes)
    assert hint in message and "dockyard:" in message
