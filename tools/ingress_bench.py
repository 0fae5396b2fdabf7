"""The thesis's routing-mesh measurement (7.3), as ratios from one run: the same app reached
directly on its task, through the swarm's routing mesh, and through traefik.

Each path gets the same load: an open loop at RATE requests per second for SECONDS, each on
a new connection (the latency a user sees at that load), then a closed loop of CLIENTS
concurrent clients for SECONDS, first with a new connection per request (as a browser's
first request: traefik's figures include its TLS handshake), then with connections kept
alive (traefik's forwarding alone; the app itself closes every connection). RATE must stay
below what every path sustains, or the latency measured is the queue's.

    python3 tools/ingress_bench.py --target direct=http://10.233.0.13:8090/ \\
        --target mesh=http://10.233.0.12:8091/ \\
        --target traefik=https://bench.e2e.dockyard.internal/@10.233.0.12 --ca ca.pem

(`URL@ADDRESS`: connect to ADDRESS, ask for the URL's name, as DNS would.) Prints one JSON
object per path, then a Markdown table with the ratios to the first path."""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    address: Optional[str] = None  # connect here instead of resolving the URL's host

    @classmethod
    def parse(cls, text: str) -> "Target":
        label, _, rest = text.partition("=")
        url, _, address = rest.partition("@")
        return cls(label, url, address or None)


class _Connection(http.client.HTTPSConnection):
    """HTTPS to a given address with the URL's name for SNI and the certificate check."""

    def __init__(self, address: str, host: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def connection(target: Target, context: Optional[ssl.SSLContext] = None,
               timeout: float = 10) -> http.client.HTTPConnection:
    """A connection to the target, opened by its first request (and again after a close)."""
    parts = urlsplit(target.url)
    address = target.address or parts.hostname
    if parts.scheme == "https":
        return _Connection(address, parts.hostname, parts.port or 443, context or ssl.create_default_context(), timeout)
    return http.client.HTTPConnection(address, parts.port or 80, timeout=timeout)


def request(conn: http.client.HTTPConnection, target: Target, keep_alive: bool = False,
            headers: Optional[dict] = None) -> tuple[int, bytes]:
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", path, headers={"Host": parts.netloc,
                                                     "Connection": "keep-alive" if keep_alive else "close",
                                                     **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


def fetch(target: Target, context: Optional[ssl.SSLContext] = None, timeout: float = 10,
          headers: Optional[dict] = None) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = connection(target, context, timeout)
    try:
        return request(conn, target, headers=headers)
    finally:
        conn.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_at_rate(target: Target, context, rate: float, seconds: float) -> dict:
    """An open loop: a request every 1/rate s, each on its own thread, whatever the answers."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        start = time.perf_counter()
        try:
            status, _ = fetch(target, context)
            ok, why = status == 200, f"HTTP {status}"
        except OSError as error:
            ok, why = False, str(error)
        with lock:
            (latencies.append(time.perf_counter() - start) if ok else failures.append(why))

    threads = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return {"sent": len(threads), "failed": len(failures), "errors": failures[:3],
            "median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1) if latencies else None}


def throughput(target: Target, context, clients: int, seconds: float, keep_alive: bool = False) -> dict:
    """A closed loop: `clients` clients, each sending its next request when its last is
    answered; with keep_alive each keeps its connection while the server does (traefik
    does; busybox httpd closes after each answer)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = connection(target, context)
        while time.perf_counter() < deadline:
            try:
                ok = request(conn, target, keep_alive)[0] == 200
            except (OSError, http.client.HTTPException):
                ok = False
            if not (ok and keep_alive):
                conn.close()
            with lock:
                counts["ok" if ok else "failed"] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {"requests_per_s": round(counts["ok"] / elapsed, 1), **counts}


def measure(targets: list[Target], context, rate: float = 10, seconds: float = 10, clients: int = 8) -> list[dict]:
    results = []
    for target in targets:
        fetch(target, context)  # warm: the first request of a path pays for nothing else's
        latency = latency_at_rate(target, context, rate, seconds)
        fresh = throughput(target, context, clients, seconds)
        kept = throughput(target, context, clients, seconds, keep_alive=True)
        results.append({"path": target.label, "rate": rate, **latency,
                        "requests_per_s": fresh["requests_per_s"], "kept_alive_requests_per_s": kept["requests_per_s"],
                        "failed": latency["failed"] + fresh["failed"] + kept["failed"],
                        "sent": latency["sent"] + fresh["ok"] + fresh["failed"] + kept["ok"] + kept["failed"]})
    return results


def table(results: list[dict]) -> str:
    base = results[0]
    rate = base["rate"]
    lines = [f"| path | median latency at {rate:g} req/s | p95 | latency / {base['path']} | throughput, a connection "
             f"per request | / {base['path']} | throughput, kept-alive connections | / {base['path']} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['path']} | {r['median_ms']} ms | {r['p95_ms']} ms | "
                     f"{r['median_ms'] / base['median_ms']:.2f} | {r['requests_per_s']} req/s | "
                     f"{r['requests_per_s'] / base['requests_per_s']:.2f} | {r['kept_alive_requests_per_s']} req/s | "
                     f"{r['kept_alive_requests_per_s'] / base['kept_alive_requests_per_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", required=True, type=Target.parse, help="LABEL=URL[@ADDRESS]")
    parser.add_argument("--ca", help="the CA bundle HTTPS targets are checked against")
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca)
    results = measure(args.target, context, args.rate, args.seconds, args.clients)
    for result in results:
        print(json.dumps(result))
    print(table(results))


if __name__ == "__main__":
    main()
