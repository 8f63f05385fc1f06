"""What an istiod reads over MCP for one merged hostname (registryd.build.mcp): one test
per row of docs/istio.md's mapping table, and the builder's MCP tables."""

from __future__ import annotations

import dataclasses
import re

import pytest

from registryd.build import istio_pb, mcp
from registryd.build.builder import SnapshotBuilder
from registryd.model import (
    AUTO,
    Endpoint,
    Health,
    Labels,
    Locality,
    Location,
    Port,
    Resolution,
    Service,
    ShardKey,
)
from registryd.registry.merge import MergedService, merge_hostname
from registryd.registry.store import View
from registryd.xds.snapshot import MCP_SERVICE_ENTRIES, MCP_WORKLOAD_ENTRIES

CONSUL = ShardKey("consul", "dc1")
NACOS = ShardKey("nacos", "prod")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def merged(service: Service, *endpoints: Endpoint, shard: ShardKey = CONSUL) -> MergedService:
    stamped = tuple(dataclasses.replace(e, source=e.source or shard) for e in endpoints)
    found = merge_hostname(service.hostname, {shard: (service, stamped)})
    assert found is not None
    return found


def service(host: str = "reviews.consul", **fields: object) -> Service:
    values: dict[str, object] = {
        "hostname": host,
        "ports": (Port(number=9080, name="http", protocol="HTTP"),),
    }
    values.update(fields)
    return Service(**values)  # type: ignore[arg-type]


def endpoint(address: str = "10.0.0.1", **fields: object) -> Endpoint:
    values: dict[str, object] = {
        "hostname": "reviews.consul",
        "address": address,
        "port": 9080,
        "service_port": 9080,
    }
    values.update(fields)
    return Endpoint(**values)  # type: ignore[arg-type]


def entry(m: MergedService) -> mcp.Config:
    found = mcp.service_entry(m)
    assert found is not None
    return found


# -- the ServiceEntry ------------------------------------------------------------------
def test_one_service_entry_per_hostname_named_after_it_in_its_namespace() -> None:
    se = entry(merged(service(namespace="shop")))
    assert (se.namespace, se.name, se.key) == ("shop", "reviews.consul", "shop/reviews.consul")
    assert list(se.body.hosts) == ["reviews.consul"]


def test_service_attributes_carry_over() -> None:
    s = service(
        addresses=("240.0.0.1",),
        ports=(
            Port(number=9080, name="http", protocol="HTTP", target_port=8080),
            Port(number=5432, name="db", protocol="TCP"),
        ),
        location=Location.MESH_INTERNAL,
        resolution=Resolution.DNS,
        export_to=(".", "team-a"),
    )
    body = entry(merged(s)).body
    assert list(body.addresses) == ["240.0.0.1"]
    assert [(p.number, p.name, p.protocol, p.target_port) for p in body.ports] == [
        (9080, "http", "HTTP", 8080),
        (5432, "db", "TCP", 0),
    ]
    assert body.location == istio_pb.ServiceEntry.MESH_INTERNAL
    assert body.resolution == istio_pb.ServiceEntry.DNS
    assert list(body.export_to) == [".", "team-a"]


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [
        (Resolution.STATIC, "STATIC"),
        (Resolution.DNS, "DNS"),
        (Resolution.DNS_ROUND_ROBIN, "DNS_ROUND_ROBIN"),
        (Resolution.NONE, "NONE"),
    ],
)
def test_resolutions(resolution: Resolution, expected: str) -> None:
    body = entry(merged(service(resolution=resolution))).body
    assert istio_pb.ServiceEntry.Resolution.Name(body.resolution) == expected


def test_ports_without_a_valid_name_are_named_by_protocol_and_number() -> None:
    s = service(
        ports=(
            Port(number=80, protocol="HTTP"),  # no name
            Port(number=81, name="Web_Port", protocol="HTTP"),  # not a DNS-1123 label
            Port(number=82, protocol=AUTO),  # nothing declared
            Port(number=83, name="http", protocol="GRPC"),
            Port(number=84, name="http", protocol="GRPC"),  # a name already taken
        )
    )
    assert [p.name for p in entry(merged(s)).body.ports] == [
        "http-80",
        "http-81",
        "port-82",
        "http",
        "port-84",
    ]


