"""Test certificates made with the ``openssl`` command: a CA, a server certificate for
127.0.0.1/localhost and a client certificate it signs (for TLS and mutual-TLS tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["TlsFiles", "issue_client", "issue_server", "make_tls", "missing", "openssl", "require"]


def missing(reason: str) -> NoReturn:
    """Skip the test for want of ``reason``'s part; under ``CI`` (where ``.ci/run``
    installs every part) fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure)")
    pytest.skip(reason)


def require(tool: str, hint: str) -> str:
    """The path of ``tool``; skip the test without it (fail under ``CI``)."""
    found = shutil.which(tool)
    if found is None:
        missing(f"no {tool!r} on PATH: {hint}")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str | Path) -> None:
    """Run ``openssl`` with ``args`` (it must succeed within 30 s)."""
    subprocess.run(
        [require("openssl", "install openssl"), *map(str, args)],
        check=True,
        capture_output=True,
        timeout=30,
    )


_NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes".split()


def _issue(directory: Path, name: str, subject: str, extensions: str, ca: Path) -> None:
    key, csr, ext = (directory / f"{name}.key", directory / f"{name}.csr", directory / "ext")
    openssl("req", "-new", *_NEW_KEY, "-keyout", key, "-out", csr, "-subj", subject)
    ext.write_text(extensions)
    signed = ("-CA", ca, "-CAkey", directory / "ca.key", "-CAcreateserial", "-days", "2")
    out = directory / f"{name}.crt"
    openssl("x509", "-req", "-in", csr, *signed, "-sha256", "-extfile", ext, "-out", out)


def make_tls(directory: Path) -> TlsFiles:
    """A fresh CA and the certificates it signs, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "ca.crt"
    ca_extensions = (
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-x509", *_NEW_KEY, "-keyout", directory / "ca.key", "-out", ca,
        "-days", "2", "-subj", "/CN=registryd-test-ca", *ca_extensions,
    )  # fmt: skip
    usage = "keyUsage=critical,digitalSignature,keyEncipherment\n"
    _issue(
        directory,
        "server",
        "/CN=test-server",
        f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n{usage}",
        ca,
    )
    _issue(directory, "client", "/CN=registryd", f"extendedKeyUsage=clientAuth\n{usage}", ca)
    return TlsFiles(
        ca=ca,
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


def issue_server(tls: TlsFiles, name: str) -> tuple[Path, Path]:
    """A server certificate for DNS name ``name`` signed by ``tls``'s CA: (cert, key)."""
    directory = tls.ca.parent
    usage = "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    _issue(directory, name, f"/CN={name}", f"subjectAltName=DNS:{name}\n{usage}", tls.ca)
    return directory / f"{name}.crt", directory / f"{name}.key"


def issue_client(tls: TlsFiles, name: str, uri: str) -> tuple[Path, Path]:
    """A client certificate whose identity is the URI SAN ``uri`` (a SPIFFE id such as
    ``spiffe://cluster.local/ns/istio-system/sa/istiod``), signed by ``tls``'s CA."""
    directory = tls.ca.parent
    usage = "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    _issue(directory, name, f"/CN={name}", f"subjectAltName=URI:{uri}\n{usage}", tls.ca)
    return directory / f"{name}.crt", directory / f"{name}.key"
