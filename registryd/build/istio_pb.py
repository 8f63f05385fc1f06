"""The Istio API messages registryd sends over MCP, as protobuf classes.

istiod's config sources (``meshConfig.configSources``, ``xds://``) read resources that are
``Any`` s of ``istio.mcp.v1alpha1.Resource`` whose ``body`` is an ``Any`` of an Istio
config message (``pkg/adsc/adsc.go`` ``handleMCP``/``mcpToPilot``).  No Python package
of Istio's API exists on PyPI, so the few messages registryd needs are declared here with
their full names and field numbers as in Istio's API (``istio.io/api``:
``mcp/v1alpha1/metadata.proto``, ``mcp/v1alpha1/resource.proto``,
``networking/v1alpha3/service_entry.proto``, ``workload_entry.proto`` and ``sidecar.proto``
for ``WorkloadSelector``); fields registryd never sets (``subject_alt_names``,
``service_account``, status) are declared too, so a message read back is complete.

The descriptors go into protobuf's default pool, so ``Any`` packing and JSON printing
work as for any generated message.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

__all__ = [
    "SERVICE_ENTRY",
    "WORKLOAD_ENTRY",
    "Metadata",
    "Resource",
    "ServiceEntry",
    "ServicePort",
    "WorkloadEntry",
    "WorkloadSelector",
]

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _UINT32, _MESSAGE, _ENUM = _F.TYPE_STRING, _F.TYPE_UINT32, _F.TYPE_MESSAGE, _F.TYPE_ENUM
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    name: str, number: int, kind: int, type_name: str = "", repeated: bool = False
) -> descriptor_pb2.FieldDescriptorProto:
    field = _F(
        name=name,
        number=number,
        type=kind,  # type: ignore[arg-type]
        label=_REPEATED if repeated else _OPTIONAL,  # type: ignore[arg-type]
        json_name="".join(w.capitalize() if i else w for i, w in enumerate(name.split("_"))),
    )
    if type_name:  # only message and enum fields have one (an empty one is an error)
        field.type_name = type_name
    return field


def _map(message: descriptor_pb2.DescriptorProto, name: str, number: int, value: int) -> None:
    """A ``map<string, value>`` field: a nested ``<Name>Entry`` message and a repeated
    field of it, as protoc writes maps."""
    entry = "".join(w.capitalize() for w in name.split("_")) + "Entry"
    nested = message.nested_type.add(name=entry)
    nested.options.map_entry = True
    nested.field.append(_field("key", 1, _STRING))
    nested.field.append(_field("value", 2, value))
    message.field.append(_field(name, number, _MESSAGE, f".{_package(message)}.{entry}", True))


def _package(message: descriptor_pb2.DescriptorProto) -> str:
    return _PACKAGES[message.name] + "." + message.name


_PACKAGES = {
    "Metadata": "istio.mcp.v1alpha1",
    "Resource": "istio.mcp.v1alpha1",
    "ServiceEntry": "istio.networking.v1alpha3",
    "ServicePort": "istio.networking.v1alpha3",
    "WorkloadEntry": "istio.networking.v1alpha3",
    "WorkloadSelector": "istio.networking.v1alpha3",
}


def _mcp_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="registryd/istio/mcp/v1alpha1/resource.proto",
        package="istio.mcp.v1alpha1",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/timestamp.proto"],
    )
    meta = f.message_type.add(name="Metadata")
    meta.field.append(_field("name", 1, _STRING))
    meta.field.append(_field("create_time", 2, _MESSAGE, ".google.protobuf.Timestamp"))
    meta.field.append(_field("version", 3, _STRING))
    _map(meta, "labels", 4, _STRING)
    _map(meta, "annotations", 5, _STRING)
    res = f.message_type.add(name="Resource")
    res.field.append(_field("metadata", 1, _MESSAGE, ".istio.mcp.v1alpha1.Metadata"))
    res.field.append(_field("body", 2, _MESSAGE, ".google.protobuf.Any"))
    return f


def _networking_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="registryd/istio/networking/v1alpha3/service_entry.proto",
        package="istio.networking.v1alpha3",
        syntax="proto3",
    )
    pkg = ".istio.networking.v1alpha3"
    selector = f.message_type.add(name="WorkloadSelector")
    _map(selector, "labels", 1, _STRING)
    we = f.message_type.add(name="WorkloadEntry")
    we.field.append(_field("address", 1, _STRING))
    _map(we, "ports", 2, _UINT32)
    _map(we, "labels", 3, _STRING)
    we.field.append(_field("network", 4, _STRING))
    we.field.append(_field("locality", 5, _STRING))
    we.field.append(_field("weight", 6, _UINT32))
    we.field.append(_field("service_account", 7, _STRING))
    port = f.message_type.add(name="ServicePort")
    port.field.append(_field("number", 1, _UINT32))
    port.field.append(_field("protocol", 2, _STRING))
    port.field.append(_field("name", 3, _STRING))
    port.field.append(_field("target_port", 4, _UINT32))
    se = f.message_type.add(name="ServiceEntry")
    location = se.enum_type.add(name="Location")
    for number, name in enumerate(("MESH_EXTERNAL", "MESH_INTERNAL")):
        location.value.add(name=name, number=number)
    resolution = se.enum_type.add(name="Resolution")
    for number, name in enumerate(("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")):
        resolution.value.add(name=name, number=number)
    se.field.append(_field("hosts", 1, _STRING, repeated=True))
    se.field.append(_field("addresses", 2, _STRING, repeated=True))
    se.field.append(_field("ports", 3, _MESSAGE, f"{pkg}.ServicePort", True))
    se.field.append(_field("location", 4, _ENUM, f"{pkg}.ServiceEntry.Location"))
    se.field.append(_field("resolution", 5, _ENUM, f"{pkg}.ServiceEntry.Resolution"))
    se.field.append(_field("endpoints", 6, _MESSAGE, f"{pkg}.WorkloadEntry", True))
    se.field.append(_field("export_to", 7, _STRING, repeated=True))
    se.field.append(_field("subject_alt_names", 8, _STRING, repeated=True))
    se.field.append(_field("workload_selector", 9, _MESSAGE, f"{pkg}.WorkloadSelector"))
    return f


def _load() -> dict[str, Any]:
    pool = descriptor_pool.Default()
    # the well-known types the files depend on must be in the pool first
    pool.FindMessageTypeByName(any_pb2.Any.DESCRIPTOR.full_name)
    pool.FindMessageTypeByName(timestamp_pb2.Timestamp.DESCRIPTOR.full_name)
    classes: dict[str, Any] = {}
    for file in (_mcp_file(), _networking_file()):
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.Add(file)
        for message in file.message_type:
            descriptor = pool.FindMessageTypeByName(f"{file.package}.{message.name}")
            classes[message.name] = message_factory.GetMessageClass(descriptor)
    return classes


_CLASSES = _load()
Metadata: Any = _CLASSES["Metadata"]
Resource: Any = _CLASSES["Resource"]
ServiceEntry: Any = _CLASSES["ServiceEntry"]
ServicePort: Any = _CLASSES["ServicePort"]
WorkloadEntry: Any = _CLASSES["WorkloadEntry"]
WorkloadSelector: Any = _CLASSES["WorkloadSelector"]

SERVICE_ENTRY = "type.googleapis.com/istio.networking.v1alpha3.ServiceEntry"
WORKLOAD_ENTRY = "type.googleapis.com/istio.networking.v1alpha3.WorkloadEntry"