def test_a_protocol_istio_does_not_know_is_sent_unset() -> None:
    s = service(
        ports=(
            Port(number=80, name="a", protocol="THRIFT"),
            Port(number=81, name="b", protocol=AUTO),
        )
    )
    assert [p.protocol for p in entry(merged(s)).body.ports] == ["", ""]


def test_alias_services_are_not_exported() -> None:
    alias = Service(hostname="db.example", resolution=Resolution.ALIAS, alias_for="db.internal")
    m = merged(alias)
    assert mcp.service_entry(m) is None
    assert mcp.workload_entries(m) == []


def test_labels_name_the_registry_and_its_type_and_keep_the_valid_service_labels() -> None:
    s = service(labels=Labels({"app": "reviews", "bad key!": "x", "team": "a b"}))
    se = entry(merged(s))
    assert se.labels == {
        "app": "reviews",
        mcp.REGISTRY_LABEL: "dc1",
        mcp.PROVIDER_LABEL: "consul",
    }


def test_the_service_entry_names_the_registry_whose_attributes_won() -> None:
    host = "reviews.consul"
    found = merge_hostname(
        host,
        {
            CONSUL: (service(), (dataclasses.replace(endpoint("10.0.0.1"), source=CONSUL),)),
            NACOS: (service(), (dataclasses.replace(endpoint("10.0.0.2"), source=NACOS),)),
        },
        {CONSUL: 200, NACOS: 50},
    )
    assert found is not None
    assert entry(found).labels[mcp.REGISTRY_LABEL] == "dc1"
    by_address = {w.body.address: w.labels for w in mcp.workload_entries(found)}
    assert by_address["10.0.0.1"][mcp.PROVIDER_LABEL] == "consul"
    assert by_address["10.0.0.2"][mcp.REGISTRY_LABEL] == "prod"  # each endpoint's own
    assert by_address["10.0.0.2"][mcp.PROVIDER_LABEL] == "nacos"


# -- endpoints as WorkloadEntries -------------------------------------------------------
def test_a_zone_without_a_region_keeps_its_place_in_the_workload_entry() -> None:
    # istiod splits a WorkloadEntry's locality on "/" (label.SplitLocalityLabel): a Nacos
    # cluster or Consul datacenter taken as a zone must not become a region
    m = merged(service(), endpoint("10.0.0.1", port=8080, locality=Locality(zone="z1")))
    (we,) = mcp.workload_entries(m)
    assert we.body.locality == "/z1"


def test_endpoints_become_workload_entries_the_service_entry_selects() -> None:
    m = merged(
        service(namespace="shop"),
        endpoint(
            "10.0.0.1",
            port=8080,
            labels=Labels({"version": "v1"}),
            locality=Locality.parse("eu/eu-1/a"),
            weight=3,
            network="vpc-1",
        ),
    )
    se = entry(m)
    (we,) = mcp.workload_entries(m)
    assert dict(se.body.workload_selector.labels) == {mcp.SERVICE_LABEL: "reviews.consul"}
    assert we.namespace == "shop"  # a selector selects in its own namespace only
    assert we.body.address == "10.0.0.1"
    assert dict(we.body.ports) == {"http": 8080}
    assert we.body.locality == "eu/eu-1/a"
    assert we.body.weight == 3
    assert we.body.network == "vpc-1"
    assert dict(we.body.labels) == {
        "version": "v1",
        mcp.SERVICE_LABEL: "reviews.consul",
        mcp.REGISTRY_LABEL: "dc1",
        mcp.PROVIDER_LABEL: "consul",
    }
    assert we.labels == dict(we.body.labels)
    assert we.annotations == {}


def test_health_unhealthy_is_annotated_and_draining_is_left_out() -> None:
    m = merged(
        service(),
        endpoint("10.0.0.1"),
        endpoint("10.0.0.2", health=Health.UNHEALTHY),
        endpoint("10.0.0.3", health=Health.DRAINING),
    )
    found = {w.body.address: w.annotations for w in mcp.workload_entries(m)}
    assert found == {
        "10.0.0.1": {},
        "10.0.0.2": {mcp.HEALTH_CHECKS_ANNOTATION: "true"},  # istiod: isHealthy is false
    }


