"""tools/ingress_bench.py on this machine's loopback: the measurement of the routing mesh
(thesis 7.3) counts what it sends, what fails, and keeps connections only when asked."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import ingress_bench


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps a connection open when the client asks
    connections: set = set()
    paths: list = []

    def do_GET(self):
        _App.connections.add(self.client_address)
        _App.paths.append(self.path)
        body = b"dockyard web\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def app():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _App.connections = set()
    yield ingress_bench.Target("direct", f"http://app.test:{server.server_port}/", "127.0.0.1")
    server.shutdown()


def test_a_path_is_measured_at_the_rate_asked_and_every_answer_counts(app):
    (result,) = ingress_bench.measure([app], None, rate=20, seconds=1, clients=2)
    assert result["failed"] == 0 and result["median_ms"] > 0 and result["p95_ms"] >= result["median_ms"]
    assert result["sent"] >= 20 and result["requests_per_s"] > 0 and result["kept_alive_requests_per_s"] > 0
    table = ingress_bench.table([result, {**result, "path": "other"}])
    assert "median latency at 20 req/s" in table and table.count("| 1.00 |") == 6


def test_kept_alive_clients_reuse_their_connection_and_the_others_do_not(app):
    ingress_bench.throughput(app, None, clients=1, seconds=0.5, keep_alive=True)
    kept = len(_App.connections)
    _App.connections = set()
    fresh = ingress_bench.throughput(app, None, clients=1, seconds=0.5)
    assert kept == 1 and len(_App.connections) == fresh["ok"] > 1


def test_a_request_carries_the_urls_query(app):
    """The e2e asks Prometheus' API through the ingress with a query string."""
    _App.paths = []
    status, _ = ingress_bench.fetch(ingress_bench.Target("api", app.url + "api/v1/query?query=up%7Bjob%3D%22x%22%7D",
                                                         app.address))
    assert status == 200 and _App.paths == ["/api/v1/query?query=up%7Bjob%3D%22x%22%7D"]


def test_a_path_that_refuses_counts_every_request_as_failed():
    closed = ingress_bench.Target("closed", "http://127.0.0.1:9/")
    result = ingress_bench.latency_at_rate(closed, None, rate=10, seconds=0.5)
    assert result["sent"] == 5 and result["failed"] == 5 and result["median_ms"] is None


def test_a_name_is_asked_for_at_the_address_given():
    target = ingress_bench.Target.parse("traefik=https://bench.e2e.dockyard.internal/@10.233.0.12")
    assert (target.label, target.url, target.address) == ("traefik", "https://bench.e2e.dockyard.internal/",
                                                          "10.233.0.12")
