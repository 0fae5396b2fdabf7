"""Monitoring and alerting on the swarm: node-exporter and cAdvisor on every node, Prometheus
finding them through Docker's swarm service discovery (a new worker is scraped with no
change here), Alertmanager with the project's rules (observability/alert-rules.yml), and on
every manager a timer writing what Prometheus cannot ask Docker itself (scripts/
swarm-metrics.sh). Prometheus and Alertmanager keep their data on a volume of the first
manager, where they are pinned, and answer through the ingress behind the dashboard's
password (prometheus.<domain>, alertmanager.<domain>). Resources come from the swarm's
docker provider (opts.providers); the timers run over each manager's ssh connection."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .config import PlatformSettings
from .hosts import Host
from .ingress import (BY_TASK_ADDRESS, NETWORK as INGRESS_NETWORK, METRICS_PORT as TRAEFIK_METRICS_PORT, NO_ENV_NOISE,
                      PROVIDER_NOISE, Chain, secret_file, swarm_secret)
from .remote import run_script

NETWORK = "dockyard-monitoring"
RULES_FILE = Path(__file__).parent / "observability" / "alert-rules.yml"
GRAFANA_FILES = Path(__file__).parent / "observability" / "grafana"
METRICS_DIR = "/var/lib/dockyard/metrics"  # node-exporter's text files (swarm-metrics.sh)
PORTS = {"node-exporter": 9100, "cadvisor": 8080, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
# every 30 s: on small hosts the agents' and Prometheus' own CPU is what a shorter interval costs
SCRAPE_INTERVAL = "30s"


def _swarm_job(job: str, service: str, port: int, network: str) -> dict:
    """A scrape job of every running task of a swarm service, found through the Docker API."""
    return {
        "job_name": job,
        "dockerswarm_sd_configs": [{"host": "unix:///var/run/docker.sock", "role": "tasks", "port": port}],
        "relabel_configs": [
            {"source_labels": ["__meta_dockerswarm_service_name"], "regex": service, "action": "keep"},
            {"source_labels": ["__meta_dockerswarm_network_name"], "regex": network, "action": "keep"},
            {"source_labels": ["__meta_dockerswarm_task_desired_state"], "regex": "running", "action": "keep"},
            {"source_labels": ["__meta_dockerswarm_node_hostname"], "target_label": "node"},
            # a task that publishes ports is discovered once per published port (traefik: 80
            # and 443), with that port: every one becomes the metrics port, and the targets
            # that are then the same are scraped once
            {"source_labels": ["__address__"], "regex": "(.+):[0-9]+", "target_label": "__address__",
             "replacement": f"${{1}}:{port}"},
        ],
    }


def prometheus_config() -> str:
    """prometheus.yml (JSON is YAML): the agents, the ingress (monitoring needs it: config.py),
    itself and Alertmanager."""
    # the managers' swarm metrics (swarm-metrics.sh, through node-exporter's text files) say which
    # node they describe in their own `node` label: it wins over the scraped host's (else
    # Prometheus renames it exported_node and every node's readiness reads as the manager's)
    node_job = {**_swarm_job("node", "node-exporter", PORTS["node-exporter"], NETWORK), "honor_labels": True}
    jobs = [
        node_job,
        _swarm_job("cadvisor", "cadvisor", PORTS["cadvisor"], NETWORK),
        {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PORTS['prometheus']}"]}]},
        {"job_name": "alertmanager", "static_configs": [{"targets": [f"alertmanager:{PORTS['alertmanager']}"]}]},
        _swarm_job("traefik", "traefik", TRAEFIK_METRICS_PORT, INGRESS_NETWORK),
    ]
    return json.dumps({
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": ["/run/secrets/alert-rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"alertmanager:{PORTS['alertmanager']}"]}]}]},
        "scrape_configs": jobs,
    }, indent=2)


def alertmanager_config(webhook: Optional[str], email: Optional[str], smtp: Optional[str]) -> str:
    """alertmanager.yml: every alert to the stack's receivers; none configured is valid (the
    alerts are then in its API and UI only)."""
    receiver: dict = {"name": "dockyard"}
    if webhook:
        receiver["webhook_configs"] = [{"url": webhook, "send_resolved": True}]
    if email:
        receiver["email_configs"] = [{"to": email, "from": f"alertmanager@{email.split('@', 1)[1]}",
                                      "smarthost": smtp, "send_resolved": True}]
    return json.dumps({
        "route": {"receiver": "dockyard", "group_by": ["alertname", "node", "service"],
                  "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h"},
        "receivers": [receiver],
    }, indent=2)


def behind_ingress(name: str, domain: str, port: int) -> list[docker.ServiceLabelArgs]:
    """Labels that route <name>.<domain> to the service, behind the dashboard's password."""
    labels = {
        "traefik.enable": "true",
        f"traefik.http.routers.{name}.rule": f"Host(`{name}.{domain}`)",
        f"traefik.http.routers.{name}.entrypoints": "websecure",
        f"traefik.http.routers.{name}.middlewares": "dashboard-auth@file",
        f"traefik.http.services.{name}.loadbalancer.server.port": str(port),
        "traefik.swarm.network": INGRESS_NETWORK,
    }
    return [docker.ServiceLabelArgs(label=k, value=v) for k, v in labels.items()]