def test_one_address_serving_several_ports_is_one_workload_entry() -> None:
    s = service(
        ports=(
            Port(number=9080, name="http", protocol="HTTP"),
            Port(number=9090, name="grpc", protocol="GRPC"),
        )
    )
    m = merged(
        s,
        endpoint("10.0.0.1", port=8080, service_port=9080),
        endpoint("10.0.0.1", port=8090, service_port=9090),
    )
    (we,) = mcp.workload_entries(m)
    assert dict(we.body.ports) == {"http": 8080, "grpc": 8090}


def test_two_instances_on_one_host_are_two_workload_entries() -> None:
    m = merged(service(), endpoint("10.0.0.1", port=8080), endpoint("10.0.0.1", port=8081))
    found = mcp.workload_entries(m)
    assert sorted(dict(w.body.ports)["http"] for w in found) == [8080, 8081]
    assert len({w.key for w in found}) == 2


def test_weights_of_one_and_zero_are_left_at_istios_default() -> None:
    m = merged(service(), endpoint("10.0.0.1", weight=1), endpoint("10.0.0.2", weight=0))
    assert [w.body.weight for w in mcp.workload_entries(m)] == [0, 0]


def test_passthrough_and_dns_without_endpoints_select_nothing() -> None:
    for s in (service(resolution=Resolution.NONE), service(resolution=Resolution.DNS)):
        m = merged(s)
        assert not entry(m).body.HasField("workload_selector")
        assert mcp.workload_entries(m) == []
    dns = merged(service(resolution=Resolution.DNS), endpoint("reviews.internal"))
    assert entry(dns).body.HasField("workload_selector")
    assert [w.body.address for w in mcp.workload_entries(dns)] == ["reviews.internal"]


def test_endpoints_of_ports_the_service_lacks_are_ignored() -> None:
    m = merged(service(), endpoint("10.0.0.1", service_port=1234))
    assert mcp.workload_entries(m) == []


# -- names, labels and versions ------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "reviews.consul",
        "*.example.com",
        "My_Service.service.consul",
        "a" * 300 + ".example",
        "fd00::1",
        "-.-",
    ],
)
def test_config_names_are_valid_object_names(text: str) -> None:
    name = mcp.config_name(text)
    assert len(name) <= 253 and SUBDOMAIN.fullmatch(name)
    assert (name == text) == bool(SUBDOMAIN.fullmatch(text) and len(text) <= 253)


def test_config_names_of_different_texts_differ() -> None:
    texts = ["*.example.com", "example.com", "-example.com", "a_b.example", "a-b.example"]
    assert len({mcp.config_name(t) for t in texts}) == len(texts)


def test_label_values_and_namespaces_are_valid() -> None:
    long = "x" * 70 + ".example"
    assert len(mcp.label_value(long)) <= 63
    assert mcp.label_value(long) != mcp.label_value(long + "x")
    assert mcp.namespace_name("Team_A") == mcp.namespace_name("Team_A")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", mcp.namespace_name("Team_A"))
    assert mcp.namespace_name("team-a") == "team-a"


def test_invalid_labels_are_left_out() -> None:
    labels = {
        "app": "a",
        "example.com/tier": "web",
        "Example.com/x": "y",  # an upper-case prefix
        "k": "v" * 64,  # value too long
        "": "empty key",
        "ok": "",
    }
    assert mcp.valid_labels(labels) == {"app": "a", "example.com/tier": "web", "ok": ""}


def test_version_is_a_function_of_content() -> None:
    a = entry(merged(service()))
    again = entry(merged(service()))
    changed = entry(merged(service(addresses=("240.0.0.9",))))
    assert mcp.version(a) == mcp.version(again)
    assert mcp.version(a) != mcp.version(changed)
    first = istio_pb.Resource.FromString(mcp.resource(a, 100.0).SerializeToString())
    later = istio_pb.Resource.FromString(mcp.resource(a, 200.0).SerializeToString())
    assert first.metadata.version == later.metadata.version  # not the creation time's
    assert first.metadata.create_time.seconds == 100
    assert first.metadata.name == "default/reviews.consul"
    assert first.body.type_url == istio_pb.SERVICE_ENTRY


