"""A real Envoy fetching its configuration over mutual TLS (--secureGRPCAddr)."""

from __future__ import annotations

from tests.e2e.admin import Admin
from tests.e2e.checks import LOCAL, use_api, wait_answers
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.support.certs import make_tls
from tests.support.procs import Envoy, free_port, listener_port, render_bootstrap

HOST = "secure.example"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def test_envoy_over_mutual_tls_routes_traffic(stack: Stack, api_type: str) -> None:
    certs = make_tls(stack.workdir / "tls")
    backend = stack.http_backend("secure-backend")
    port = listener_port()
    write_entries(stack.config_dir / "s.yaml", service_entry(HOST, port, [(LOCAL, backend.port)]))
    secure_port = free_port()
    registryd = stack.start_registryd(
        f"--secureGRPCAddr=127.0.0.1:{secure_port}",
        f"--tlsCertFile={certs.server_cert}",
        f"--tlsKeyFile={certs.server_key}",
        f"--caCertFile={certs.ca}",
    )
    bootstrap = render_bootstrap(secure_port, free_port())
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds-grpc"]
    xds["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "sni": "localhost",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(certs.client_cert)},
                        "private_key": {"filename": str(certs.client_key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(certs.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}
                    ],
                },
            },
        },
    }
    use_api(api_type)(bootstrap)
    envoy = Envoy(bootstrap, stack.workdir)
    stack.track(envoy)
    envoy.wait_live()
    seen = wait_answers(port, HOST, {"secure-backend"}, details=stack.logs)
    assert set(seen) == {"secure-backend"}
    assert f"outbound|{port}||{HOST}" in Admin(envoy.admin_port).config().clusters
    assert "mutual TLS" in registryd.output()
