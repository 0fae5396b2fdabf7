"""Monitoring and alerting (issue 16): the configuration files checked by the tools that read
them (promtool, amtool, from Debian's packages), the alert rules run on synthetic series
(`promtool test rules`), swarm-metrics.sh run on stand-ins, and the services on mocks."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import yaml

from components.ingress import METRICS_PORT as TRAEFIK_METRICS_PORT, NETWORK as INGRESS_NETWORK
from components.monitoring import NETWORK, RULES_FILE, alertmanager_config, prometheus_config
from components.topology import build_topology
from tests.harness import run_program
from tests.test_host_scripts import run, sandbox

CACHE = Path(os.environ.get("DOCKYARD_CACHE_DIR", Path.home() / ".cache" / "dockyard")) / "test-tools"
SERVICE = "docker:index/service:Service"


def debian_tool(package: str, path: str) -> Path:
    """A tool out of a Debian package (apt-get download), cached."""
    target = CACHE / Path(path).name
    if not target.exists():
        from localcloud.images import deb_file
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(deb_file(package, path))
        partial.chmod(0o755)
        partial.rename(target)
    return target


@pytest.fixture(scope="module")
def promtool() -> Path:
    return debian_tool("prometheus", "/usr/bin/promtool")


@pytest.fixture(scope="module")
def amtool() -> Path:
    return debian_tool("prometheus-alertmanager", "/usr/bin/amtool")


def check(tool: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_rules_are_valid(promtool):
    out = check(promtool, "check", "rules", str(RULES_FILE)).stdout
    assert "SUCCESS: 8 rules found" in out


def test_prometheus_config_is_valid_and_finds_the_agents_by_swarm_discovery(promtool, tmp_path):
    config = json.loads(prometheus_config())
    rules = tmp_path / "alert-rules.yml"
    shutil.copy(RULES_FILE, rules)
    config["rule_files"] = [str(rules)]
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    check(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"node", "cadvisor", "traefik", "prometheus", "alertmanager"}
    for name in ("node", "cadvisor", "traefik"):
        assert jobs[name]["dockerswarm_sd_configs"][0]["role"] == "tasks", "no static target list"
    assert "static_configs" not in jobs["node"]


def relabel(rules: list[dict], labels: dict) -> Optional[dict]:
    """Prometheus' relabelling for the actions the config uses (keep, replace): the source
    labels joined by ';', the regex anchored at both ends, $1 in the replacement."""
    labels = dict(labels)
    for rule in rules:
        value = ";".join(labels.get(name, "") for name in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if rule.get("action", "replace") == "keep":
            if not match:
                return None
        elif match:
            labels[rule["target_label"]] = re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m.group(1))),
                                                  rule.get("replacement", "$1"))
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def discovered_task(service: str, network: str, address: str, node: str, **meta: str) -> dict:
    return {"__address__": address, "__meta_dockerswarm_service_name": service,
            "__meta_dockerswarm_network_name": network, "__meta_dockerswarm_task_desired_state": "running",
            "__meta_dockerswarm_node_hostname": node, **meta}


def test_the_ingress_is_scraped_on_its_metrics_port_once_whatever_ports_it_publishes():
    """Swarm discovery gives a task that publishes ports one target per published port, with
    that port (the real engine's run: traefik's :80 and :443 down, its metrics on 8082)."""
    jobs = {job["job_name"]: job for job in json.loads(prometheus_config())["scrape_configs"]}
    rules = jobs["traefik"]["relabel_configs"]
    found = [relabel(rules, discovered_task("traefik", INGRESS_NETWORK, f"10.0.1.3:{port}", "b",
                                             __meta_dockerswarm_task_port_publish_mode="host"))
             for port in (80, 443)]
    assert found[0] == found[1] == {"__address__": f"10.0.1.3:{TRAEFIK_METRICS_PORT}", "node": "b"}
    # the agents, which publish nothing, are found on the port the job names
    agent = relabel(jobs["node"]["relabel_configs"], discovered_task("node-exporter", NETWORK, "10.0.2.3:9100", "w1"))
    assert agent == {"__address__": "10.0.2.3:9100", "node": "w1"}
    # the swarm metrics' own node label (which node is ready) is kept over the scraped host's:
    # the real engine's run saw both nodes' readiness under node="b" without this
    assert jobs["node"]["honor_labels"] is True
    assert not any(jobs[j].get("honor_labels") for j in ("cadvisor", "traefik", "prometheus", "alertmanager"))
    # other services and tasks on other networks are not scraped
    assert relabel(rules, discovered_task("web", INGRESS_NETWORK, "10.0.1.9:80", "b")) is None
    assert relabel(rules, discovered_task("traefik", "ingress", "10.0.0.5:80", "b")) is None


@pytest.mark.parametrize("receivers", [
    {}, {"webhook": "https://hooks.example.com/alerts"},
    {"email": "ops@example.com", "smtp": "smtp.example.com:587"},
])
def test_alertmanager_config_is_valid_with_or_without_receivers(amtool, tmp_path, receivers):
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager_config(receivers.get("webhook"), receivers.get("email"), receivers.get("smtp")))
    check(amtool, "check-config", str(path))


def series(**values: str) -> list[dict]:
    return [{"series": name, "values": value} for name, value in values.items()]


# `promtool test rules`: every alert of the rule file on series made for it (1m steps)
RULE_TESTS = {
    "rule_files": [str(RULES_FILE)],
    "evaluation_interval": "15s",
    "tests": [
        {"interval": "15s",
         "input_series": [
             {"series": 'dockyard_swarm_node_ready{node="w1",instance="b"}', "values": "1 1 0 0 0 0 1 1"},
             {"series": 'dockyard_swarm_node_ready{node="w1",instance="c"}', "values": "1 1 0 0 0 0 1 1"},
             {"series": 'dockyard_swarm_node_ready{node="b",instance="b"}', "values": "1x8"}],
         "alert_rule_test": [
             {"eval_time": "15s", "alertname": "NodeDown", "exp_alerts": []},
             # down at 30 s; 30 s later it fires, once for the node whoever reports it
             {"eval_time": "60s", "alertname": "NodeDown",
              "exp_alerts": [{"exp_labels": {"node": "w1", "severity": "critical"},
                              "exp_annotations": {
                                  "summary": "swarm node w1 is down",
                                  "description": "The managers have not heard from w1 for 30 s or more."}}]},
             {"eval_time": "105s", "alertname": "NodeDown", "exp_alerts": []}]},
        {"interval": "1m",
         "input_series": [
             {"series": 'dockyard_swarm_service_desired_tasks{service="web"}', "values": "2x10"},
             {"series": 'dockyard_swarm_service_running_tasks{service="web"}', "values": "2 1x9"},
             {"series": 'dockyard_swarm_service_failed_tasks_15m{service="web"}', "values": "0 1 3"},
             {"series": 'dockyard_service_up{service="registry"}', "values": "1 0x5"},
             {"series": 'dockyard_service_up{service="gitea"}', "values": "1x5"}],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "ServiceDegraded", "exp_alerts": []},
             {"eval_time": "6m", "alertname": "ServiceDegraded",
              "exp_alerts": [{"exp_labels": {"service": "web", "severity": "warning"},
                              "exp_annotations": {"summary": "service web runs fewer tasks than it should"}}]},
             {"eval_time": "1m", "alertname": "ServiceRestartLoop", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "ServiceRestartLoop",
              "exp_alerts": [{"exp_labels": {"service": "web", "severity": "warning"},
                              "exp_annotations": {"summary": "tasks of web failed 3 times in 15 minutes"}}]},
             {"eval_time": "3m", "alertname": "RegistryDown",
              "exp_alerts": [{"exp_labels": {"service": "registry", "severity": "critical"},
                              "exp_annotations": {"summary": "the stack's registry does not answer"}}]},
             {"eval_time": "5m", "alertname": "GiteaDown", "exp_alerts": []}]},
        {"interval": "1m",
         "input_series": [
             {"series": 'node_filesystem_avail_bytes{node="w1",mountpoint="/",fstype="ext4"}', "values": "10x6"},
             {"series": 'node_filesystem_size_bytes{node="w1",mountpoint="/",fstype="ext4"}', "values": "100x6"},
             {"series": 'node_filesystem_avail_bytes{node="w1",mountpoint="/mnt/nfs/data",fstype="nfs4"}',
              "values": "1x6"},
             {"series": 'node_filesystem_size_bytes{node="w1",mountpoint="/mnt/nfs/data",fstype="nfs4"}',
              "values": "100x6"},
             {"series": 'node_memory_MemAvailable_bytes{node="b"}', "values": "5x6"},
             {"series": 'node_memory_MemTotal_bytes{node="b"}', "values": "100x6"},
             {"series": 'up{job="node",node="w1"}', "values": "0x6"}],
         "alert_rule_test": [
             # the NFS mount is the server's disk, alerted there, not on every client
             {"eval_time": "6m", "alertname": "DiskAlmostFull",
              "exp_alerts": [{"exp_labels": {"node": "w1", "mountpoint": "/", "fstype": "ext4",
                                             "severity": "warning"},
                              "exp_annotations": {"summary": "/ on w1 is over 85 % full"}}]},
             {"eval_time": "6m", "alertname": "MemoryPressure",
              "exp_alerts": [{"exp_labels": {"node": "b", "severity": "warning"},
                              "exp_annotations": {"summary": "b has less than 10 % of its memory available"}}]},
             {"eval_time": "3m", "alertname": "NodeExporterDown",
              "exp_alerts": [{"exp_labels": {"job": "node", "node": "w1", "severity": "warning"},
                              "exp_annotations": {"summary": "no metrics from w1"}}]}]},
    ],
}


def test_each_alert_fires_when_it_should_and_only_then(promtool, tmp_path):
    tests = tmp_path / "rule-tests.yml"
    tests.write_text(yaml.safe_dump(RULE_TESTS))
    out = check(promtool, "test", "rules", str(tests)).stdout
    assert "SUCCESS" in out
    fired = {t["alertname"] for group in RULE_TESTS["tests"] for t in group["alert_rule_test"] if t["exp_alerts"]}
    rules = {r["alert"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]}
    # every rule is shown firing (GiteaDown's test shows it quiet while Gitea answers; its
    # expression is RegistryDown's with another label)
    assert fired == rules - {"GiteaDown"} and "GiteaDown" in rules


# --- swarm-metrics.sh -----------------------------------------------------------------------

FAKE_DOCKER_SWARM = r"""#!/bin/bash
echo "docker $*" >> "$LOG_DIR/calls"
case "$*" in
  "node ls --format {{.Hostname}} {{.Status}}") printf 'b Ready\nw1 Down\n' ;;
  "service ls --format {{.ID}} {{.Name}} {{.Replicas}}")
    printf 'aaa111 web 1/2\nbbb222 traefik 1/1\nccc333 site 2/2 (max 1 per node)\n' ;;
  "service ps --no-trunc --quiet --filter desired-state=shutdown aaa111 bbb222 ccc333") printf 't1\nt2\nt3\nt4\n' ;;
  "inspect --format {{.ServiceID}} {{.Status.State}} {{.Status.Timestamp.Unix}} t1 t2 t3 t4")
    now=$(date +%s)
    echo "aaa111fullid failed $((now - 60))"; echo "aaa111fullid shutdown $((now - 60))"
    echo "aaa111fullid rejected $((now - 4000))"; echo "ccc333fullid complete $((now - 10))" ;;
  *) echo "unexpected: docker $*" >&2; exit 1 ;;