# -- the builder's MCP tables ---------------------------------------------------------
def view(
    version: int, *found: MergedService, exported: tuple[MergedService, ...] | None = None
) -> View:
    services = {m.service.hostname: m for m in found}
    shown = services if exported is None else {m.service.hostname: m for m in exported}
    return View(version, services, shown)


def test_the_builder_serves_the_exported_merge_only() -> None:
    mine = merged(service("a.consul"), endpoint("10.0.0.1", hostname="a.consul"))
    theirs = merged(service("b.cluster.local"), shard=ShardKey("kubernetes", "k"))
    builder = SnapshotBuilder()
    builder.want_mcp()
    snapshot = builder.build(view(1, mine, theirs, exported=(mine,)))
    assert snapshot.mcp
    assert list(snapshot.tables[MCP_SERVICE_ENTRIES]) == ["default/a.consul"]
    assert [n.split("-10.")[0] for n in snapshot.tables[MCP_WORKLOAD_ENTRIES]] == [
        "default/a.consul"
    ]
    assert "outbound|9080||b.cluster.local" in snapshot.tables["cds"]  # Envoy sees both


def test_an_endpoint_change_changes_workload_entries_not_the_service_entry() -> None:
    clock = iter(range(1000, 2000)).__next__
    builder = SnapshotBuilder(clock=lambda: float(clock()))
    builder.want_mcp()
    before = builder.build(view(1, merged(service(), endpoint("10.0.0.1"))))
    after = builder.build(
        view(2, merged(service(), endpoint("10.0.0.2"))), {"reviews.consul"}, endpoints_only=True
    )
    assert after.tables[MCP_SERVICE_ENTRIES] == before.tables[MCP_SERVICE_ENTRIES]
    assert after.changed_since(MCP_SERVICE_ENTRIES, before.version) == frozenset()
    assert after.changed_since(MCP_WORKLOAD_ENTRIES, before.version) == frozenset(
        set(before.tables[MCP_WORKLOAD_ENTRIES]) | set(after.tables[MCP_WORKLOAD_ENTRIES])
    )


def test_creation_time_is_kept_while_a_config_exists() -> None:
    times = iter([10.0, 20.0, 30.0, 40.0])
    builder = SnapshotBuilder(clock=lambda: next(times))
    builder.want_mcp()

    def created(snapshot_view: View) -> int:
        body = (
            builder.build(snapshot_view).tables[MCP_SERVICE_ENTRIES]["default/reviews.consul"].body
        )
        return int(istio_pb.Resource.FromString(body).metadata.create_time.seconds)

    assert created(view(1, merged(service(), endpoint("10.0.0.1")))) == 10
    assert created(view(2, merged(service(addresses=("240.0.0.1",)), endpoint("10.0.0.1")))) == 10
    builder.build(view(3))  # gone
    assert created(view(4, merged(service(), endpoint("10.0.0.1")))) > 10  # a new one


def test_mcp_tables_are_built_once_an_istiod_asked_for_every_exported_hostname() -> None:
    builder = SnapshotBuilder()
    a = merged(service("a.consul"), endpoint("10.0.0.1", hostname="a.consul"))
    b = merged(service("b.consul"), endpoint("10.0.0.2", hostname="b.consul"))
    first = builder.build(view(1, a, b))
    assert not first.mcp and not first.tables[MCP_SERVICE_ENTRIES]  # nobody asked
    builder.want_mcp()
    assert builder.mcp_pending
    # a build for no hostname at all (the push the serving's request makes) places all
    second = builder.build(view(1, a, b), set(), endpoints_only=True)
    assert second.mcp and not builder.mcp_pending
    assert sorted(second.tables[MCP_SERVICE_ENTRIES]) == ["default/a.consul", "default/b.consul"]
    assert len(second.tables[MCP_WORKLOAD_ENTRIES]) == 2
    assert second.tables["cds"] == first.tables["cds"]  # Envoy's resources untouched
    third = builder.build(view(2, a), {"b.consul"})
    assert third.mcp and list(third.tables[MCP_SERVICE_ENTRIES]) == ["default/a.consul"]
