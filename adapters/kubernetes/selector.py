"""Kubernetes label selectors: parsing and matching.  Pure: no I/O.

Contract: :func:`parse_selector` turns either form Kubernetes uses into a
:class:`Selector`, or raises :class:`ValueError` saying what is wrong:

* the string form of ``kubectl -l`` / ``?labelSelector=``: requirements separated by
  commas, each ``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
  ``key in (v1,v2)`` or ``key notin (v1,v2)``;
* the object form of ``metav1.LabelSelector`` (Istio's ``discoverySelectors``):
  ``{matchLabels: {key: value}, matchExpressions: [{key, operator, values}]}`` with the
  operators ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``.

A selector matches a label set when every requirement holds (Kubernetes' semantics:
``!=`` and ``notin`` also match when the key is absent).  Keys and values are checked
against Kubernetes' label syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Requirement", "Selector", "parse_selector"]

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_KEY = re.compile(rf"(?:(?P<prefix>{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?(?P<name>{_NAME})")
_VALUE = re.compile(rf"(?:{_NAME})?")
_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
_SET = re.compile(r"(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_EQUALS = re.compile(r"(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement: ``operator`` is ``=``, ``!=``, ``in``, ``notin``, ``exists``
    or ``!`` (does not exist)."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # != and notin


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements; ``text`` is its canonical string form."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def text(self) -> str:
        return ",".join(_format(r) for r in self.requirements)

    def __str__(self) -> str:
        return self.text


def _format(requirement: Requirement) -> str:
    values = sorted(requirement.values)
    if requirement.operator == "exists":
        return requirement.key
    if requirement.operator == "!":
        return f"!{requirement.key}"
    if requirement.operator in ("=", "!="):
        return f"{requirement.key}{requirement.operator}{values[0]}"
    return f"{requirement.key} {requirement.operator} ({','.join(values)})"


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"label key {key!r} is not a string")
    match = _KEY.fullmatch(key)
    if match is None or len(match.group("prefix") or "") > 253:
        raise ValueError(f"{key!r} is not a valid label key")
    return key


def _value(value: Any) -> str:
    if not isinstance(value, str) or _VALUE.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a valid label value")
    return value


def _terms(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return [t.strip() for t in terms]


def _parse_text(text: str) -> tuple[Requirement, ...]:
    if not text.strip():
        return ()
    return tuple(_term(term) for term in _terms(text))


def _term(term: str) -> Requirement:
    if not term:
        raise ValueError("an empty requirement (two commas, or one at an end)")
    if match := _SET.fullmatch(term):
        values = [v.strip() for v in match.group("values").split(",")]
        if values == [""]:
            raise ValueError(f"{term!r}: needs at least one value")
        key = _key(match.group("key"))
        return Requirement(key, match.group("op"), frozenset(_value(v) for v in values))
    if match := _EQUALS.fullmatch(term):
        operator = "!=" if match.group("op") == "!=" else "="
        return Requirement(
            _key(match.group("key")), operator, frozenset({_value(match.group("value"))})
        )
    if term.startswith("!"):
        return Requirement(_key(term[1:].strip()), "!")
    return Requirement(_key(term), "exists")


def _parse_object(data: Mapping[str, Any]) -> tuple[Requirement, ...]:
    unknown = sorted(str(k) for k in set(data) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise ValueError(f"unknown fields {unknown}: use matchLabels and matchExpressions")
    labels = data.get("matchLabels") or {}
    expressions = data.get("matchExpressions") or []
    if not isinstance(labels, Mapping):
        raise ValueError("matchLabels must map label keys to values")
    if not isinstance(expressions, list):
        raise ValueError("matchExpressions must be a list")
    requirements = [
        Requirement(_key(k), "=", frozenset({_value(v)})) for k, v in sorted(labels.items())
    ]
    requirements.extend(_expression(e) for e in expressions)
    return tuple(requirements)


def _expression(expression: Any) -> Requirement:
    if not isinstance(expression, Mapping):
        raise ValueError(f"matchExpressions: {expression!r} is not an object")
    key, operator = _key(expression.get("key")), expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(operator, str) or operator not in _OPERATORS:
        raise ValueError(f"{key}: operator {operator!r} is not one of {sorted(_OPERATORS)}")
    if not isinstance(values, list):
        raise ValueError(f"{key}: values must be a list")
    if operator in ("In", "NotIn") and not values:
        raise ValueError(f"{key}: operator {operator} needs values")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"{key}: operator {operator} takes no values")
    return Requirement(key, _OPERATORS[operator], frozenset(_value(v) for v in values))


def parse_selector(value: Any) -> Selector:
    """A :class:`Selector` from the string or object form; ValueError if malformed or
    empty (an empty selector would select everything)."""
    if isinstance(value, str):
        requirements = _parse_text(value)
    elif isinstance(value, Mapping):
        requirements = _parse_object(value)
    else:
        raise ValueError("expected a selector string or {matchLabels, matchExpressions}")
    if not requirements:
        raise ValueError("it is empty (it would select every namespace: leave it out instead)")
    return Selector(requirements)
