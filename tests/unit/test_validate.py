"""``registryd validate``: registryd.yaml errors, analysis warnings, lines, exit codes,
and that nothing is contacted."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from registryd.adapter import AdapterContext, ConfigError
from registryd.daemon.plugins import create_adapter, require
from registryd.tools import cli
from registryd.tools.analyze import Finding, Severity
from registryd.tools.configcheck import check, document_lines

API = "apiVersion: networking.istio.io/v1\n"


def service_entry(
    name: str,
    hosts: str,
    *,
    namespace: str = "default",
    ports: str = "[{number: 80, name: http, protocol: HTTP}]",
    extra: str = "",
) -> str:
    return (
        f"{API}kind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  hosts: {hosts}\n  ports: {ports}\n{extra}"
    )


def workload_entry(name: str, labels: str, *, namespace: str = "default") -> str:
    return (
        f"{API}kind: WorkloadEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  address: 10.0.0.1\n  labels: {labels}\n"
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def findings(root: Path) -> list[tuple[str, str, int | None]]:
    """(code, file name, document) of every finding for the tree ``root``."""
    return [(f.code, Path(f.source).name, f.document) for f in check(paths=[str(root)]).findings]


def messages(root: Path, code: str) -> list[str]:
    return [f.message for f in check(paths=[str(root)]).findings if f.code == code]


# -- analysis warnings ------------------------------------------------------------------


def test_hostname_defined_twice_warns_on_the_later_definition(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a.yaml": service_entry("first", "[shop.example]"),
            "b.yaml": service_entry("second", "[Shop.Example, other.example]"),
        },
    )
    assert findings(tmp_path) == [("duplicate-host", "b.yaml", 1)]
    (message,) = messages(tmp_path, "duplicate-host")
    assert message.startswith("ServiceEntry default/second: host shop.example is also defined")
    assert f"ServiceEntry default/first ({tmp_path / 'a.yaml'}, document 1)" in message


def test_hostname_listed_twice_in_different_case_warns(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": service_entry("se", "[a.example, A.example]")})
    assert findings(tmp_path) == [("duplicate-host", "a.yaml", 1)]
    assert "listed 2 times (['a.example', 'A.example'])" in messages(tmp_path, "duplicate-host")[0]


def test_workload_entry_no_service_entry_selects(tmp_path: Path) -> None:
    selector = "  resolution: STATIC\n  workloadSelector:\n    labels: {app: shop}\n"
    write(
        tmp_path,
        {
            "se.yaml": service_entry("shop", "[shop.example]", extra=selector),
            "we.yaml": "---\n".join(
                [
                    workload_entry("selected", "{app: shop, version: v1}"),
                    workload_entry("other-app", "{app: cart}"),
                    # a selector matches in its own namespace only
                    workload_entry("other-ns", "{app: shop}", namespace="elsewhere"),
                ]
            ),
        },
    )
    assert findings(tmp_path) == [
        ("unselected-workload", "we.yaml", 2),
        ("unselected-workload", "we.yaml", 3),
    ]


def test_workload_labels_from_metadata_count_for_selection(tmp_path: Path) -> None:
    # serviceentry/conversion.go ConvertWorkloadEntry: metadata.labels merged in
    selector = "  resolution: STATIC\n  workloadSelector:\n    labels: {app: shop}\n"
    workload = (
        f"{API}kind: WorkloadEntry\nmetadata: {{name: w, labels: {{app: shop}}}}\n"
        "spec: {address: 10.0.0.1}\n"
    )
    write(tmp_path, {"se.yaml": service_entry("s", "[s.example]", extra=selector)})
    write(tmp_path, {"we.yaml": workload})
    assert findings(tmp_path) == []


def test_selector_that_selects_nothing(tmp_path: Path) -> None:
    selector = "  resolution: STATIC\n  workloadSelector:\n    labels: {app: gone}\n"
    write(tmp_path, {"se.yaml": service_entry("shop", "[shop.example]", extra=selector)})
    assert findings(tmp_path) == [("selector-matches-nothing", "se.yaml", 1)]
    assert (
        "{'app': 'gone'} selects no WorkloadEntry"
        in messages(tmp_path, "selector-matches-nothing")[0]
    )


def test_empty_selector_selects_every_workload_of_its_namespace(tmp_path: Path) -> None:
    selector = "  resolution: STATIC\n  workloadSelector: {}\n"
    write(
        tmp_path,
        {
            "se.yaml": service_entry("all", "[all.example]", extra=selector),
            "we.yaml": workload_entry("any", "{x: y}"),
        },
    )
    assert findings(tmp_path) == []


TCP = "[{number: 5432, name: db, protocol: TCP}]"


def test_two_tcp_services_without_addresses_conflict_on_their_listener(tmp_path: Path) -> None:
    # listener.go buildSidecarOutboundListener / mergeTCPFilterChains; istioctl IST0134
    write(
        tmp_path,
        {
            "a.yaml": service_entry("a", "[a.example]", ports=TCP),
            "b.yaml": service_entry("b", "[b.example]", ports=TCP),
        },
    )
    assert findings(tmp_path) == [("listener-conflict", "b.yaml", 1)]
    (message,) = messages(tmp_path, "listener-conflict")
    assert "port 5432: b.example and a.example share listener 0.0.0.0_5432" in message


@pytest.mark.parametrize(
    ("second", "extra"),
    [
        (TCP, "  addresses: [240.0.0.2]\n"),  # a VIP of its own
        ("[{number: 5432, name: web, protocol: HTTP}]", ""),  # routed by Host header
        ("[{number: 5432, name: tls, protocol: TLS}]", ""),  # matched by SNI
        (TCP, "  exportTo: [other]\n"),  # seen by another namespace only
    ],
)
def test_tcp_services_that_can_be_told_apart_do_not_conflict(
    tmp_path: Path, second: str, extra: str
) -> None:
    write(
        tmp_path,
        {
            "a.yaml": service_entry("a", "[a.example]", ports=TCP, extra="  exportTo: [.]\n"),
            "b.yaml": service_entry("b", "[b.example]", ports=second, extra=extra),
        },
    )
    assert findings(tmp_path) == []


@pytest.mark.parametrize("number", [0, 65536, 99999])
def test_port_outside_the_range_is_the_parsers_error(tmp_path: Path, number: int) -> None:
    ports = f"[{{number: {number}, name: http}}]"
    write(tmp_path, {"a.yaml": service_entry("a", "[a.example]", ports=ports)})
    (finding,) = check(paths=[str(tmp_path)]).findings
    assert (finding.severity, finding.code, finding.document) == (
        Severity.ERROR,
        "invalid-document",
        1,
    )
    assert f"between 1 and 65535, got {number}" in finding.message


# -- where: document and line -------------------------------------------------------------


def test_document_error_points_at_the_documents_first_line(tmp_path: Path) -> None:
    good = workload_entry("w", "{a: b}")
    bad = f"{API}kind: WorkloadEntry\nmetadata: {{name: bad}}\nspec: {{}}\n"
    write(tmp_path, {"f.yaml": f"{good}---\n# comment\n{bad}"})
    found = check(paths=[str(tmp_path / "f.yaml")]).findings
    (finding,) = [f for f in found if f.severity is Severity.ERROR]
    assert (finding.document, finding.line) == (2, good.count("\n") + 3)
    assert finding.message == (
        "document 2 (WorkloadEntry default/bad): spec.address: required (unless network is set)"
    )


def test_unknown_fields_are_errors_with_their_line_and_closest_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = (
        "  resolutoin: STATIC\n"  # line 7
        "  endpoints:\n"
        "  - {address: 10.0.0.1, lables: {app: a}}\n"  # line 9
    )
    write(tmp_path, {"a.yaml": service_entry("a", "[a.example]", extra=extra)})
    found = check(paths=[str(tmp_path)]).findings
    unknown = [(f.code, f.line, f.message) for f in found if f.code == "unknown-field"]
    label = "document 1 (ServiceEntry default/a)"
    assert unknown == [
        (
            "unknown-field",
            7,
            f"{label}: spec.resolutoin: unknown field (did you mean 'resolution'?)",
        ),
        (
            "unknown-field",
            9,
            f"{label}: spec.endpoints[0].lables: unknown field (did you mean 'labels'?)",
        ),
    ]
    # the rest of the document is still checked, without repeating the unknown fields
    (invalid,) = [f.message for f in found if f.code == "invalid-document"]
    assert invalid == f"{label}: spec.endpoints: resolution NONE cannot have endpoints"
    assert cli.main(["validate", str(tmp_path)]) == 1
    out, _ = capsys.readouterr()
    assert f"Error [unknown-field] {tmp_path / 'a.yaml'}:7: {label}: spec.resolutoin" in out


def test_an_unknown_field_alone_fails_validate_though_the_daemon_serves_it(
    tmp_path: Path,
) -> None:
    text = workload_entry("w", "{a: b}") + "  serviceAcount: sa\n"  # line 7
    write(tmp_path, {"w.yaml": text})
    found = check(paths=[str(tmp_path)]).findings
    (finding,) = [f for f in found if f.severity is Severity.ERROR]
    assert (finding.code, finding.line) == ("unknown-field", 7)
    assert finding.message.endswith(
        "spec.serviceAcount: unknown field (did you mean 'serviceAccount'?)"
    )


def test_yaml_error_line_is_the_parsers(tmp_path: Path) -> None:
    text = workload_entry("w", "{a: b}") + "  address: 10.0.0.2\n"  # duplicate key, line 7
    write(tmp_path, {"f.yaml": text})
    (finding,) = check(paths=[str(tmp_path)]).findings
    assert (finding.code, finding.document, finding.line) == ("invalid-document", 1, 7)
    assert "duplicate key 'address'" in finding.message


def test_document_lines() -> None:
    assert document_lines("a: 1\n---\n\n# c\nb: 2\n--- x\n") == [1, 5, 6]
    assert document_lines("a: [\n") == []


# -- registryd.yaml -------------------------------------------------------------------


def config_findings(tmp_path: Path, text: str) -> list[Finding]:
    config = tmp_path / "registryd.yaml"
    config.write_text(text)
    return list(check(config=str(config)).findings)


def daemon_error(config: Path) -> str:
    """What the daemon says at start about ``config`` (flags, then each registry)."""
    try:
        settings = cli.parse_args(["discovery", "--config", str(config)])
        for reg in settings.registries:
            require(reg)
            create_adapter(reg, AdapterContext())
    except ConfigError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registries: [}\n", r"invalid YAML"),
        (
            "registry: []\n",
            r"^unknown top-level key 'registry' \(did you mean 'registries'\?\)",
        ),
        ("registries:\n- {name: a, type: nope}\n", r"registry 'a': unknown type 'nope'"),
        (
            "registries:\n- {name: c, type: consul, bogus: 1}\n",
            r"registry 'c' \(consul\): unknown settings \['bogus'\]",
        ),
        ("registries:\n- {name: c, type: consul, wait: soon}\n", r"registry 'c' \(consul\).*wait"),
        (
            "registries:\n- {name: e, type: etcd, prefix: relative}\n",
            r"registry 'e' \(etcd\).*prefix",
        ),
        ("registries:\n- {name: e, type: etcd, username: u}\n", r"registry 'e' \(etcd\).*pass"),
        ("registries:\n- {name: a, type: memory}\n- {name: a, type: memory}\n", r"duplicate"),
    ],
)
def test_registryd_yaml_errors_are_the_daemons(tmp_path: Path, text: str, expected: str) -> None:
    (finding,) = config_findings(tmp_path, text)
    assert (finding.severity, finding.code) == (Severity.ERROR, "invalid-config")
    config = tmp_path / "registryd.yaml"
    assert finding.source == f"--config {config}"
    # the daemon's line, its "--config FILE:LINE" said once, as the finding's place
    place = f"{finding.source}:{finding.line}" if finding.line else finding.source
    assert f"{place}: {finding.message}" == daemon_error(config)
    assert not finding.message.startswith("--config")
    assert re.search(expected, finding.message), finding.message


def test_config_yaml_error_has_its_line(tmp_path: Path) -> None:
    text = "registries:\n- name: a\n  type: memory\n- {name: b, type: memory\n"
    (finding,) = config_findings(tmp_path, text)
    assert "invalid YAML" in finding.message and "line 5, column 1" in finding.message
    assert finding.line == 5  # the problem's line, not its context's (line 4)


def test_serviceentry_path_that_is_no_directory(tmp_path: Path) -> None:
    # a finding of registryd.yaml (exit 1), in the daemon's words when it refuses to start
    (finding,) = config_findings(
        tmp_path, "registries:\n- {name: f, type: serviceentry, path: missing}\n"
    )
    assert finding.message == (
        f"registry 'f' (serviceentry): 'path': no such file or directory: {tmp_path / 'missing'}"
    )
    (tmp_path / "file").write_text("")
    (finding,) = config_findings(
        tmp_path, "registries:\n- {name: f, type: serviceentry, path: file}\n"
    )
    assert finding.message == (
        f"registry 'f' (serviceentry): 'path' {tmp_path / 'file'}: not a directory"
    )


def test_every_registry_is_checked_and_serviceentry_paths_are_read(tmp_path: Path) -> None:
    entries = tmp_path / "entries"
    entries.mkdir()
    write(entries, {"bad.yaml": f"{API}kind: ServiceEntry\nmetadata: {{name: x}}\nspec: {{}}\n"})
    found = config_findings(
        tmp_path,
        "registries:\n"
        "- {name: c, type: consul, bogus: 1}\n"
        "- {name: ok, type: consul}\n"
        "- {name: files, type: serviceentry, path: entries}\n"  # relative to the config
        "- {name: e, type: etcd, timeout: -1}\n",
    )
    assert [(f.code, Path(f.source.removeprefix("--config ")).name) for f in found] == [
        ("invalid-config", "registryd.yaml"),
        ("invalid-config", "registryd.yaml"),
        ("invalid-document", "bad.yaml"),
    ]
    assert "registry 'c'" in found[0].message and "registry 'e'" in found[1].message


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def test_nothing_is_contacted(tmp_path: Path, listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    found = config_findings(
        tmp_path,
        "registries:\n"
        f"- {{name: c, type: consul, address: '127.0.0.1:{port}'}}\n"
        f"- {{name: e, type: etcd, endpoints: ['127.0.0.1:{port}']}}\n",
    )
    assert found == []
    with pytest.raises(BlockingIOError):  # no connection is waiting to be accepted
        listening.accept()


# -- the command: output and exit status ----------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = cli.main(["validate", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_clean_files_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"a.yaml": service_entry("a", "[a.example]")})
    assert run(capsys, str(tmp_path)) == (0, "No problems found in 1 file.\n", "")


def test_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"a.yaml": "a: [\n"})
    status, out, _ = run(capsys, "--configDir", str(tmp_path))
    assert status == 1
    assert out.startswith(f"Error [invalid-file] {tmp_path / 'a.yaml'}:2: invalid YAML at line 2")
    assert out.endswith("1 error(s), 0 warning(s) in 1 file.\n")


def test_warnings_exit_0_unless_the_threshold_is_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {"a.yaml": service_entry("a", "[a.example, A.example]")})
    assert run(capsys, str(tmp_path))[0] == 0
    status, out, _ = run(capsys, "--failure-threshold", "warning", "-o", "json", str(tmp_path))
    assert status == 1
    body = json.loads(out)
    assert (body["errors"], body["warnings"], body["files"]) == (0, 1, 1)
    assert body["findings"][0]["code"] == "duplicate-host"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "nothing to check"),
        (("missing.yaml",), "missing.yaml: no such file or directory"),
        (("--configDir", "missing"), "--configDir missing: no such file or directory"),
        (("--config", "missing.yaml"), "--config missing.yaml: no such file"),
        (("-o", "yaml", "."), "invalid choice: 'yaml'"),
        (("--bogus",), "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, *args)
    assert (status, out) == (2, "")
    assert err.startswith("registryd: error: ") and err.count("\n") == 1
    assert expected in err


def test_kubeconfig_flag_is_the_default_of_kubernetes_registries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)  # not in a pod
    config = tmp_path / "registryd.yaml"
    config.write_text("registries:\n- {name: east, type: kubernetes}\n")
    status, out, _ = run(capsys, "--config", str(config))
    assert status == 1 and "not running in a pod" in out
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert run(capsys, "--config", str(config), "--kubeconfig", str(kubeconfig))[0] == 0


def test_a_bad_PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    config = tmp_path / "registryd.yaml"
    config.write_text(
        "registries:\n- {name: east, type: kubernetes}\n- {name: west, type: kubernetes}\n"
    )
    args = ("--config", str(config), "--kubeconfig", str(kubeconfig))
    monkeypatch.setenv("PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES", "yes")
    status, out, _ = run(capsys, *args)
    assert status == 1
    assert out.splitlines() == [
        "Error [invalid-config] environment: PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES: expected "
        "true or false (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False), got 'yes'",
        "1 error(s), 0 warning(s) in 0 files and 2 registries.",
    ]
    monkeypatch.setenv("PILOT_ENABLE_EDS_FOR_HEADLESS_SERVICES", "True")
    assert run(capsys, *args)[:2] == (0, "No problems found in 0 files and 2 registries.\n")
    config.write_text("registries:\n- {name: east, type: kubernetes, eds_for_headless: 1}\n")
    status, out, _ = run(capsys, *args)  # a registry's own bad setting: its own error
    assert status == 1 and "registry 'east' (kubernetes): 'eds_for_headless'" in out
