"""Unknown fields in ServiceEntry / WorkloadEntry documents.  Pure, apart from
:func:`field_line` composing YAML it is given.

What Istio does, and so what registryd does:

* ``istioctl validate`` decodes strictly: a top-level key other than ``apiVersion``,
  ``kind``, ``metadata``, ``spec`` and ``status`` is an ``unknown field`` error
  (istioctl/pkg/validate/validate.go ``checkFields``), and so is any unknown key in the
  spec, at every level, since the spec is decoded with ``config.ApplyJSONStrict``
  (``fromSchemaAndJSONMap``).  ``metadata`` is read as Kubernetes object metadata,
  whose unknown keys are not checked.  ``registryd validate`` reports the same fields as
  errors (code ``unknown-field``).
* istiod reading ``--configDir`` (pilot/pkg/config/kube/file ``parseInputs``, through
  pilot/pkg/config/kube/crd ``ParseInputs`` -> ``ConvertObject`` -> ``FromJSON``, which
  calls the lenient ``config.ApplyJSON``) drops unknown fields and serves the document
  as if they were absent.  The file registry does the same: a document whose only fault
  is an unknown field is served, and each unknown field is a warning (on
  ``/debug/configz`` and in the log).  When the document is broken anyway, its error
  names the unknown fields first: a misspelt ``resolution`` is the likely cause of
  "resolution NONE cannot have endpoints".

The known fields of every object are :data:`KNOWN`, the one table both use; each
unknown field comes with the closest known one (:func:`difflib.get_close_matches`).
A field may be spelt with its JSON name (``exportTo``) or its proto name
(``export_to``), as protojson reads both; :func:`with_json_names` renames the latter
before the schema reads a document.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .yamlsafe import show

__all__ = [
    "KNOWN",
    "PROTO_NAMES",
    "UnknownField",
    "field_line",
    "located",
    "unknown_fields",
    "warning",
    "with_json_names",
]

PROTO_NAMES: Mapping[str, str] = {
    # the proto name of each field whose JSON name differs, as protojson accepts it
    "export_to": "exportTo",
    "workload_selector": "workloadSelector",
    "subject_alt_names": "subjectAltNames",
    "target_port": "targetPort",
    "service_account": "serviceAccount",
}
_WORKLOAD = frozenset(
    {"address", "ports", "labels", "network", "locality", "weight", "serviceAccount"}
)
_JSON_NAMES: Mapping[str, frozenset[str]] = {
    # top level: istioctl's validFields
    "document": frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
    # networking.istio.io ServiceEntry, and the messages it holds
    "ServiceEntry.spec": frozenset(
        {
            "hosts",
            "addresses",
            "ports",
            "location",
            "resolution",
            "endpoints",
            "workloadSelector",
            "exportTo",
            "subjectAltNames",
        }
    ),
    "ServicePort": frozenset({"number", "protocol", "name", "targetPort"}),
    "WorkloadSelector": frozenset({"labels"}),
    # a WorkloadEntry's spec, and each inline endpoint of a ServiceEntry
    "WorkloadEntry.spec": _WORKLOAD,
}
KNOWN: Mapping[str, frozenset[str]] = {
    kind: names | {proto for proto, json in PROTO_NAMES.items() if json in names}
    for kind, names in _JSON_NAMES.items()
}
"""The known fields of each object a document holds, by object: JSON and proto names."""

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class UnknownField:
    """A key of ``path`` (the keys and list indexes that lead to it from the document)
    that the object there does not have; ``closest`` is the known field it most
    resembles, if any does."""

    path: Path
    closest: str | None = None

    @property
    def name(self) -> str:
        """The dotted field, e.g. ``spec.ports[0].protocl``."""
        text = ""
        for step in self.path:
            text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
        return text

    def message(self) -> str:
        """``spec.resolutoin: unknown field (did you mean 'resolution'?)``."""
        hint = f" (did you mean {self.closest!r}?)" if self.closest else ""
        return f"{self.name}: unknown field{hint}"


def _check(obj: Any, path: Path, known: frozenset[str], found: list[UnknownField]) -> None:
    if not isinstance(obj, dict):
        return  # a wrong type is the schema's error, not an unknown field
    for key in obj:
        if key in known:
            continue
        text = key if isinstance(key, str) and len(key) <= 100 else show(key)
        close = difflib.get_close_matches(text, sorted(known), n=1, cutoff=0.6)
        found.append(UnknownField((*path, text), close[0] if close else None))


def _items(obj: Any, key: str) -> Sequence[Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else ()


def unknown_fields(raw: Any) -> tuple[UnknownField, ...]:
    """The unknown fields of one loaded document, in document order: its top level,
    its spec and, for a ServiceEntry, each port, each endpoint and the workload
    selector.  ``metadata`` is not checked (see the module docstring); a document of
    another kind has only its top level checked."""
    found: list[UnknownField] = []
    if not isinstance(raw, dict):
        return ()
    _check(raw, (), KNOWN["document"], found)
    raw = with_json_names(raw)  # paths below use the JSON names
    spec = raw.get("spec")
    kind = raw.get("kind")
    if kind == "ServiceEntry":
        _check(spec, ("spec",), KNOWN["ServiceEntry.spec"], found)
        for i, port in enumerate(_items(spec, "ports")):
            _check(port, ("spec", "ports", i), KNOWN["ServicePort"], found)
        for i, endpoint in enumerate(_items(spec, "endpoints")):
            _check(endpoint, ("spec", "endpoints", i), KNOWN["WorkloadEntry.spec"], found)
        if isinstance(spec, dict):
            selector = spec.get("workloadSelector")
            _check(selector, ("spec", "workloadSelector"), KNOWN["WorkloadSelector"], found)
    elif kind == "WorkloadEntry":
        _check(spec, ("spec",), KNOWN["WorkloadEntry.spec"], found)
    return tuple(found)


def _renamed(obj: Any, kind: str) -> Any:
    """``obj`` with the proto names of ``kind``'s fields renamed to their JSON names (a
    JSON name given too wins); ``obj`` itself when it has none."""
    if not isinstance(obj, dict) or not any(k in PROTO_NAMES for k in obj):
        return obj
    json_names = _JSON_NAMES[kind]
    renamed = {}
    for key, value in obj.items():
        json = PROTO_NAMES.get(key) if isinstance(key, str) else None
        if json in json_names and json not in obj:
            renamed[json] = value
        else:
            renamed[key] = value
    return renamed


def with_json_names(raw: Any) -> Any:
    """A loaded document with every field spelt by its JSON name, at every level that
    :func:`unknown_fields` checks; pure (``raw`` is not changed, and is returned as it is
    when it spells everything so)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
        return raw
    kind = raw.get("kind")
    if kind == "WorkloadEntry":
        spec = _renamed(raw["spec"], "WorkloadEntry.spec")
    elif kind == "ServiceEntry":
        spec = _renamed(raw["spec"], "ServiceEntry.spec")
        for key, part in (("ports", "ServicePort"), ("endpoints", "WorkloadEntry.spec")):
            items = spec.get(key)
            if isinstance(items, list):
                renamed = [_renamed(item, part) for item in items]
                if any(a is not b for a, b in zip(renamed, items, strict=True)):
                    spec = {**spec, key: renamed}
    else:
        return raw
    return raw if spec is raw["spec"] else {**raw, "spec": spec}


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _document_node(data: bytes | str, index: int) -> Any:
    """The composed node of document ``index`` (from 1, empty documents counted) of
    ``data``, or None.  Meant for content the bounded loader accepted: nodes are
    composed, nothing is constructed."""
    try:
        nodes = list(yaml.compose_all(data, Loader=_LOADER))
    except Exception:  # a line is a help to the reader, never a new error
        return None
    return nodes[index - 1] if 0 < index <= len(nodes) else None


