"""The comparison and its normalization rules, on hand-made answers (no servers)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.differential.compare import ABSENT, Difference, compare, field_path
from tests.differential.normalize import MARKER_PORT, PAIR_RULES, RULES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_equal_answers_have_no_differences() -> None:
    served = {"cds": {"a": {"name": "a", "type": "EDS"}}, "lds": {}}
    assert compare(served, served) == []


def test_every_differing_field_and_every_lone_resource_is_reported() -> None:
    istiod = {"cds": {"a": {"name": "a", "x": {"y": [1, 2]}, "only_here": True}, "b": {}}}
    ours = {"cds": {"a": {"name": "a", "x": {"y": [1, 3]}}, "c": {}}}
    found = {(d.name, d.path): (d.istiod, d.registryd) for d in compare(istiod, ours)}
    assert found == {
        ("a", ".only_here"): (True, ABSENT),
        ("a", ".x.y[1]"): (2, 3),
        ("b", ""): ({}, ABSENT),
        ("c", ""): (ABSENT, {}),
    }
    assert field_path(".x.y[1].z[10]") == ".x.y[].z[]"
    assert "cds a .x.y[1]" in str(Difference("cds", "a", ".x.y[1]", 2, 3))


def test_lists_of_different_lengths_differ_as_a_whole() -> None:
    (d,) = compare({"rds": {"r": {"v": [1]}}}, {"rds": {"r": {"v": [1, 2]}}})
    assert (d.path, d.istiod, d.registryd) == (".v", [1], [1, 2])


def test_the_marker_and_istiods_inbound_side_are_normalized_away() -> None:
    marker = f"outbound|{MARKER_PORT}||m1.sync.registryd.test"
    istiod = {
        "cds": {marker: {}, "inbound|8080||": {}, "InboundPassthroughCluster": {}, "x": {}},
        "eds": {marker: {}},
        "lds": {f"0.0.0.0_{MARKER_PORT}": {}, "virtualInbound": {}},
        "rds": {str(MARKER_PORT): {}},
    }
    ours = {"cds": {marker: {}, "x": {}}, "lds": {f"0.0.0.0_{MARKER_PORT}": {}}}
    assert compare(istiod, ours) == []


def test_every_rule_is_a_row_of_the_readme_differences_table() -> None:
    text = README.read_text()
    table = text.split("### Where registryd differs from istiod", 1)[1].split("\n## ", 1)[0]
    first_cells = [
        re.split(r"\s*\|\s*", line)[1] for line in table.splitlines() if line.startswith("| ")
    ]
    for rule in (*RULES, *PAIR_RULES):
        if rule.row:
            assert any(cell.startswith(rule.row) for cell in first_cells), rule.name


def test_a_proxyless_dns_service_is_compared_as_the_documented_difference() -> None:
    name = "outbound|80||db.example"
    istiod = {"cds": {name: {"name": name, "type": "EDS"}}, "eds": {name: {"cluster_name": name}}}
    ours = {"cds": {name: {"name": name, "type": "LOGICAL_DNS"}}}
    assert compare(istiod, ours) == []
    with_endpoints = {**istiod, "eds": {name: {"cluster_name": name, "endpoints": [{}]}}}
    assert compare(with_endpoints, ours) != []  # only the empty EDS cluster is that row