esac
"""
STACK_CA = "-----BEGIN CERTIFICATE-----\nMIIBstackca\n-----END CERTIFICATE-----"
# an HTTPS server whose certificate only the stack's CA verifies: without --cacert, curl's 60
FAKE_CURL = """#!/bin/bash
case "$*" in *https://*) [[ "$*" == *"--cacert /etc/dockyard/stack-ca.crt "* ]] || { printf 000; exit 60; } ;; esac
case "$*" in *registry-host*) printf 401 ;; *) printf 000; exit 7 ;; esac
"""


@pytest.fixture
def manager(tmp_path) -> dict:
    bin_dir = sandbox(tmp_path, {"docker": FAKE_DOCKER_SWARM, "curl": FAKE_CURL,
                                 "systemctl": '#!/bin/bash\necho "systemctl $*" >> "$LOG_DIR/calls"\n'})
    for tool in ("date", "xargs", "id"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    return {"bin": bin_dir, "root": tmp_path / "root", "logs": tmp_path}


def install(manager: dict, **env: str) -> subprocess.CompletedProcess:
    return run("swarm-metrics.sh", manager["bin"], manager["logs"], SYSROOT=str(manager["root"]),
               **{"REGISTRY_URL": "https://registry-host:5000/v2/", "GITEA_URL": "https://gitea-host:3000/api/healthz",
                  "CA_CERT": STACK_CA, **env})


def test_swarm_metrics_installs_a_one_minute_timer_once(manager):
    first = install(manager)
    assert first.returncode == 0, first.stderr
    units = manager["root"] / "etc/systemd/system"
    assert "OnUnitActiveSec=60s" in (units / "dockyard-swarm-metrics.timer").read_text()
    assert "ControlAvailable" in (units / "dockyard-swarm-metrics.service").read_text(), "managers only"
    again = install(manager)
    assert again.returncode == 0 and "writing" not in again.stderr


def test_remove_takes_away_what_the_install_put_and_only_that(manager):
    assert install(manager).returncode == 0
    root = manager["root"]
    (root / "etc/systemd/system/docker.service.d").mkdir(parents=True)
    (root / "etc/dockyard/other.env").write_text("kept")
    removed = install(manager, REMOVE="1")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "usr/local/sbin/dockyard-swarm-metrics").exists()
    assert not list((root / "etc/systemd/system").glob("dockyard-swarm-metrics.*"))
    assert (root / "etc/dockyard/other.env").read_text() == "kept"
    again = install(manager, REMOVE="1")
    assert again.returncode == 0 and "removing" not in again.stderr, "safe to run twice"


def test_the_collector_writes_the_swarms_view_for_node_exporter(manager, tmp_path):
    assert install(manager).returncode == 0
    metrics = tmp_path / "metrics"
    collector = manager["root"] / "usr/local/sbin/dockyard-swarm-metrics"
    (tmp_path / "calls").write_text("")
    result = subprocess.run([str(collector)], capture_output=True, text=True, timeout=60,
                            env={"PATH": str(manager["bin"]), "METRICS_DIR": str(metrics), "LOG_DIR": str(tmp_path),
                                 "REGISTRY_URL": "https://registry-host:5000/v2/",
                                 "GITEA_URL": "https://gitea-host:3000/api/healthz",
                                 "CA_FILE": "/etc/dockyard/stack-ca.crt"})
    assert result.returncode == 0, result.stderr
    text = (metrics / "swarm.prom").read_text()
    lines = set(text.splitlines())
    assert {'dockyard_swarm_node_ready{node="b"} 1', 'dockyard_swarm_node_ready{node="w1"} 0'} <= lines
    assert {'dockyard_swarm_service_desired_tasks{service="web"} 2',
            'dockyard_swarm_service_running_tasks{service="web"} 1',
            'dockyard_swarm_service_desired_tasks{service="site"} 2'} <= lines
    # one failure in the last 15 minutes: a shutdown is no failure, an old rejection too old
    assert 'dockyard_swarm_service_failed_tasks_15m{service="web"} 1' in lines
    assert 'dockyard_swarm_service_failed_tasks_15m{service="site"} 0' in lines
    assert {'dockyard_service_up{service="registry"} 1', 'dockyard_service_up{service="gitea"} 0'} <= lines
    assert "CA_FILE=/etc/dockyard/stack-ca.crt" in (manager["root"] / "etc/dockyard/swarm-metrics.env").read_text()
    assert (manager["root"] / "etc/dockyard/stack-ca.crt").read_text() == STACK_CA + "\n"
    assert not [p for p in metrics.iterdir() if p.name != "swarm.prom"], "no temp file left for node-exporter"
    # a busy host pays for four docker calls, however many services there are
    assert len([c for c in (tmp_path / "calls").read_text().splitlines() if c.startswith("docker ")]) == 4


def test_the_collectors_output_is_what_promtool_reads_as_metrics(manager, tmp_path, promtool):
    assert install(manager).returncode == 0
    collector = manager["root"] / "usr/local/sbin/dockyard-swarm-metrics"
    subprocess.run([str(collector)], check=True, timeout=60, capture_output=True,
                   env={"PATH": str(manager["bin"]), "METRICS_DIR": str(tmp_path / "m"), "LOG_DIR": str(tmp_path)})
    text = (tmp_path / "m" / "swarm.prom").read_text()
    result = subprocess.run([str(promtool), "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("url", ["ftp://x", "http://a b", "http://x/$(reboot)"])
def test_swarm_metrics_refuses_what_is_not_a_plain_url(manager, url):
    result = install(manager, REGISTRY_URL=url)
    assert result.returncode != 0 and "URL" in result.stderr


# --- the services, on mocks -----------------------------------------------------------------

MANAGERS = [m.name for m in build_topology("small", 2).managers]


@pytest.fixture(scope="module")
def small():
    return run_program(stack="mon-small", tier="small", workers="2")


def test_the_agents_run_on_every_node_and_the_servers_on_the_first_manager(small):
    services = {s.inputs["name"]: s for s in small.of_type(SERVICE)}
    for agent in ("node-exporter", "cadvisor"):
        assert "global" in services[agent].inputs["mode"]
        assert "placement" not in services[agent].inputs["taskSpec"], "every node, workers included"
        mounts = services[agent].inputs["taskSpec"]["containerSpec"]["mounts"]
        assert all(m["readOnly"] for m in mounts), "the agents only read the host"
    for server in ("prometheus", "alertmanager"):
        spec = services[server].inputs["taskSpec"]
        assert spec["placement"]["constraints"] == [f"node.id==node-{MANAGERS[0]}-manager-swarm-init"]
        assert [m["source"] for m in spec["containerSpec"]["mounts"] if m["type"] == "volume"] == \
            [f"dockyard-{server}-data"]
        labels = {label["label"]: label["value"] for label in services[server].inputs["labels"]}
        assert labels[f"traefik.http.routers.{server}.middlewares"] == "dashboard-auth@file", "behind the password"
    args = services["prometheus"].inputs["taskSpec"]["containerSpec"]["args"]
    assert "--storage.tsdb.retention.time=15d" in args
    # every manager writes the swarm's view (whichever is the leader, one answers)
    assert {c.name for c in small.commands("swarm-metrics.sh")} == \
        {f"monitoring-{m}-swarm-metrics" for m in MANAGERS}
    for command in small.commands("swarm-metrics.sh"):
        # turning monitoring off runs the script's removal; a whole host going away skips it
        assert command.inputs["delete"] == "REMOVE=1 bash -s"
        # an edited script replaces the command: its removal must run before the new install
        assert command.delete_before_replace
        assert command.deleted_with.endswith(f"Droplet::do-{command.name.split('-')[1]}"), command.deleted_with


def test_retention_and_receivers_come_from_the_stack():
    run = run_program(stack="mon", tier="default", workers="1", monitoringRetention="30d",
                      alertWebhook="https://hooks.example.com/a")
    services = {s.inputs["name"]: s for s in run.of_type(SERVICE)}
    assert "--storage.tsdb.retention.time=30d" in services["prometheus"].inputs["taskSpec"]["containerSpec"]["args"]
    secret = run.named("monitoring-alertmanager-config")
    assert "data" in secret.secret_inputs, "a webhook URL can carry a token: a secret"
    # the CI host's private address: from the managers, the firewall lets the VPC through
    ci_ip = run.outputs["registry"].split(":")[0]  # the registry listens on the CI host's private address
    (metrics,) = run.commands("swarm-metrics.sh")
    assert f"REGISTRY_URL=https://{ci_ip}:5000/v2/" in metrics.inputs["create"]
    assert f"GITEA_URL=https://{ci_ip}:3000/api/healthz" in metrics.inputs["create"]
    # both are checked against the stack's CA, which signed their certificates
    assert "BEGIN CERTIFICATE" in metrics.inputs["create"].split("CA_CERT=", 1)[1]


# --- Grafana: its provisioning files (its image cannot be had here) --------------------------

GRAFANA = RULES_FILE.parent / "grafana"


def dashboard_queries() -> dict[str, list[str]]:
    """Every query of every provisioned dashboard, by dashboard uid."""
    queries = {}
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        queries[dashboard["uid"]] = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return queries


def test_the_dashboards_use_the_provisioned_prometheus_and_their_queries_parse(promtool, tmp_path):
    source = yaml.safe_load((GRAFANA / "datasources.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "dashboards.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    uids = set()
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"]
            assert panel["targets"] and all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
    assert uids == {"dockyard-nodes", "dockyard-containers", "dockyard-services"}
    # PromQL checked by Prometheus' own parser: each query as a recording rule
    rules = {"groups": [{"name": uid, "rules": [{"record": f"dockyard:check:{i}", "expr": expr}
                                                for i, expr in enumerate(exprs)]}
                        for uid, exprs in dashboard_queries().items()]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    check(promtool, "check", "rules", str(tmp_path / "queries.yml"))


def test_grafana_gets_its_files_and_its_password_from_swarm_secrets(small):
    services = {s.inputs["name"]: s for s in small.of_type(SERVICE)}
    grafana = services["grafana"].inputs["taskSpec"]
    mounted = {s["fileName"] for s in grafana["containerSpec"]["secrets"]}
    assert mounted == {"/run/secrets/grafana-admin-password",
                       "/etc/grafana/provisioning/datasources/dockyard.yml",
                       "/etc/grafana/provisioning/dashboards/dockyard.yml",
                       # the stack runs the logs too (every service, DigitalOcean's default)
                       "/etc/grafana/provisioning/datasources/dockyard-loki.yml",
                       *(f"/var/lib/grafana/dashboards/{p.name}" for p in (GRAFANA / "dashboards").glob("*.json"))}
    assert grafana["containerSpec"]["env"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    assert grafana["placement"]["constraints"] == [f"node.id==node-{MANAGERS[0]}-manager-swarm-init"]
    assert small.outputs["grafana_admin_password"].startswith("generated-secret-")
    assert "data" in small.named("monitoring-grafana-admin-password-file").secret_inputs
