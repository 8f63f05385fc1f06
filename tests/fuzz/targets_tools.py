"""What the fuzz suite feeds to the command-line tools' parsers (see
:mod:`tests.fuzz.targets` for the property and the style).

* The proxy tools' answers: an answer's head (:func:`registryd.tools.debugclient.parse_head`,
  :func:`~registryd.tools.debugclient.body_length`) and the bodies of ``/debug/syncz`` and
  ``/debug/config_dump`` through the pure functions that turn them into every output of
  ``proxy-status`` and ``proxy-config``; only
  :class:`~registryd.tools.debugclient.BadAnswer` may come out.
* registryd.yaml: YAML text and documents shaped like a registry list through
  :func:`registryd.daemon.config.parse_registries`; only ConfigError may come out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from registryd.adapter import ConfigError
from registryd.daemon.config import parse_registries
from registryd.tools import proxyconfig
from registryd.tools.debugclient import Answer, BadAnswer, body_length, parse_head
from registryd.tools.proxystatus import (
    config_output,
    detail_output,
    dump_document,
    find_proxy,
    status_output,
    syncz_entries,
)
from tests.fuzz.targets import _YAML_BITS, Target, _shaped, _values

__all__ = ["TARGETS"]

SERVER = "http://127.0.0.1:8080"


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


_json_junk = (
    st.binary(max_size=200)
    | st.lists(
        st.sampled_from(["[", "]", "{", "}", '"a":', ",", "1", "1e999", "-", '"\\ud800"', "null"]),
        max_size=60,
    )
    .map("".join)
    .map(str.encode)
    | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
)

# -- an answer's head --------------------------------------------------------------------

_HEAD_BITS = [
    "HTTP/1.1 200 OK",
    "HTTP/1.0 404 Not Found",
    "Content-Length: 12",
    "Content-Length: 1, 2",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "X-A: b",
    "x-a:c",
    " folded",
    ":",
    "\r",
    "\x00",
]
_head_line = (st.sampled_from(_HEAD_BITS) | st.text(max_size=40)).map(
    lambda s: s.encode("utf-8", "surrogatepass") + b"\r\n"
) | st.binary(max_size=60)
_head = st.tuples(_head_line, st.lists(_head_line, max_size=8))


def _answer_head(head: tuple[bytes, list[bytes]]) -> object:
    _, headers = parse_head(*head)
    return body_length(headers, limit=1 << 20)


# -- /debug/syncz ------------------------------------------------------------------------

_TYPE_STATE = _shaped(
    {
        f: []
        for f in (
            "versionSent",
            "nonceSent",
            "versionAcked",
            "acked",
            "nacked",
            "nackedVersion",
            "lastNack",
            "acks",
            "nacks",
        )
    }
)
_VERSIONS = st.sampled_from(["", "p-1", "p-2@ns", "p-" + "9" * 5000, "-", "p-x"])
_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "proxyID": st.sampled_from(["sidecar~1.2.3.4~a.b~b.svc", "a", "~~~"]) | _values,
        "connectionID": _values,
        "type": st.sampled_from(["sotw", "delta"]) | _values,
        "types": st.dictionaries(
            st.sampled_from(["cds", "lds", "eds", "rds", "x"]),
            _TYPE_STATE
            | st.fixed_dictionaries({"versionSent": _VERSIONS, "nonceSent": _values})
            | _values,
            max_size=4,
        )
        | _values,
    },
)
_syncz_body = st.lists(_ENTRY | _values, max_size=4).map(_json_bytes) | _json_junk


def _syncz(body: bytes) -> object:
    entries = syncz_entries(SERVER, Answer(200, body))
    found = [(SERVER, e) for e in entries]
    for output in ("table", "json"):
        status_output(found, output)
    for server, entry in found[:2]:
        find_proxy(str(entry.get("proxyID", "")), found)
        for output in ("table", "json"):
            detail_output([(server, entry, {})], output)
    return found


# -- /debug/config_dump ------------------------------------------------------------------

_SECTION_TYPES = [
    "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
]
_RESOURCE = _shaped(
    {
        "name": [],
        "type": [],
        "cluster_type": ["name"],
        "cluster_name": [],
        "endpoints": [],
        "address": ["socket_address", "pipe"],
        "filter_chains": [],
        "default_filter_chain": ["filter_chain_match", "filters"],
        "api_listener": ["api_listener"],
        "virtual_hosts": [],
    }
)
_ENTRY_OF_DUMP = _shaped(
    {
        "version_info": [],
        "cluster": [],
        "endpoint_config": [],
        "route_config": [],
        "active_state": ["version_info", "listener"],
    }
) | st.fixed_dictionaries(
    {"version_info": _VERSIONS},
    optional={k: _RESOURCE for k in ("cluster", "endpoint_config", "route_config")},
)
_SECTION = st.fixed_dictionaries(
    {"@type": st.sampled_from(_SECTION_TYPES) | _values},
    optional={
        k: st.lists(_ENTRY_OF_DUMP | _values, max_size=3) | _values
        for k in (
            "dynamic_active_clusters",
            "dynamic_listeners",
            "dynamic_route_configs",
            "dynamic_endpoint_configs",
        )
    },
)
_dump_body = (
    st.fixed_dictionaries({"configs": st.lists(_SECTION | _values, max_size=4) | _values}).map(
        _json_bytes
    )
    | _values.map(_json_bytes)
    | _json_junk
)
_SYNCED = {
    "proxyID": "sidecar~1.2.3.4~a.b~b.svc",
    "connectionID": "c1",
    "types": {t: {"nonceSent": "1", "versionSent": "p-2", "acked": True} for t in ("cds", "lds")},
}


def _dump(body: bytes) -> object:
    dump = dump_document(Answer(200, body))
    assert dump is not None  # only a 404 is "the proxy left"
    for kind in proxyconfig.KINDS:
        for output in ("table", "json"):
            config_output(dump, kind, output)
    for output in ("table", "json"):
        detail_output([(SERVER, _SYNCED, dump)], output)
    return dump


# -- registryd.yaml ----------------------------------------------------------------------

_REGISTRY = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "mesh-1", "-bad", "x" * 64]) | _values,
        "type": st.sampled_from(["memory", "serviceentry", "consul", "kubernetes"]) | _values,
    },
    optional={
        "priority": st.integers() | st.sampled_from([True, 1.5, "1"]) | _values,
        "path": st.sampled_from(["dir", "~/x", "~nosuchuser/x", "a\0b", "/"]) | _values,
        "kubeconfig": _values,
        "ca_file": _values,
        "wait": _values,
        1: _values,
    },
)


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False)


_config_text = (
    st.fixed_dictionaries({"registries": st.lists(_REGISTRY | _values, max_size=4)}).map(_yaml_text)
    | st.dictionaries(_values.filter(lambda v: not isinstance(v, dict | list)), _values).map(
        _yaml_text
    )
    | st.text(max_size=300)
    | st.lists(st.sampled_from(_YAML_BITS) | st.text(max_size=8), max_size=40).map("".join)
    | st.integers(1, 3000).map(lambda n: "registries: " + "[" * n + "]" * n)
    | st.integers(4290, 4400).map(lambda n: f"registries: [{'9' * n}]")
    | st.integers(4290, 4400).map(lambda n: f"registries: [{{priority: {'9' * n}}}]")
)
_CONFIG = Path("/nonexistent/registryd-fuzz/registryd.yaml")


def _config(text: str) -> object:
    return parse_registries(text, _CONFIG)


TARGETS = (
    Target("tools.answer_head", _head, _answer_head, (BadAnswer,)),
    Target("tools.syncz_answer", _syncz_body, _syncz, (BadAnswer,)),
    Target("tools.config_dump_answer", _dump_body, _dump, (BadAnswer,)),
    Target("config.parse_registries", _config_text, _config, (ConfigError,)),
)
