"""What one connected proxy gets from registryd, as Envoy's admin ``/config_dump``.

:func:`config_dump` renders an ``envoy.admin.v3.ConfigDump`` as JSON (a plain ``dict``,
``json.dumps``-able, snake_case field names like Envoy's admin output) for istiod-style
``GET /debug/config_dump?proxyID=...``.  The contract:

* It is registryd's side of the stream: the resources the connection is subscribed to
  as they are in ``snapshot`` (normally the newest), not what the proxy has accepted.
  The connection and the snapshot are only read.
* ``configs`` (always present, possibly empty) holds, in Envoy's order, a
  ``ClustersConfigDump``, ``ListenersConfigDump``, ``RoutesConfigDump`` and
  ``EndpointsConfigDump``, each only if the proxy subscribed to that type on this stream
  (present even when nothing matches).  The resources are all dynamic
  (``dynamic_active_clusters``, ``dynamic_listeners[].active_state``,
  ``dynamic_route_configs``, ``dynamic_endpoint_configs``), sorted by name.
* Which resources: a wildcard subscription gets every resource of the type the
  connection sees (its namespace overlay over the plain table, as served), a named one
  the subscribed names that exist (no empty placeholders for unknown EDS/RDS names).
* ``version_info`` of a resource is ``f"{version_prefix}-{resource.version}"``: the
  snapshot version in which its content last changed (on a Delta stream, the version the
  resource is sent with: ``@<namespace>`` added for a namespace's own variant).  The
  cluster and listener dumps' own ``version_info`` is the last version the proxy ACKed
  for the type, if any.
* A NACK of the version last sent for a type (nothing newer was sent since) puts an
  ``error_state`` (``UpdateFailureState``: ``details`` = the proxy's error message,
  ``version_info`` = the rejected version, ``last_update_attempt`` = when that version
  was sent) on every entry of that type: registryd does not know which resource the
  proxy rejected.
* ``last_updated`` is left out: registryd records ACK times per type, not per resource,
  so it has no honest per-resource time.  The only clock read is to turn the monotonic
  send time of a NACKed version into wall-clock time.
"""

from __future__ import annotations

import time
from typing import Any

# json_format expands an Any only if its message type is in the descriptor pool: these
# imports register every message packed in what registryd serves (the resources and the
# typed configs inside them), so a dump works in a process that loads no builder (an
# xDS worker).  A builder that packs a new type must add its module here.
from envoy.admin.v3 import config_dump_pb2
from envoy.admin.v3 import config_dump_shared_pb2 as _shared
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format, timestamp_pb2

from registryd.xds import resources as res
from registryd.xds.delta import DeltaConnection
from registryd.xds.snapshot import Resource, Snapshot
from registryd.xds.stream import Connection, TypeState

__all__ = ["config_dump"]


def _chosen(conn: Connection, snapshot: Snapshot, state: TypeState) -> list[Resource]:
    visible = conn.visible(snapshot, state.type_url)
    if state.wildcard:
        return [visible[n] for n in sorted(visible)]
    return [visible[n] for n in sorted(state.names) if n in visible]


def _failure(state: TypeState, wall_offset: float) -> _shared.UpdateFailureState | None:
    """The proxy's rejection of the version it was last sent, if it rejected it."""
    if not state.last_nack or state.nack_version != state.version_sent:
        return None
    failure = _shared.UpdateFailureState(details=state.last_nack, version_info=state.nack_version)
    if state.sent_at:
        failure.last_update_attempt.CopyFrom(_timestamp(state.sent_at + wall_offset))
    return failure


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


# per type: the dump message type, its list of entries and the entry's resource field, in
# Envoy's order (clusters, listeners, routes, then endpoints as with its ``include_eds``)
_SECTIONS = (
    (res.CLUSTER_TYPE, _shared.ClustersConfigDump, "dynamic_active_clusters", "cluster"),
    (res.LISTENER_TYPE, _shared.ListenersConfigDump, "dynamic_listeners", "listener"),
    (res.ROUTE_TYPE, _shared.RoutesConfigDump, "dynamic_route_configs", "route_config"),
    (res.ENDPOINT_TYPE, _shared.EndpointsConfigDump, "dynamic_endpoint_configs", "endpoint_config"),
)


def config_dump(conn: Connection, snapshot: Snapshot, *, version_prefix: str) -> dict[str, Any]:
    """``conn``'s resources from ``snapshot`` as Envoy admin ``ConfigDump`` JSON (see the
    module docstring for what goes in)."""
    wall_offset = time.time() - time.monotonic()
    dump = config_dump_pb2.ConfigDump()
    for type_url, message, entries, field in _SECTIONS:
        state = conn.states.get(type_url)
        if state is None or not state.requested:
            continue
        failure = _failure(state, wall_offset)
        section = message()
        if type_url in (res.CLUSTER_TYPE, res.LISTENER_TYPE):
            section.version_info = state.acked_version  # the last CDS/LDS update accepted
        for resource in _chosen(conn, snapshot, state):
            entry = getattr(section, entries).add()
            if type_url == res.LISTENER_TYPE:
                entry.name = resource.name
                target = entry.active_state
            else:
                target = entry
            if isinstance(conn, DeltaConnection):
                target.version_info = conn.version_of(snapshot, type_url, resource.name)
            else:
                target.version_info = f"{version_prefix}-{resource.version}"
            getattr(target, field).CopyFrom(any_pb2.Any(type_url=type_url, value=resource.body))
            if failure is not None:
                entry.error_state.CopyFrom(failure)
        packed = any_pb2.Any()
        packed.Pack(section)
        dump.configs.append(packed)
    result = json_format.MessageToDict(dump, preserving_proto_field_name=True)
    result.setdefault("configs", [])  # JSON leaves out an empty list
    return result
