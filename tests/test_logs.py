"""Central logs (issue 16, item 4): Loki's and promtail's configurations read by the programs
that run them (built here from Loki's module, as the local e2e runs them), and the services
on mocks."""
from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml

from components.config import ConfigError, parse_config
from components.logs import GRAFANA_DATASOURCE, LOKI_PORT, loki_config, promtail_config
from components.topology import build_topology
from tests.harness import BASE_CONFIG, run_program

SERVICE = "docker:index/service:Service"
MANAGERS = [m.name for m in build_topology("small", 2).managers]


@pytest.fixture(scope="module")
def binaries():
    """loki and promtail, built from Loki's module (cached after the first build)."""
    from localcloud.ci_images import go_binaries
    from localcloud.platform_images import LOKI
    return go_binaries(LOKI)


def test_loki_accepts_its_configuration_and_keeps_logs_for_the_retention(binaries, tmp_path):
    path = tmp_path / "loki.yml"
    path.write_text(loki_config("14d"))
    result = subprocess.run([str(binaries["loki"]), "-verify-config", f"-config.file={path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    assert config["limits_config"]["retention_period"] == "14d"
    assert config["compactor"]["retention_enabled"] is True, "without it the retention deletes nothing"
    assert config["limits_config"]["deletion_mode"] == "disabled", "no deleting logs through the API"
    assert config["common"]["path_prefix"] == "/loki", "on the service's volume"


def test_loki_refuses_a_configuration_it_does_not_know(binaries, tmp_path):
    """The check above can fail: a misspelt key is refused."""
    config = json.loads(loki_config("7d"))
    config["limits_config"]["retention_perod"] = "7d"
    path = tmp_path / "loki.yml"
    path.write_text(json.dumps(config))
    result = subprocess.run([str(binaries["loki"]), "-verify-config", f"-config.file={path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "retention_perod" in result.stdout + result.stderr


def test_promtail_accepts_its_configuration_with_the_node_name_expanded(binaries, tmp_path):
    path = tmp_path / "promtail.yml"
    path.write_text(promtail_config())
    result = subprocess.run([str(binaries["promtail"]), f"-config.file={path}", "-config.expand-env=true",
                             "-check-syntax"], capture_output=True, text=True, timeout=60, env={"NODE": "w1"})
    assert result.returncode == 0, result.stdout + result.stderr
    bad = json.loads(promtail_config())
    bad["clients"][0]["urll"] = bad["clients"][0].pop("url")
    path.write_text(json.dumps(bad))
    refused = subprocess.run([str(binaries["promtail"]), f"-config.file={path}", "-check-syntax"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "urll" in refused.stderr


def test_promtail_reads_every_container_through_the_docker_engine_labelled_by_node_and_service():
    config = json.loads(promtail_config())
    (job,) = config["scrape_configs"]
    assert job["docker_sd_configs"] == [{"host": "unix:///var/run/docker.sock", "refresh_interval": "15s"}]
    targets = {rule["target_label"] for rule in job["relabel_configs"]}
    assert {"container", "service", "stream"} <= targets
    assert not [rule for rule in job["relabel_configs"] if rule.get("action") in ("keep", "drop")], \
        "every container of the node, the platform's own included"
    (client,) = config["clients"]
    assert client["url"] == f"http://loki:{LOKI_PORT}/loki/api/v1/push"
    assert client["external_labels"] == {"node": "${NODE}"}


ALL_SERVICES = ["ingress", "panel", "monitoring", "dashboards", "logs"]


@pytest.fixture(scope="module")
def small():
    return run_program(stack="logs-small", tier="small", workers="2", platformServices=ALL_SERVICES)


def test_promtail_runs_on_every_node_and_loki_on_the_first_manager_behind_the_password(small):
    services = {s.inputs["name"]: s for s in small.of_type(SERVICE)}
    promtail = services["promtail"].inputs
    assert "global" in promtail["mode"] and "placement" not in promtail["taskSpec"], "every node, workers included"
    spec = promtail["taskSpec"]["containerSpec"]
    assert spec["env"] == {"NODE": "{{.Node.Hostname}}"}, "the node's name, from the swarm"
    socket = next(m for m in spec["mounts"] if m["target"] == "/var/run/docker.sock")
    assert socket["readOnly"]
    assert "-config.expand-env=true" in spec["args"]
    loki = services["loki"].inputs
    assert loki["taskSpec"]["placement"]["constraints"] == [f"node.id==node-{MANAGERS[0]}-manager-swarm-init"]
    assert [m["source"] for m in loki["taskSpec"]["containerSpec"]["mounts"]] == ["dockyard-loki-data"]
    labels = {label["label"]: label["value"] for label in loki["labels"]}
    assert labels["traefik.http.routers.loki.middlewares"] == "dashboard-auth@file"
    assert small.outputs["loki_url"] == "https://loki.logs-small.dockyard.internal/"
    assert not small.named("logs-network").inputs.get("attachable"), "no container joins by hand"


def loki_source(run) -> dict:
    """What Grafana's provisioning file for Loki says in this run."""
    secret = run.named("monitoring-grafana-datasource-loki")
    return yaml.safe_load(base64.b64decode(secret.inputs["data"]))


def test_grafana_searches_the_logs_only_when_they_run(small):
    assert [s["name"] for s in loki_source(small)["datasources"]] == ["Loki"]
    without = run_program(stack="nologs", tier="default", workers="1",
                          platformServices=["ingress", "monitoring", "dashboards"])
    assert not {"loki", "promtail"} & {s.inputs["name"] for s in without.of_type(SERVICE)}
    assert "loki_url" not in without.outputs
    # logs turned off: the file deletes the source Grafana's database kept from before
    assert loki_source(without) == {"apiVersion": 1, "deleteDatasources": [{"name": "Loki", "orgId": 1}]}


def test_digitalocean_stacks_run_the_logs_only_when_they_ask():
    """promtail's image is past its end of life: a stack opts in."""
    assert "logs" not in parse_config("d", BASE_CONFIG).platform.services
    assert "logs" in parse_config("d", {**BASE_CONFIG, "platformServices": ALL_SERVICES}).platform.services


def test_grafanas_log_source_is_the_stacks_loki_on_a_network_both_are_on(small):
    source = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"][0]
    assert source["type"] == "loki" and source["url"] == f"http://loki:{LOKI_PORT}"
    services = {s.inputs["name"]: s for s in small.of_type(SERVICE)}
    networks = {name: {n["id"] for n in services[name].inputs["taskSpec"]["networksAdvanceds"]}
                for name in ("grafana", "loki")}
    assert networks["grafana"] & networks["loki"], "Grafana resolves `loki` on a network they share"


def test_the_retention_comes_from_the_stack():
    run = run_program(stack="logs-ret", tier="default", workers="1", logsRetention="30d",
                      platformServices=ALL_SERVICES)
    secret = run.named("logs-loki-config")
    assert "data" in secret.secret_inputs
    assert yaml.safe_load(base64.b64decode(secret.inputs["data"]))["limits_config"]["retention_period"] == "30d"
    assert parse_config("l", BASE_CONFIG).platform.logs_retention == "7d"


@pytest.mark.parametrize("changes, message", [
    ({"platformServices": ["logs"]}, "'logs' is served through the ingress"),
    ({"logsRetention": "36h"}, "is not a whole number of days"),
    ({"logsRetention": "forever"}, "is not a whole number of days"),
])
def test_bad_logs_settings_are_refused_before_any_resource(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_config("s", {**BASE_CONFIG, **changes})
