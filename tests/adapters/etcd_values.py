"""etcd keys and values as the tests write them."""

from __future__ import annotations

import json
from typing import Any

from registryd.adapters.etcd.parse import (
    DEFAULT_PREFIX,
    Options,
    parse_entry,
)

PREFIX = DEFAULT_PREFIX


OPTIONS = Options()


def key(service: str, instance: str = "i-1", prefix: str = PREFIX) -> bytes:
    return f"{prefix}{service}/{instance}".encode()


def value(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def rich(address: str = "10.0.0.1", port: int = 8080, **fields: Any) -> bytes:
    return value(address=address, port=port, **fields)


def naming(addr: Any, **fields: Any) -> bytes:
    return value(Addr=addr, **fields)


def instance(name: str, raw: bytes, service: str = "web") -> Any:
    return parse_entry(key(service, name), raw, OPTIONS)
