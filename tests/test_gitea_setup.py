"""gitea-setup.sh against a stand-in for Gitea's API (a small HTTP server that answers as Gitea
1.22 does, JSON as Go writes it): Drone's OAuth2 application is made once and kept across
runs and restores, and replaced only when Gitea lost it or Drone moved."""
from __future__ import annotations

import base64
import json
import os
import re
import ssl
import stat
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.certs import Authority, make_authority
from tests.harness import script_command

PASSWORD = "s3cret-admin-password"
DRONE = "https://10.0.0.11:8000"

# `docker exec -u git gitea gitea admin user list --admin`: the admin is there
FAKE_DOCKER = """#!/bin/sh
printf 'ID   Username Email\\n1    dockyard dockyard@localhost\\n'
"""


class FakeGitea:
    """The endpoints gitea-setup.sh calls, with the applications it holds and what was asked."""

    def __init__(self, tls: Authority):
        self.apps: dict[int, dict] = {}
        self.next_id = 1
        self.calls: list[str] = []
        self.failing = False  # every API call answers 500, as a Gitea whose database is locked
        self.secrets_made = 0
        gitea = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body=None):
                data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorised(self) -> bool:
                expected = base64.b64encode(f"dockyard:{PASSWORD}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def handle_any(self):
                gitea.calls.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path == "/api/healthz":
                    return self.reply(200, {"status": "pass"})
                if self.path == "/login/oauth/access_token":
                    # as Gitea 1.22: the client and its secret are checked before the code
                    form = dict(urllib.parse.parse_qsl(raw.decode()))
                    app = next((a for a in gitea.apps.values() if a["client_id"] == form.get("client_id")), None)
                    if app is None:
                        return self.reply(400, {"error": "invalid_client", "error_description": "cannot load client"})
                    if app["client_secret"] != form.get("client_secret"):
                        return self.reply(400, {"error": "unauthorized_client",
                                                "error_description": "invalid client secret"})
                    return self.reply(400, {"error": "unauthorized_client",
                                            "error_description": "client is not authorized"})
                if gitea.failing and self.path.startswith("/api/v1/user/applications"):
                    return self.reply(500, {"message": "database is locked"})
                body = json.loads(raw) if raw else None
                if not self.authorised():
                    return self.reply(401, {"message": "unauthorized"})
                if self.path == "/api/v1/user":
                    return self.reply(200, {"id": 1, "login": "dockyard"})
                base = "/api/v1/user/applications/oauth2"
                found = re.fullmatch(base + r"/(\d+)", self.path)
                if self.path == base and self.command == "GET":
                    return self.reply(200, [gitea.public(a) for a in gitea.apps.values()])
                if self.path == base and self.command == "POST":
                    app = {"id": gitea.next_id, "name": body["name"], "client_id": f"client-{gitea.next_id}",
                           "client_secret": f"gto_secret_{gitea.next_id}", "confidential_client": True,
                           "redirect_uris": body["redirect_uris"], "created": "2026-11-23T10:00:00Z"}
                    gitea.next_id += 1
                    gitea.apps[app["id"]] = app
                    return self.reply(201, app)
                if found and int(found.group(1)) in gitea.apps:
                    if self.command == "GET":
                        return self.reply(200, gitea.public(gitea.apps[int(found.group(1))]))
                    if self.command == "DELETE":
                        del gitea.apps[int(found.group(1))]
                        return self.reply(204)
                    if self.command == "PATCH":
                        # as Gitea 1.22: the same application and client id, the new
                        # redirects, a new secret (its grants are kept)
                        app = gitea.apps[int(found.group(1))]
                        gitea.secrets_made += 1
                        app.update(name=body["name"], redirect_uris=body["redirect_uris"],
                                   client_secret=f"gto_secret_patched_{gitea.secrets_made}")
                        return self.reply(200, app)
                return self.reply(404, {"message": "not found"})

            do_GET = do_POST = do_DELETE = do_PATCH = handle_any

        # HTTPS only, as Gitea serves it, with a certificate for localhost
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://localhost:{self.server.server_address[1]}"
        self.ca = tls.ca

    @staticmethod
    def public(app: dict) -> dict:
        return {**app, "client_secret": ""}  # Gitea shows a secret only when it makes one


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def gitea(tls):
    fake = FakeGitea(tls)
    yield fake
    fake.server.shutdown()


@pytest.fixture
def ci_root(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    root = tmp_path / "srv-ci"
    root.mkdir()
    return root


def run_setup(gitea: FakeGitea, ci_root: Path, drone: str = DRONE, ca: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": f"{ci_root.parent / 'bin'}:{os.environ['PATH']}", "GITEA_CONTAINER": "gitea",
           "GITEA_URL": gitea.url, "CA_FILE": str(ca or gitea.ca), "ADMIN_USER": "dockyard",
           "ADMIN_EMAIL": "dockyard@localhost",
           "DRONE_URL": drone, "CI_ROOT": str(ci_root), "ADMIN_PASSWORD": PASSWORD}
    return subprocess.run(script_command("gitea-setup.sh"), env=env, capture_output=True, text=True, timeout=60)


def setup(gitea: FakeGitea, ci_root: Path, drone: str = DRONE) -> dict[str, str]:
    ran = run_setup(gitea, ci_root, drone)
    assert ran.returncode == 0, ran.stderr
    return dict(line.split("=", 1) for line in ran.stdout.splitlines())


def changes(gitea: FakeGitea) -> list[str]:
    """What was made, changed or deleted in Gitea (the secret's check at the token endpoint changes nothing)."""
    return [c for c in gitea.calls if c.startswith(("POST", "DELETE", "PATCH")) and "/login/oauth/" not in c]


def test_the_first_run_makes_the_application_and_keeps_its_credentials_where_only_root_reads(gitea, ci_root):
    printed = setup(gitea, ci_root)
    (app,) = gitea.apps.values()
    assert printed == {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    assert app["redirect_uris"] == [f"{DRONE}/login"]
    kept = ci_root / "secrets" / "drone_oauth"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert app["client_secret"] in kept.read_text()


def test_a_second_run_keeps_the_application_and_so_the_logins_drone_holds(gitea, ci_root):
    first = setup(gitea, ci_root)
    gitea.calls.clear()
    assert setup(gitea, ci_root) == first
    assert changes(gitea) == [], "nothing made or deleted in Gitea"
    assert len(gitea.apps) == 1


def test_drone_at_a_new_address_keeps_its_application_with_the_new_redirect(gitea, ci_root):
    """Drone moved, or went from http to https (a stack upgraded to TLS): the application
    stays, so Gitea keeps its grants (Drone's logins and the tokens its builds clone with);
    only its redirect and its secret are new."""
    first = setup(gitea, ci_root, drone="http://10.0.0.11:8000")
    gitea.calls.clear()
    moved = setup(gitea, ci_root, drone="https://10.0.0.99:8000")
    assert moved["client_id"] == first["client_id"] and moved["client_secret"] != first["client_secret"]
    assert changes(gitea) == ["PATCH /api/v1/user/applications/oauth2/1"], "nothing deleted"
    assert [a["redirect_uris"] for a in gitea.apps.values()] == [["https://10.0.0.99:8000/login"]]
    assert f"client_secret={moved['client_secret']}" in (ci_root / "secrets" / "drone_oauth").read_text()
    # and that one is kept from then on
    gitea.calls.clear()
    assert setup(gitea, ci_root, drone="https://10.0.0.99:8000") == moved and changes(gitea) == []


def test_credentials_kept_for_an_application_gitea_no_longer_has_are_replaced(gitea, ci_root):
    setup(gitea, ci_root)
    gitea.apps.clear()  # a Gitea database from before the kept file, or the application deleted by hand
    again = setup(gitea, ci_root)
    (app,) = gitea.apps.values()
    assert again == {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    assert app["client_secret"] in (ci_root / "secrets" / "drone_oauth").read_text()


def test_a_secret_regenerated_in_gitea_is_found_and_the_application_replaced(gitea, ci_root):
    setup(gitea, ci_root)
    gitea.apps[1]["client_secret"] = "gto_regenerated_in_the_ui"
    again = setup(gitea, ci_root)
    (app,) = gitea.apps.values()
    assert again == {"client_id": app["client_id"], "client_secret": app["client_secret"]} and app["id"] == 2


def test_gitea_failing_to_answer_stops_the_run_and_keeps_the_application(gitea, ci_root):
    setup(gitea, ci_root)
    gitea.failing = True
    gitea.calls.clear()
    ran = run_setup(gitea, ci_root)
    assert ran.returncode != 0 and "HTTP 500" in ran.stderr
    assert changes(gitea) == [] and list(gitea.apps) == [1], "no Drone user is logged out by a passing error"
    assert "gto_secret_1" in (ci_root / "secrets" / "drone_oauth").read_text()
    assert "gto_secret_1" not in ran.stderr + ran.stdout


def test_gitea_is_reached_over_tls_checked_against_the_stacks_ca_only(gitea, ci_root, tmp_path):
    """Passwords go to Gitea only once its certificate is the one the stack's CA signed."""
    stranger = make_authority(tmp_path / "stranger")
    refused = run_setup(gitea, ci_root, ca=stranger.ca)
    assert refused.returncode != 0 and "not signed by the stack's CA" in refused.stderr
    assert gitea.calls == [], "no call, the admin's password least of all"
    missing = run_setup(gitea, ci_root, ca=tmp_path / "none.crt")
    assert missing.returncode != 0 and "no CA certificate at" in missing.stderr
    assert set(setup(gitea, ci_root)) == {"client_id", "client_secret"}
