"""Generated ServiceEntry/WorkloadEntry inputs for the differential harness, and a
command that runs many of them through istiod and registryd.

:func:`inputs` is a Hypothesis strategy for one input: a few ServiceEntries and
WorkloadEntries (YAML text) that istiod's validation accepts
(``pkg/config/validation/validation.go``: ``ValidateServiceEntry``,
``ValidateWorkloadEntry``): hosts (some ``*.`` wildcards, never for DNS without
endpoints), addresses (mostly none, IPs and CIDRs, CIDRs only for NONE/STATIC), named
ports with or without protocol and target port, every resolution but DYNAMIC_DNS,
location, endpoints (IPs, and DNS names for DNS resolution) with ports, labels,
locality, weight and network, workload selectors with WorkloadEntries of the same
namespace, ``exportTo``, two namespaces.  ``shared`` is how likely (in percent) a
ServiceEntry takes a host and port of an earlier one: istiod picks among such entries
by creation time and name, so these are kept the smaller part.  Never the harness's
own marker (hosts under ``sync.registryd.test``, port 1), nor Istio's own ports
(15000-15099, where a sidecar's listeners are).

    python -m tests.differential.generate --count N [--seed S] [--save DIR]

runs N generated inputs through one :class:`~tests.differential.servers.Pair` and
prints the differences per node kind, resource type and field path as
``python -m tests.differential`` does, the inputs istiod refused (and whether
registryd refused them too), the run time and inputs per second.  With ``--save``, it
writes for each field path the smallest input that shows it (fewest documents, then
fewest characters), made smaller still by :func:`shrink` unless ``--no-shrink``, as
``DIR/<slug>.yaml`` with a leading comment naming the field path.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import yaml
from hypothesis import strategies as st

from tests.differential.report import Tally, differences, print_groups
from tests.differential.servers import NODES, Ambiguous, IstiodRefused, Pair

__all__ = ["NAMESPACES", "documents", "inputs", "shrink", "smaller"]

NAMESPACES = ("default", "other")
API = "networking.istio.io/v1"
_WORDS = ("api", "web", "db", "cache", "search", "auth", "pay", "mail", "news", "shop")
_DOMAINS = ("example", "example.com", "ext.test", "svc.cluster.local", "default.svc.cluster.local")
_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS", "MONGO", "REDIS", "MYSQL", "")
_HTTP_OR_TLS = ("HTTP", "HTTP2", "GRPC", "TLS", "HTTPS")
_COMMON_PORTS = (80, 443, 8080, 9090, 3306, 6379, 27017, 5000, 8443, 9000)
_RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
_LABEL_KEYS = ("app", "version", "tier")
_LABEL_VALUES = ("a", "b", "v1", "v2")


def _not_cidr(address: str) -> bool:
    return "/" not in address


def _allowed_port(n: int) -> bool:
    return n != 1 and not 15000 <= n <= 15099


_port_numbers = st.one_of(
    st.sampled_from(_COMMON_PORTS), st.integers(2, 65535).filter(_allowed_port)
)
_hostnames = st.builds(
    "{}{}.{}".format,
    st.sampled_from(_WORDS),
    st.sampled_from(("", "1", "2")),
    st.sampled_from(_DOMAINS),
)
_wildcards = st.builds("*.{}.example".format, st.sampled_from(_WORDS))
_ipv4 = st.builds("10.{}.{}.{}".format, st.integers(0, 3), st.integers(0, 3), st.integers(1, 9))
_addresses = st.one_of(
    st.builds("240.240.{}.{}".format, st.integers(0, 3), st.integers(1, 9)),
    st.builds("192.168.{}.0/24".format, st.integers(0, 3)),
    st.builds("172.{}.0.0/16".format, st.integers(16, 19)),
    st.builds("2001:db8::{}".format, st.integers(1, 9)),
)
_labels = st.dictionaries(
    st.sampled_from(_LABEL_KEYS), st.sampled_from(_LABEL_VALUES), min_size=1, max_size=2
)
_localities = st.one_of(
    st.just("region-a/zone-1/sub-x"),
    st.builds(
        "{}{}".format,
        st.sampled_from(("region-a", "region-b")),
        st.sampled_from(("", "/zone-1", "/zone-2", "/zone-1/sub-x")),
    ),
)


@st.composite
def _ports(draw: Any, hosts: int, resolution: str) -> list[dict[str, Any]]:
    """1-3 ports, numbers and names unique; only HTTP or TLS ones where several hosts
    share them (istiod: "multiple hosts provided with non-HTTP, non-TLS ports")."""
    numbers = draw(st.lists(_port_numbers, min_size=1, max_size=3, unique=True))
    only_http = hosts > 1 and resolution != "NONE"
    out = []
    for i, number in enumerate(numbers):
        protocol = draw(st.sampled_from(_HTTP_OR_TLS if only_http else _PROTOCOLS))
        base = draw(st.sampled_from((protocol.lower() or "port", "p", "web", "tcp", "http")))
        port: dict[str, Any] = {"number": number, "name": f"{base}-{i}" if i else base}
        if protocol:
            port["protocol"] = protocol
        if draw(st.integers(0, 9)) >= 8:
            port["targetPort"] = draw(_port_numbers)
        out.append(port)
    return out


@st.composite
def _workload(
    draw: Any, port_names: list[str], *, dns: bool, address: bool = True
) -> dict[str, Any]:
    """An endpoint (or a WorkloadEntry's spec): address, and optional ports, labels,
    locality, weight, network."""
    spec: dict[str, Any] = {}
    if address:
        spec["address"] = draw(
            st.one_of(_ipv4, _hostnames.map(lambda h: f"ep-{h}")) if dns else _ipv4
        )
    if port_names and draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(port_names), min_size=1, unique=True))
        spec["ports"] = {name: draw(_port_numbers) for name in names}
    optional = {
        "labels": _labels,
        "locality": _localities,
        "weight": st.integers(1, 100),
        "network": st.sampled_from(("network-1", "network-2")),
    }
    for key, values in optional.items():
        if draw(st.integers(0, 9)) >= (9 if key == "network" else 7):
            spec[key] = draw(values)
    return spec


def _fresh(host: str, taken: set[str], n: int) -> str:
    """``host``, or where an earlier entry has it, its first label suffixed with ``n``."""
    if host not in taken:
        return host
    first, rest = host.split(".", 1)
    return f"{first}-{n}.{rest}"


def _export_to(namespace: str) -> st.SearchStrategy[list[str] | None]:
    other = next(n for n in NAMESPACES if n != namespace)
    return st.one_of(
        st.none(),
        st.sampled_from([["."], ["*"], [namespace], [other], [".", other], ["~"]]),
    )


@st.composite
def documents(draw: Any, shared: int = 15, max_entries: int = 3) -> list[dict[str, Any]]:
    """One input's documents (see the module); ``shared``: in percent, how likely a
    ServiceEntry reuses a host and a port of an earlier one."""
    count = draw(st.integers(1, max_entries))
    entries: list[dict[str, Any]] = []
    workloads: list[dict[str, Any]] = []
    used_names: set[tuple[str, str, str]] = set()

    def name(kind: str, namespace: str, base: str) -> str:
        base = re.sub(r"[^a-z0-9-]", "", base.lower()).strip("-") or "entry"
        n = base
        i = 1
        while (kind, namespace, n) in used_names:
            i += 1
            n = f"{base}-{i}"
        used_names.add((kind, namespace, n))
        return n

    for _ in range(count):
        namespace = draw(st.sampled_from(NAMESPACES))
        resolution = draw(st.sampled_from(_RESOLUTIONS))
        reuse = entries and draw(st.integers(0, 99)) >= 100 - shared
        hosts = draw(st.lists(_hostnames, min_size=1, max_size=2, unique=True))
        if draw(st.integers(0, 9)) >= 8:
            hosts[0] = draw(_wildcards)
        ports = draw(_ports(len(hosts), resolution))
        if reuse:  # a host and a port of an earlier entry
            earlier = draw(st.sampled_from(entries))["spec"]
            hosts = [draw(st.sampled_from(earlier["hosts"]))]
            ports[0]["number"] = draw(st.sampled_from([p["number"] for p in earlier["ports"]]))
            ports = list({p["number"]: p for p in ports}.values())  # names stay unique
        else:  # hosts of their own: a chance collision would be sharing too
            taken = {h for e in entries for h in e["spec"]["hosts"]}
            hosts = [_fresh(h, taken, len(entries)) for h in hosts]
        wildcard = any(h.startswith("*") for h in hosts)
        spec: dict[str, Any] = {"hosts": hosts}
        cidr_ok = resolution in ("NONE", "STATIC")
        if draw(st.integers(0, 9)) >= 7:
            address = draw(_addresses if cidr_ok else _addresses.filter(_not_cidr))
            spec["addresses"] = [address]
        spec["ports"] = ports
        location = draw(st.sampled_from(("MESH_EXTERNAL", "MESH_INTERNAL", None)))
        if location:
            spec["location"] = location
        if resolution != "NONE" or draw(st.booleans()):
            spec["resolution"] = resolution
        port_names = [p["name"] for p in ports]
        dns = resolution in ("DNS", "DNS_ROUND_ROBIN")
        # DNS without endpoints needs FQDN hosts: no selector for wildcards
        selector_ok = resolution == "STATIC" or (resolution == "DNS" and not wildcard)
        selector = selector_ok and draw(st.integers(0, 9)) >= 7
        if selector:
            app = draw(st.sampled_from(_WORDS))
            spec["workloadSelector"] = {"labels": {"app": app}}
            for _ in range(draw(st.integers(0, 2))):
                we = draw(_workload(port_names, dns=dns))
                labels = dict(we.pop("labels", {}))
                if draw(st.integers(0, 9)) < 8:
                    labels["app"] = app
                if labels:
                    we["labels"] = labels
                workloads.append(
                    {
                        "apiVersion": API,
                        "kind": "WorkloadEntry",
                        "metadata": {
                            "name": name("we", namespace, f"{app}-we"),
                            "namespace": namespace,
                        },
                        "spec": we,
                    }
                )
        elif resolution != "NONE":
            most = 1 if resolution == "DNS_ROUND_ROBIN" else 3
            least = 1 if resolution == "STATIC" else 0
            if dns and wildcard:
                least = 1  # "hosts must be FQDN ... if no endpoints are provided"
            endpoints = draw(
                st.lists(_workload(port_names, dns=dns), min_size=least, max_size=most)
            )
            if endpoints:
                spec["endpoints"] = endpoints
        export = draw(_export_to(namespace))
        if export is not None:
            spec["exportTo"] = export
        entries.append(
            {
                "apiVersion": API,
                "kind": "ServiceEntry",
                "metadata": {
                    "name": name("se", namespace, hosts[0].lstrip("*.").split(".")[0]),
                    "namespace": namespace,
                },
                "spec": spec,
            }
        )
    # one creation time each, in document order: istiod takes the entries of a hostname
    # oldest first, and with equal times in an order that changes per push
    for i, entry in enumerate(entries):
        entry["metadata"]["creationTimestamp"] = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"
    return entries + workloads


def _text(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def inputs(shared: int = 15, max_entries: int = 3) -> st.SearchStrategy[str]:
    """One input as YAML text (see :func:`documents`)."""
    return documents(shared, max_entries).map(_text)


def smaller(a: str, b: str) -> bool:
    """Whether input ``a`` is smaller than ``b``: fewer documents, then fewer characters."""

    def size(text: str) -> tuple[int, int]:
        return sum(1 for d in yaml.safe_load_all(text) if d is not None), len(text)

    return size(a) < size(b)


def _candidates(docs: list[Any]) -> Iterator[list[Any]]:
    """Inputs with one part less: a document, a list element, a mapping key (the
    ``apiVersion``/``kind``/``metadata`` of documents and a spec's hosts and ports
    kept), from the outside in."""
    for i in range(len(docs)):
        yield docs[:i] + docs[i + 1 :]

    def parts(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if len(path) == 1 and key in ("apiVersion", "kind", "metadata"):
                    continue
                if len(path) == 2 and key in ("hosts", "ports") and path[1] == "spec":
                    yield from parts(value, (*path, key))
                    continue
                yield (*path, key)
                yield from parts(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if len(node) > 1:
                    yield (*path, i)
                yield from parts(value, (*path, i))

    for i, doc in enumerate(docs):
        for path in parts(doc, (i,)):
            out = copy.deepcopy(docs)
            holder = out
            for step in path[:-1]:
                holder = holder[step]
            del holder[path[-1]]
            yield out


async def shrink(text: str, shows: Callable[[str], Awaitable[bool]], budget: int = 40) -> str:
    """A smaller input that still ``shows`` (an async predicate of an input, false when
    istiod refuses it): one pass over the parts of the input (:func:`_candidates`),
    removing each whose removal keeps it showing; at most ``budget`` tries."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    tries = start = 0
    while tries < budget:
        candidates = list(_candidates(docs))
        for i in range(start, len(candidates)):
            if tries >= budget:
                return _text(docs)
            tries += 1
            if await shows(_text(candidates[i])):
                # the parts before this one stayed needed: go on from here
                docs, start = candidates[i], i
                break
        else:
            break
    return _text(docs)


_SAVED = "# difference at: "  # the first line of a saved input, then its group


def _slug(key: str) -> str:
    kind, type_, path = key.split(" ", 2)
    path = re.sub(r"\[\]|\(|\)", "", path).strip(".")
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w]
    tail = "-".join(words[-3:]) if words else "resource"
    return f"{kind}-{type_}-{tail}".lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="inputs to generate")
    parser.add_argument(
        "--reshrink", help="shrink the saved inputs of this directory further, in place"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=int, default=15, help="percent of entries sharing")
    parser.add_argument("--save", help="write the smallest input of each field path here")
    parser.add_argument("--no-shrink", action="store_true", help="save inputs as found")
    parser.add_argument("--budget", type=int, default=25, help="tries to shrink each input")
    parser.add_argument("--show", type=int, default=1, help="examples shown per field path")
    parser.add_argument("--workdir", help="keep the servers' files and logs here")
    asyncio.run(run(parser.parse_args()))


