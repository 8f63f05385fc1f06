"""What the fuzz suite feeds to the registry clients: hostile answer bodies, read as the
clients read them.

Each target takes a body (bytes or text: random JSON of the right and the wrong shapes,
nesting hundreds deep, arrays of thousands of ``{}``, broken JSON, random bytes), parses
it with the bounded JSON reader (:func:`registryd.adapter.parse_json`) within
:data:`LIMITS`, then hands the value to what the Nacos, Consul or Kubernetes client
hands it to.  The property (see :mod:`tests.fuzz.targets`): a result, or the module's
own validation error; never another exception, and never a value over the limits.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from registryd.adapter import JsonLimits, parse_json
from registryd.adapters.consul import client as consul_client
from registryd.adapters.consul import parse as consul
from registryd.adapters.consul.faults import ConsulError
from registryd.adapters.kubernetes import parse as kubernetes
from registryd.adapters.kubernetes.client import list_page
from registryd.adapters.nacos import adapter as nacos_adapter
from registryd.adapters.nacos import convert as nacos
from registryd.adapters.nacos.client import QueryError, service_page
from registryd.jsonbound import depth
from tests.fuzz.targets import (
    _CONSUL_ENTRY,
    _CONSUL_OPTIONS,
    _KUBE_OBJECT,
    _NACOS_LIST,
    Target,
    _values,
)

__all__ = ["LIMITS", "TARGETS"]

LIMITS = JsonLimits(max_bytes=64 * 2**10)  # small, so that huge bodies are quick to make


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def _nested(opener: str, closer: str) -> st.SearchStrategy[str]:
    return st.integers(1, 300).map(lambda n: opener * n + "1" + closer * n)


_hostile = st.one_of(
    _nested("[", "]"),
    _nested('{"a":', "}"),
    _nested('[{"hosts":', "}]"),
    st.integers(0, 40_000).map(lambda n: "[" + "{}," * n + "{}]"),  # up to 120 KB
    st.integers(0, 40_000).map(lambda n: '{"hosts":[' + "[]," * n + "[]]}"),
    st.integers(0, 5_000).map(lambda n: '{"a":"' + "[{" * n + '"}'),  # brackets in a string
    st.lists(st.sampled_from(['{"a":', "[", "]", "}", '"x"', "1", ",", ":", "\\", '"'])).map(
        "".join
    ),
    st.text(max_size=200),
    st.binary(max_size=200),
)


def _bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | str]:
    """Bodies of the right shape, of any JSON, and hostile ones; as bytes or text."""
    texts = st.one_of(shaped.map(_dumps), _values.map(_dumps), _hostile)
    return texts | texts.map(lambda t: t.encode() if isinstance(t, str) else t)


def _bounded(body: bytes | str) -> Any:
    """The value of ``body`` as every client parses it; checks it is within LIMITS."""
    value = parse_json(body, LIMITS)
    assert depth(value, LIMITS.max_depth) <= LIMITS.max_depth
    return value


# -- Nacos -------------------------------------------------------------------------------


def _nacos_object(body: bytes | str) -> Any:
    value = _bounded(body)
    if not isinstance(value, dict):  # NacosClient.get
        raise QueryError("not a JSON object")
    return value


def _nacos_instances(body: bytes | str) -> object:
    """As the adapter reads one service's answer: its signature, then its conversion."""
    document = _nacos_object(body)
    nacos_adapter.signature(document)
    return nacos.convert_service(
        document, host="orders.default-group.public.nacos", namespace="public"
    )


def _nacos_page(body: bytes | str) -> object:
    return service_page(_nacos_object(body))


_NACOS_PAGE = st.fixed_dictionaries(
    {}, optional={"doms": st.lists(st.text(max_size=10), max_size=5) | _values, "count": _values}
)

# -- Consul ------------------------------------------------------------------------------


class _Response:
    """The reply py-consul's callback sees (``consul.base.Response``'s fields)."""

    def __init__(self, body: str) -> None:
        self.code = 200
        self.headers = {"X-Consul-Index": "7"}
        self.body = body


def _consul_reply(body: bytes | str) -> Any:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return consul_client.decode(_Response(text), LIMITS).data


def _consul_health(body: bytes | str) -> object:
    entries = consul.health_entries(_consul_reply(body))
    for entry in entries:
        try:
            consul.convert_entry(entry, service="web", datacenter="dc1", options=_CONSUL_OPTIONS)
        except consul.EntryError:
            pass  # that entry is skipped: the others are still read
    return entries


def _consul_catalog(body: bytes | str) -> object:
    return consul.catalog_names(_consul_reply(body))


# -- Kubernetes --------------------------------------------------------------------------


def _kube_list(body: bytes | str) -> object:
    page = list_page(_bounded(body))
    for item in page.get("items") or []:
        try:
            kubernetes.parse_service(item)
        except kubernetes.ObjectError:
            pass  # that object is skipped: the others are still read
    return page


def _kube_event(body: bytes | str) -> object:
    event = _bounded(body)
    if not isinstance(event, dict):  # Api.watch
        raise ValueError("not an event")
    return kubernetes.parse_slice(event.get("object"))


_KUBE_PAGE = st.fixed_dictionaries(
    {}, optional={"items": st.lists(_KUBE_OBJECT, max_size=3) | _values, "metadata": _values}
)
_KUBE_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]) | _values},
    optional={"object": _KUBE_OBJECT | _values},
)

TARGETS: tuple[Target, ...] = (
    Target("registries.parse_json", _bodies(_values), _bounded, (ValueError,)),
    Target(
        "registries.nacos_instances",
        _bodies(_NACOS_LIST),
        _nacos_instances,
        (QueryError, ValueError),
    ),
    Target(
        "registries.nacos_service_page", _bodies(_NACOS_PAGE), _nacos_page, (QueryError, ValueError)
    ),
    Target(
        "registries.consul_health",
        _bodies(st.lists(_CONSUL_ENTRY, max_size=3)),
        _consul_health,
        (ConsulError, ValueError),
    ),
    Target(
        "registries.consul_catalog",
        _bodies(st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=5)))),
        _consul_catalog,
        (ConsulError, ValueError),
    ),
    Target("registries.kubernetes_list", _bodies(_KUBE_PAGE), _kube_list, (ValueError,)),
    Target("registries.kubernetes_event", _bodies(_KUBE_EVENT), _kube_event, (ValueError,)),
)
