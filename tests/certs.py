"""A CA and a server certificate it signs, made with the openssl CLI: what the stack's
authority (pulumi-tls) makes, for tests of the scripts that serve or check them."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Authority:
    ca: Path      # the CA's certificate
    cert: Path    # the server's certificate
    key: Path     # the server's key


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_authority(where: Path, common_name: str = "localhost",
                   names: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1")) -> Authority:
    where.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=dockyard test CA", "-addext", "basicConstraints=critical,CA:TRUE", cwd=where)
    openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={common_name}",
            cwd=where)
    (where / "server.ext").write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=where)
    return Authority(where / "ca.crt", where / "server.crt", where / "server.key")
