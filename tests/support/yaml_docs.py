"""YAML text builders shared by the ServiceEntry adapter tests."""

from __future__ import annotations


def entry(host: str, *addresses: str) -> str:
    """A STATIC ServiceEntry for ``host`` on port 8080 with the given endpoint addresses."""
    endpoints = "".join(f"\n  - address: {a}" for a in addresses) or " []"
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        f"metadata: {{name: {host.split('.')[0]}, namespace: test}}\n"
        f"spec:\n  hosts: [{host}]\n  resolution: STATIC\n"
        "  ports: [{number: 8080, name: http, protocol: HTTP}]\n"
        f"  endpoints:{endpoints}\n"
    )