def field_line(data: bytes | str, index: int, path: Path) -> int | None:
    """The line (from 1) of the key at ``path`` in document ``index`` (from 1, empty
    documents counted) of ``data``; None if it cannot be told."""
    return _line(_document_node(data, index), path)


def _line(node: Any, path: Path) -> int | None:
    line = None
    for step in path:
        if isinstance(step, int) and isinstance(node, yaml.SequenceNode):
            if step >= len(node.value):
                return None
            node = node.value[step]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            pair = next(
                (kv for kv in node.value if step in (kv[0].value, PROTO_NAMES.get(kv[0].value))),
                None,
            )
            if pair is None:
                return None
            line = pair[0].start_mark.line + 1
            node = pair[1]
        else:
            return None
    return line


def located(data: bytes | str, index: int, raw: Any) -> list[tuple[int | None, UnknownField]]:
    """The unknown fields of document ``index`` (loaded as ``raw``) of ``data``, each with
    its line (None if it cannot be told)."""
    found = unknown_fields(raw)
    if not found:
        return []
    node = _document_node(data, index)  # composed once for all of them
    return [(_line(node, f.path), f) for f in found]


def warning(source: str, line: int | None, label: str, field: UnknownField) -> str:
    """The file registry's warning for an unknown field, e.g. ``a.yaml:9: document 1
    (ServiceEntry default/db): spec.resolutoin: unknown field (did you mean
    'resolution'?); ignored, as istiod does``."""
    place = f"{source}:{line}" if line else source
    return f"{place}: {label}: {field.message()}; ignored, as istiod does"