@dataclass
class MonitoringArgs:
    settings: PlatformSettings
    # the swarm node id of the manager that keeps Prometheus' and Alertmanager's data
    server_node_id: pulumi.Input[str]
    managers: list[Host]
    ingress_network_id: pulumi.Input[str]
    registry_url: Optional[pulumi.Input[str]] = None
    gitea_url: Optional[pulumi.Input[str]] = None
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    deleted_with: Optional[pulumi.Resource] = None
    # the last platform resource made before these: they are made one after another (ingress.Chain)
    after: Optional[pulumi.Resource] = None


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Monitoring", name, None, opts)
        settings = args.settings
        chain = Chain(pulumi.ResourceOptions(parent=self, depends_on=args.depends_on, deleted_with=args.deleted_with),
                      args.after)
        images = settings.images

        self.network = chain.add(docker.Network(f"{name}-network", name=NETWORK, driver="overlay", attachable=True,
                                                opts=chain.opts()))
        networks = [docker.ServiceTaskSpecNetworksAdvancedArgs(id=self.network.id)]
        restart = docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s")

        def bind(source: str, target: str) -> docker.ServiceTaskSpecContainerSpecMountArgs:
            return docker.ServiceTaskSpecContainerSpecMountArgs(type="bind", source=source, target=target,
                                                                read_only=True)

        def global_agent(key: str, service: str, args_: list[str],
                         mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs]) -> docker.Service:
            return chain.add(docker.Service(
                f"{name}-{service}",
                name=service,
                mode=docker.ServiceModeArgs(global_=True),
                task_spec=docker.ServiceTaskSpecArgs(
                    container_spec=docker.ServiceTaskSpecContainerSpecArgs(image=images[key], args=args_,
                                                                           mounts=mounts),
                    networks_advanceds=networks, restart_policy=restart,
                    resources=docker.ServiceTaskSpecResourcesArgs(
                        limits=docker.ServiceTaskSpecResourcesLimitsArgs(memory_bytes=128 * 1024 * 1024)),
                ),
                endpoint_spec=BY_TASK_ADDRESS,
                opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=NO_ENV_NOISE)),
            ))

        self.node_exporter = global_agent("nodeExporter", "node-exporter", [
            "--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/rootfs",
            f"--collector.textfile.directory=/rootfs{METRICS_DIR}",
            "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)",
        ], [bind("/proc", "/host/proc"), bind("/sys", "/host/sys"), bind("/", "/rootfs")])
        self.cadvisor = global_agent("cadvisor", "cadvisor", [
            # every 30 s and Docker's containers only: cAdvisor costs CPU on every node
            "--housekeeping_interval=30s", "--docker_only=true", "--store_container_labels=false",
            "--whitelisted_container_labels=com.docker.swarm.service.name,com.docker.swarm.node.id",
        ], [bind("/", "/rootfs"), bind("/var/run", "/var/run"), bind("/sys", "/sys"),
            bind("/var/lib/docker", "/var/lib/docker")])

        pinned = docker.ServiceTaskSpecPlacementArgs(
            constraints=[pulumi.Output.from_input(args.server_node_id).apply(lambda node: f"node.id=={node}")])
        rules = chain.add(swarm_secret(f"{name}-alert-rules", "dockyard-alert-rules", RULES_FILE.read_text(),
                                       chain.opts()))
        config = chain.add(swarm_secret(f"{name}-prometheus-config", "dockyard-prometheus-config",
                                        prometheus_config(), chain.opts()))
        self.prometheus = chain.add(docker.Service(
            f"{name}-prometheus",
            name="prometheus",
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            labels=behind_ingress("prometheus", settings.domain, PORTS["prometheus"]),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=images["prometheus"],
                    # root: swarm discovery reads the Docker socket
                    user="0",
                    args=["--config.file=/run/secrets/prometheus.yml", "--storage.tsdb.path=/prometheus",
                          f"--storage.tsdb.retention.time={settings.retention}", "--web.enable-lifecycle"],
                    mounts=[docker.ServiceTaskSpecContainerSpecMountArgs(
                                type="volume", source="dockyard-prometheus-data", target="/prometheus"),
                            bind("/var/run/docker.sock", "/var/run/docker.sock")],
                    secrets=[secret_file(rules, "/run/secrets/alert-rules.yml"),
                             secret_file(config, "/run/secrets/prometheus.yml")],
                ),
                placement=pinned,
                networks_advanceds=[*networks, docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.ingress_network_id)],
                restart_policy=restart,
            ),
            endpoint_spec=BY_TASK_ADDRESS,
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=NO_ENV_NOISE)),
        ))
        receivers = chain.add(swarm_secret(f"{name}-alertmanager-config", "dockyard-alertmanager-config",
                                           alertmanager_config(settings.alert_webhook, settings.alert_email,
                                                               settings.alert_smtp), chain.opts()))
        self.alertmanager = chain.add(docker.Service(
            f"{name}-alertmanager",
            name="alertmanager",
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            labels=behind_ingress("alertmanager", settings.domain, PORTS["alertmanager"]),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=images["alertmanager"],
                    user="0",
                    args=["--config.file=/run/secrets/alertmanager.yml", "--storage.path=/alertmanager"],
                    mounts=[docker.ServiceTaskSpecContainerSpecMountArgs(
                        type="volume", source="dockyard-alertmanager-data", target="/alertmanager")],
                    secrets=[secret_file(receivers, "/run/secrets/alertmanager.yml")],
                ),
                placement=pinned,
                networks_advanceds=[*networks, docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.ingress_network_id)],
                restart_policy=restart,
            ),
            endpoint_spec=BY_TASK_ADDRESS,
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=NO_ENV_NOISE)),
        ))
        env = {"REGISTRY_URL": args.registry_url or "", "GITEA_URL": args.gitea_url or ""}
        self.swarm_metrics = [
            run_script(f"{name}-{host.name}-swarm-metrics", connection=host.connection, script="swarm-metrics.sh",
                       env=env, delete_env={"REMOVE": "1"},
                       # monitoring turned off removes the timer; a host going away takes it along
                       opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on,
                                                   deleted_with=host.machine))
            for host in args.managers
        ]
        self.prometheus_url = f"https://prometheus.{settings.domain}/"
        self.alertmanager_url = f"https://alertmanager.{settings.domain}/"
        self.grafana_url: Optional[str] = None
        self.grafana_admin_password: Optional[pulumi.Output[str]] = None
        if settings.runs("dashboards"):
            self._grafana(name, settings, chain, networks, pinned, restart, args.ingress_network_id)
        self.last = chain.last
        self.register_outputs({"prometheus_url": self.prometheus_url, "alertmanager_url": self.alertmanager_url,
                               "grafana_url": self.grafana_url})

    def _grafana(self, name, settings, chain, networks, pinned, restart, ingress_network_id) -> None:
        """Grafana with the Prometheus data source and the project's dashboards, from files;
        its admin password a stack secret, read from a swarm secret at its first start."""
        password = random.RandomPassword(f"{name}-grafana-admin-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        self.grafana_admin_password = pulumi.Output.secret(password.result)
        files = {"/run/secrets/grafana-admin-password": ("grafana-admin-password-file", password.result)}
        provisioning = {"datasources.yml": "/etc/grafana/provisioning/datasources/dockyard.yml",
                        "dashboards.yml": "/etc/grafana/provisioning/dashboards/dockyard.yml"}
        for source, target in provisioning.items():
            files[target] = (f"grafana-{source.split('.')[0]}", (GRAFANA_FILES / source).read_text())
        # without the logs, the same file deletes the Loki source Grafana's database kept
        # from when they ran
        loki_source = "datasource-loki.yml" if settings.runs("logs") else "datasource-loki-removed.yml"
        files["/etc/grafana/provisioning/datasources/dockyard-loki.yml"] = (
            "grafana-datasource-loki", (GRAFANA_FILES / loki_source).read_text())
        for dashboard in sorted((GRAFANA_FILES / "dashboards").glob("*.json")):
            files[f"/var/lib/grafana/dashboards/{dashboard.name}"] = (f"grafana-dashboard-{dashboard.stem}",
                                                                       dashboard.read_text())
        mounted = [secret_file(chain.add(swarm_secret(f"{name}-{stem}", f"dockyard-{stem}", content, chain.opts())),
                               path)
                   for path, (stem, content) in sorted(files.items())]
        self.grafana = chain.add(docker.Service(
            f"{name}-grafana",
            name="grafana",
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            labels=[label for label in behind_ingress("grafana", settings.domain, PORTS["grafana"])
                    if not label.label.endswith(".middlewares")],  # Grafana asks for its own password
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=settings.images["grafana"],
                    env={"GF_SECURITY_ADMIN_USER": "admin",
                         "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana-admin-password",
                         "GF_SERVER_ROOT_URL": f"https://grafana.{settings.domain}/",
                         "GF_USERS_ALLOW_SIGN_UP": "false", "GF_ANALYTICS_REPORTING_ENABLED": "false"},
                    mounts=[docker.ServiceTaskSpecContainerSpecMountArgs(
                        type="volume", source="dockyard-grafana-data", target="/var/lib/grafana")],
                    secrets=mounted,
                ),
                placement=pinned,
                networks_advanceds=[*networks, docker.ServiceTaskSpecNetworksAdvancedArgs(id=ingress_network_id)],
                restart_policy=restart,
            ),
            endpoint_spec=BY_TASK_ADDRESS,
            opts=pulumi.ResourceOptions.merge(chain.opts(), pulumi.ResourceOptions(ignore_changes=PROVIDER_NOISE)),
        ))
        self.grafana_url = f"https://grafana.{settings.domain}/"
