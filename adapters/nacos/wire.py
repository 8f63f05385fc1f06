"""The frame of Nacos' gRPC protocol (Nacos 2.x and 3.x): one ``Payload`` per message.

Nacos declares it in ``api/src/main/proto/nacos_grpc_service.proto`` (no proto package)::

    message Metadata { string type = 3; string clientIp = 8; map<string, string> headers = 7; }
    message Payload  { Metadata metadata = 2; google.protobuf.Any body = 3; }
    service Request         { rpc request (Payload) returns (Payload); }
    service BiRequestStream { rpc requestBiStream (stream Payload) returns (stream Payload); }

``Metadata.type`` is the simple name of the Java class of the request or response
(``SubscribeServiceRequest``...), ``headers`` the request's headers (``accessToken``...),
and ``body.value`` the request or response itself as JSON (``GrpcUtils.convert`` writes
the JSON without the headers and leaves ``body.type_url`` empty).

Here the two messages are built from a descriptor at import time, in a pool of their own
(the wire format does not depend on their full names).  :func:`encode` and
:func:`decode` are pure; :data:`REQUEST` and :data:`BI_STREAM` are the method paths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

__all__ = ["BI_STREAM", "REQUEST", "Frame", "Payload", "decode", "encode"]

REQUEST = "/Request/request"
BI_STREAM = "/BiRequestStream/requestBiStream"

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="registryd_nacos_grpc_service.proto",
        package="registryd.nacos",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    metadata = proto.message_type.add(name="Metadata")
    metadata.field.add(name="type", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    metadata.field.add(name="clientIp", number=8, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    metadata.field.add(
        name="headers",
        number=7,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".registryd.nacos.Metadata.HeadersEntry",
    )
    entry = metadata.nested_type.add(name="HeadersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    payload = proto.message_type.add(name="Payload")
    payload.field.add(
        name="metadata",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_OPTIONAL,
        type_name=".registryd.nacos.Metadata",
    )
    payload.field.add(
        name="body",
        number=3,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Any",
    )
    return proto


def _build() -> Any:
    pool = descriptor_pool.DescriptorPool()
    any_proto = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_proto)
    pool.Add(any_proto)
    pool.Add(_file())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("registryd.nacos.Payload"))


Payload: Any = _build()
"""The ``Payload`` message class (``Payload.FromString``, ``SerializeToString``)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One message: the class name in ``type``, the request headers, the JSON body."""

    type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    client_ip: str = ""


def encode(
    type_name: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    client_ip: str = "",
) -> bytes:
    """The serialized ``Payload`` of one request or response: ``body`` as JSON."""
    message = Payload()
    message.metadata.type = type_name
    message.metadata.clientIp = client_ip
    for key, value in (headers or {}).items():
        message.metadata.headers[key] = value
    message.body.value = json.dumps(body, separators=(",", ":")).encode()
    data: bytes = message.SerializeToString()
    return data


def decode(data: bytes) -> Frame:
    """The frame of a serialized ``Payload``; ValueError when it is not one (the JSON
    body is left to the caller, who bounds it)."""
    try:
        message = Payload.FromString(data)
    except Exception as exc:  # DecodeError and friends
        raise ValueError(f"not a Nacos gRPC Payload: {exc}") from None
    return Frame(
        type=message.metadata.type,
        body=bytes(message.body.value),
        headers=dict(message.metadata.headers),
        client_ip=message.metadata.clientIp,
    )
