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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from .config import PlatformSettings
from .hosts import Host
from .ingress import METRICS_PORT as TRAEFIK_METRICS_PORT, NETWORK as INGRESS_NETWORK
from .swarm_service import Chain, PlatformServiceArgs, bind, on_node, secret_file, service, swarm_secret, volume
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


@dataclass(kw_only=True)
class MonitoringArgs(PlatformServiceArgs):
    managers: list[Host]
    registry_url: Optional[pulumi.Input[str]] = None
    gitea_url: Optional[pulumi.Input[str]] = None
    ca_certificate: Optional[pulumi.Input[str]] = None   # the stack's CA, which signed both


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Monitoring", name, None, opts)
        settings = args.settings
        chain = args.chain(self)
        self.network = chain.add(docker.Network(f"{name}-network", name=NETWORK, driver="overlay", attachable=True,
                                                opts=chain.opts()))
        self._agents(name, settings, chain)
        self._servers(name, settings, chain, args)
        env = {"REGISTRY_URL": args.registry_url or "", "GITEA_URL": args.gitea_url or "",
               "CA_CERT": args.ca_certificate or ""}
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
            self._grafana(name, settings, chain, args)
        self.last = chain.last
        self.register_outputs({"prometheus_url": self.prometheus_url, "alertmanager_url": self.alertmanager_url,
                               "grafana_url": self.grafana_url})

    def _agents(self, name: str, settings: PlatformSettings, chain: Chain) -> None:
        """node-exporter and cAdvisor on every node."""
        self.node_exporter = service(
            f"{name}-node-exporter", chain, name="node-exporter", image=settings.images["nodeExporter"],
            networks=[self.network.id], memory_mib=128,
            args=["--path.procfs=/host/proc", "--path.sysfs=/host/sys", "--path.rootfs=/rootfs",
                  f"--collector.textfile.directory=/rootfs{METRICS_DIR}",
                  "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)"],
            mounts=[bind("/proc", "/host/proc", True), bind("/sys", "/host/sys", True), bind("/", "/rootfs", True)])
        self.cadvisor = service(
            f"{name}-cadvisor", chain, name="cadvisor", image=settings.images["cadvisor"],
            networks=[self.network.id], memory_mib=128,
            # every 30 s and Docker's containers only: cAdvisor costs CPU on every node
            args=["--housekeeping_interval=30s", "--docker_only=true", "--store_container_labels=false",
                  "--whitelisted_container_labels=com.docker.swarm.service.name,com.docker.swarm.node.id"],
            mounts=[bind("/", "/rootfs", True), bind("/var/run", "/var/run", True), bind("/sys", "/sys", True),
                    bind("/var/lib/docker", "/var/lib/docker", True)])

    def _servers(self, name: str, settings: PlatformSettings, chain: Chain, args: MonitoringArgs) -> None:
        """Prometheus and Alertmanager, on the manager that keeps their data, behind the ingress."""
        rules = chain.add(swarm_secret(f"{name}-alert-rules", "dockyard-alert-rules", RULES_FILE.read_text(),
                                       chain.opts()))
        config = chain.add(swarm_secret(f"{name}-prometheus-config", "dockyard-prometheus-config",
                                        prometheus_config(), chain.opts()))
        self.prometheus = service(
            f"{name}-prometheus", chain, name="prometheus", image=settings.images["prometheus"], replicas=1,
            labels=behind_ingress("prometheus", settings.domain, PORTS["prometheus"]),
            # root: swarm discovery reads the Docker socket
            user="0",
            args=["--config.file=/run/secrets/prometheus.yml", "--storage.tsdb.path=/prometheus",
                  f"--storage.tsdb.retention.time={settings.retention}", "--web.enable-lifecycle"],
            mounts=[volume("dockyard-prometheus-data", "/prometheus"),
                    bind("/var/run/docker.sock", "/var/run/docker.sock", True)],
            secrets=[secret_file(rules, "/run/secrets/alert-rules.yml"),
                     secret_file(config, "/run/secrets/prometheus.yml")],
            constraints=[on_node(args.server_node_id)], networks=[self.network.id, args.ingress_network_id])
        receivers = chain.add(swarm_secret(f"{name}-alertmanager-config", "dockyard-alertmanager-config",
                                           alertmanager_config(settings.alert_webhook, settings.alert_email,
                                                               settings.alert_smtp), chain.opts()))
        self.alertmanager = service(
            f"{name}-alertmanager", chain, name="alertmanager", image=settings.images["alertmanager"], replicas=1,
            labels=behind_ingress("alertmanager", settings.domain, PORTS["alertmanager"]),
            user="0", args=["--config.file=/run/secrets/alertmanager.yml", "--storage.path=/alertmanager"],
            mounts=[volume("dockyard-alertmanager-data", "/alertmanager")],
            secrets=[secret_file(receivers, "/run/secrets/alertmanager.yml")],
            constraints=[on_node(args.server_node_id)], networks=[self.network.id, args.ingress_network_id])

    def _grafana(self, name: str, settings: PlatformSettings, chain: Chain, args: MonitoringArgs) -> None:
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
        self.grafana = service(
            f"{name}-grafana", chain, name="grafana", image=settings.images["grafana"], replicas=1,
            labels=[label for label in behind_ingress("grafana", settings.domain, PORTS["grafana"])
                    if not label.label.endswith(".middlewares")],  # Grafana asks for its own password
            env={"GF_SECURITY_ADMIN_USER": "admin",
                 "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana-admin-password",
                 "GF_SERVER_ROOT_URL": f"https://grafana.{settings.domain}/",
                 "GF_USERS_ALLOW_SIGN_UP": "false", "GF_ANALYTICS_REPORTING_ENABLED": "false"},
            mounts=[volume("dockyard-grafana-data", "/var/lib/grafana")], secrets=mounted,
            constraints=[on_node(args.server_node_id)], networks=[self.network.id, args.ingress_network_id])
        self.grafana_url = f"https://grafana.{settings.domain}/"
