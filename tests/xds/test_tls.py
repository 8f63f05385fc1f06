"""xDS over TLS on --secureGRPCAddr: server TLS, mutual TLS, and the flags' errors."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from registryd.adapter import ConfigError
from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig, load_tls
from registryd.model import Port, Service
from registryd.testing import AdsClient, MemoryAdapter
from registryd.tools import cli
from registryd.xds.addresses import TlsFiles
from tests.support.certs import TlsFiles as CertFiles
from tests.support.certs import make_tls
from tests.support.harness import loopback_settings


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


async def running(tls: TlsFiles) -> App:
    registries = (RegistryConfig(name="mem", type="memory", settings={}),)
    app = App(loopback_settings(registries=registries, tls=tls))
    await app.start()
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    memory.set([Service(hostname="a.example", ports=(Port(number=80, name="http"),))])
    for _ in range(5):
        await asyncio.sleep(0)
    app.push.push_now()
    return app


@pytest.fixture
async def mtls_app(certs: CertFiles) -> AsyncIterator[App]:
    tls = load_tls(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    assert tls is not None
    app = await running(tls)
    yield app
    await app.stop()


async def clusters(
    target: str, credentials: grpc.ChannelCredentials | None, timeout: float = 5.0
) -> list[str]:
    async with AdsClient(target, credentials=credentials) as client:
        client.subscribe("cds")
        return (await client.next("cds", timeout=timeout)).registry_names


def credentials(certs: CertFiles, *, client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes() if client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if client_cert else None,
    )


async def test_server_tls_serves_xds_next_to_plaintext(certs: CertFiles) -> None:
    tls = load_tls(str(certs.server_cert), str(certs.server_key), None)
    assert tls is not None and tls.client_ca is None
    app = await running(tls)
    try:
        secure = f"127.0.0.1:{app.secure_grpc_port}"
        assert app.secure_grpc_port not in (0, app.grpc_port)
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        assert await clusters(secure, creds) == ["outbound|80||a.example"]
        plain = f"127.0.0.1:{app.grpc_port}"
        assert await clusters(plain, None) == ["outbound|80||a.example"]
        with pytest.raises((grpc.aio.AioRpcError, TimeoutError)):
            await clusters(secure, None, timeout=1)  # plaintext to the TLS port gets nothing
    finally:
        await app.stop()


async def test_mutual_tls_requires_a_client_certificate(mtls_app: App, certs: CertFiles) -> None:
    secure = f"127.0.0.1:{mtls_app.secure_grpc_port}"
    with_cert = credentials(certs, client_cert=True)
    assert await clusters(secure, with_cert) == ["outbound|80||a.example"]
    with pytest.raises((grpc.aio.AioRpcError, TimeoutError)):
        await clusters(secure, credentials(certs, client_cert=False), timeout=1)


def test_no_certificate_means_no_secure_port() -> None:
    settings = cli.parse_args(["discovery"])
    assert settings.tls is None
    assert (settings.secure_grpc_addr.host, settings.secure_grpc_addr.port) == ("0.0.0.0", 15012)


def test_tls_flag_errors_are_one_line_config_errors(tmp_path: Path, certs: CertFiles) -> None:
    cert, key = str(certs.server_cert), str(certs.server_key)
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    cases = [
        ([f"--tlsCertFile={cert}"], "go together"),
        ([f"--caCertFile={certs.ca}"], "--caCertFile needs"),
        ([f"--tlsCertFile={tmp_path / 'missing'}", f"--tlsKeyFile={key}"], "cannot read"),
        ([f"--tlsCertFile={not_pem}", f"--tlsKeyFile={key}"], "not a PEM file"),
        (
            [f"--tlsCertFile={cert}", f"--tlsKeyFile={certs.client_key}"],
            "is not the private key of --tlsCertFile",
        ),
        (["--grpcAddr=off"], "--grpcAddr off needs --tlsCertFile"),
    ]
    for flags, message in cases:
        with pytest.raises(ConfigError, match=message):
            cli.parse_args(["discovery", *flags])
    settings = cli.parse_args(
        ["discovery", f"--tlsCertFile={cert}", f"--tlsKeyFile={key}", "--secureGRPCAddr=:15999"]
    )
    assert settings.tls is not None and settings.secure_grpc_addr.port == 15999


def test_an_encrypted_key_is_named(tmp_path: Path, certs: CertFiles) -> None:
    encrypted = tmp_path / "enc.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs.server_key), "-aes128", "-passout", "pass:x"],
        check=True,
        stdout=encrypted.open("wb"),
    )
    with pytest.raises(ConfigError, match="the key is encrypted"):
        cli.parse_args(
            ["discovery", f"--tlsCertFile={certs.server_cert}", f"--tlsKeyFile={encrypted}"]
        )


@pytest.mark.parametrize("off", ["off", "", "OFF"])
async def test_plaintext_xds_can_be_turned_off(certs: CertFiles, off: str) -> None:
    settings = cli.parse_args(
        [
            "discovery",
            f"--grpcAddr={off}",
            "--secureGRPCAddr=127.0.0.1:0",
            "--httpAddr=127.0.0.1:0",
            "--monitoringAddr=127.0.0.1:0",
            f"--tlsCertFile={certs.server_cert}",
            f"--tlsKeyFile={certs.server_key}",
        ]
    )
    assert settings.grpc_addr is None
    app = App(settings)
    await app.start()
    try:
        assert app.grpc_port == 0 and app.secure_grpc_port > 0
        roots = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        assert await clusters(f"127.0.0.1:{app.secure_grpc_port}", roots) == []
    finally:
        await app.stop()
