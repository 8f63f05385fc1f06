"""Who may read Istio config over MCP: a client without a certificate (plaintext, or
TLS that asks for none: istiod's config sources can be no other) may; a client with a
certificate (mutual TLS) may only if its SPIFFE identity is in the root namespace (as
istiod's own ``apigen.go`` ``authorize``).  Any other stream asking a config type is
ended with PERMISSION_DENIED, while its Envoy types are served as ever."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig, load_tls
from registryd.model import Port, Service
from registryd.testing import AdsClient, DeltaAdsClient, MemoryAdapter
from registryd.xds.limits import config_denial
from registryd.xds.server import XdsServer
from registryd.xds.serving import LocalServing
from tests.support.certs import TlsFiles, issue_client, make_tls
from tests.support.harness import Harness, loopback_settings
from tests.support.turns import until
from tests.xds.test_limits import refusal

API = {"GENERATOR": "api"}
SE = "networking.istio.io/v1/ServiceEntry"
ROOT = "istio-system"
ISTIOD_ID = "spiffe://cluster.local/ns/istio-system/sa/istiod"
SLEEP_ID = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def identities(certs: TlsFiles) -> dict[str, tuple[Path, Path]]:
    """Client certificates (cert, key) by SPIFFE id."""
    return {
        ISTIOD_ID: issue_client(certs, "istiod", ISTIOD_ID),
        SLEEP_ID: issue_client(certs, "sleep", SLEEP_ID),
    }


@asynccontextmanager
async def started(certs: TlsFiles, *, client_ca: bool) -> AsyncIterator[Harness]:
    tls = load_tls(
        str(certs.server_cert), str(certs.server_key), str(certs.ca) if client_ca else None
    )
    registries = (RegistryConfig(name="mem", type="memory", settings={}),)
    app = App(loopback_settings(registries=registries, tls=tls, root_namespace=ROOT))
    memory = app._adapters[0][1]
    assert isinstance(memory, MemoryAdapter)
    await app.start()
    harness = Harness(app, memory)
    try:
        await until(lambda: memory.watches > 0)  # changes made before are not settled
        memory.set([Service(hostname="a.example", ports=(Port(number=80, name="http"),))])
        await harness.settle()
        yield harness
    finally:
        await app.stop()


@pytest.fixture
async def mtls(certs: TlsFiles) -> AsyncIterator[Harness]:
    """registryd with --secureGRPCAddr asking client certificates of the test CA."""
    async with started(certs, client_ca=True) as harness:
        yield harness


@pytest.fixture
async def server_tls(certs: TlsFiles) -> AsyncIterator[Harness]:
    """registryd with --secureGRPCAddr and no client CA: TLS without client certificates."""
    async with started(certs, client_ca=False) as harness:
        yield harness


def xds(harness: Harness) -> XdsServer:
    """The xDS server of ``harness`` (which serves xDS in its own process)."""
    serving = harness.app.serving
    assert isinstance(serving, LocalServing)
    return serving.xds


def secure(harness: Harness) -> str:
    return f"127.0.0.1:{harness.app.secure_grpc_port}"


def as_identity(
    certs: TlsFiles, identity: tuple[Path, Path] | None = None
) -> grpc.ChannelCredentials:
    cert, key = identity or (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def test_a_root_namespace_identity_gets_service_entries(
    mtls: Harness, certs: TlsFiles, identities: dict[str, tuple[Path, Path]]
) -> None:
    credentials = as_identity(certs, identities[ISTIOD_ID])
    async with AdsClient(secure(mtls), metadata=API, credentials=credentials) as client:
        client.subscribe(SE)
        assert (await client.next(SE)).names == ["default/a.example"]
    assert xds(mtls).refused == 0


@pytest.mark.parametrize("protocol", [AdsClient, DeltaAdsClient])
async def test_an_identity_outside_the_root_namespace_is_denied_config_types(
    mtls: Harness,
    certs: TlsFiles,
    identities: dict[str, tuple[Path, Path]],
    protocol: type[AdsClient] | type[DeltaAdsClient],
) -> None:
    credentials = as_identity(certs, identities[SLEEP_ID])
    client = protocol(secure(mtls), metadata=API, credentials=credentials, auto_ack=False)
    await client.connect()
    client.subscribe(SE)
    error = await refusal(client)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    details = error.details() or ""
    assert f"only to the root namespace '{ROOT}'" in details and SLEEP_ID in details
    assert xds(mtls).refused == 1


async def test_an_identity_outside_the_root_namespace_still_gets_clusters(
    mtls: Harness, certs: TlsFiles, identities: dict[str, tuple[Path, Path]]
) -> None:
    credentials = as_identity(certs, identities[SLEEP_ID])
    async with AdsClient(secure(mtls), credentials=credentials) as client:
        client.subscribe("cds")
        assert (await client.next("cds")).registry_names == ["outbound|80||a.example"]


async def test_a_certificate_without_a_spiffe_identity_is_denied_config_types(
    mtls: Harness, certs: TlsFiles
) -> None:
    credentials = as_identity(certs, (certs.client_cert, certs.client_key))  # CN only
    client = AdsClient(secure(mtls), metadata=API, credentials=credentials, auto_ack=False)
    await client.connect()
    client.subscribe(SE)
    error = await refusal(client)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "need a client certificate with a SPIFFE identity" in (error.details() or "")


async def test_tls_without_client_certificates_is_served_config_types(
    server_tls: Harness, certs: TlsFiles
) -> None:
    # istiod's config sources speak plaintext or server-only TLS: such a client has no
    # identity to check, as on the plaintext port
    async with AdsClient(
        secure(server_tls), metadata=API, credentials=as_identity(certs)
    ) as client:
        client.subscribe(SE)
        assert (await client.next(SE)).names == ["default/a.example"]
    assert xds(server_tls).refused == 0


async def test_plaintext_streams_are_served_config_types(mtls: Harness) -> None:
    async with AdsClient(mtls.target, metadata=API) as client:
        client.subscribe(SE)
        assert (await client.next(SE)).names == ["default/a.example"]
    assert xds(mtls).refused == 0


def ssl(spiffe: bytes | None = None, *, certificate: bool = True) -> dict[str, list[bytes]]:
    """An ``auth_context()`` of a TLS stream: with a client certificate (with that SPIFFE
    id, if any) or, ``certificate`` False, without one."""
    auth = {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]}
    if certificate:
        auth["x509_pem_cert"] = [b"-----BEGIN CERTIFICATE-----\n..."]
    if spiffe is not None:
        auth["peer_spiffe_id"] = [spiffe]
    return auth


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]},
        ssl(certificate=False),
        ssl(b"spiffe://cluster.local/ns/istio-system/sa/istiod"),
        ssl(b"spiffe://other-domain/ns/istio-system/sa/anything"),
    ],
)
def test_config_denial_allows_unauthenticated_and_root_namespace_clients(
    auth: dict[str, list[bytes]],
) -> None:
    assert config_denial(auth, ROOT) == ""


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (ssl(), "need a client certificate with a SPIFFE identity in the root namespace"),
        (
            ssl(b"spiffe://cluster.local/ns/default/sa/sleep"),
            "not to spiffe://cluster.local/ns/default/sa/sleep",
        ),
        (ssl(b"spiffe://cluster.local/ns/istio-systemx/sa/x"), "not to spiffe://"),
        (ssl(b"spiffe://cluster.local/ns/istio-system"), "need a client certificate"),
        (ssl(b"spiffe://cluster.local/sa/istio-system/ns/x"), "need a client certificate"),
        (ssl(b"https://cluster.local/ns/istio-system/sa/istiod"), "need a client certificate"),
        (ssl(b"istio-system"), "need a client certificate"),
        (ssl(b""), "need a client certificate"),
        (ssl(b"spiffe://\xff\xfe/ns/default/sa/x"), "not to spiffe://"),
    ],
)
def test_config_denial_refuses_other_client_certificates(
    auth: dict[str, list[bytes]], reason: str
) -> None:
    denial = config_denial(auth, ROOT)
    assert reason in denial
    assert f"'{ROOT}'" in denial


def test_config_denial_follows_the_root_namespace() -> None:
    auth = ssl(b"spiffe://cluster.local/ns/mesh-root/sa/istiod")
    assert config_denial(auth, "mesh-root") == ""
    assert "not to spiffe://cluster.local/ns/mesh-root/sa/istiod" in config_denial(auth, ROOT)