def _draw(count: int, seed: int, shared: int) -> list[str]:
    """``count`` inputs drawn from :func:`inputs` with ``seed`` (outside of a test)."""
    out: list[str] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(inputs(shared))
    def take(text: str) -> None:
        out.append(text)

    take()
    return out


async def run(args: argparse.Namespace) -> None:
    if args.reshrink:
        await _reshrink(Path(args.reshrink), args)
        return
    texts = _draw(args.count, args.seed, args.shared)
    started = time.monotonic()
    total = Tally()
    smallest: dict[str, str] = {}
    refused_both = refused_only_istiod = ambiguous = 0
    with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
        pair = Pair(Path(args.workdir or tmp))
        try:
            for n, text in enumerate(texts, 1):
                try:
                    outcome = await differences(pair, text)
                except Ambiguous:
                    ambiguous += 1
                    continue
                except IstiodRefused as refused:
                    if refused.registryd_errors:
                        refused_both += 1
                    else:
                        refused_only_istiod += 1
                        print(f"istiod refused input {n} and REGISTRYD TOOK IT:\n{text}")
                    continue
                total.add(outcome, f"input {n}")
                for key in outcome.groups:
                    if key not in smallest or smaller(text, smallest[key]):
                        smallest[key] = text
            elapsed = time.monotonic() - started
            if args.save:
                await _save(pair, Path(args.save), smallest, 0 if args.no_shrink else args.budget)
        finally:
            pair.stop()
    count = print_groups(total.by_group, args.show)
    differing = len({name for found in total.by_group.values() for name, _ in found})
    print(
        f"\n{len(texts)} inputs ({total.views} node views), {differing} with a difference: "
        f"{count} differences on {len(total.by_group)} field paths; "
        f"istiod refused {refused_both + refused_only_istiod} "
        f"({refused_both} registryd refused too, {refused_only_istiod} registryd took); "
        f"{ambiguous} not compared (istiod's answer is not one definition: docs/xds.md rows); "
        f"{elapsed:.1f} s, {len(texts) / elapsed:.2f} inputs/s"
    )


def _saved(into: Path) -> dict[str, tuple[Path, str]]:
    """The inputs saved in ``into``: field path group -> (file, input)."""
    out = {}
    for path in sorted(into.glob("*.yaml")):
        first, _, text = path.read_text().partition("\n")
        out[first.removeprefix(_SAVED)] = (path, text)
    return out


async def _reshrink(into: Path, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
        pair = Pair(Path(args.workdir or tmp))
        try:
            for key, (path, text) in _saved(into).items():
                smaller_text = await shrink(text, _shows(pair, key), args.budget)
                if smaller(smaller_text, text):
                    _write(path, f"{_SAVED}{key}\n{smaller_text}")
                    print(f"shrank {path.name}: {len(text)} -> {len(smaller_text)} characters")
        finally:
            pair.stop()


def _shows(pair: Pair, key: str) -> Callable[[str], Awaitable[bool]]:
    """Whether an input shows a difference of group ``key`` (only its node asked)."""
    nodes = [n for n in NODES if n.kind == key.split(" ", 1)[0]]

    async def shows(candidate: str) -> bool:
        try:
            return key in (await differences(pair, candidate, nodes)).groups
        except (IstiodRefused, Ambiguous):
            return False

    return shows


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def _save(pair: Pair, into: Path, smallest: dict[str, str], budget: int) -> None:
    slugs: dict[str, str] = {}
    for key, text in sorted(smallest.items()):
        if budget:
            text = await shrink(text, _shows(pair, key), budget)
        slug = _slug(key)
        while slug in slugs.values():
            slug += "-2"
        slugs[key] = slug
        _write(into / f"{slug}.yaml", f"{_SAVED}{key}\n{text}")
        print(f"saved {into / slug}.yaml: {key}")


if __name__ == "__main__":
    main()
