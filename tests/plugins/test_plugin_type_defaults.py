"""A registry type's defaults come from its adapter: a plugin class that declares its own
default priority, log scope and scope description gets them end to end, through
registryd.yaml, the merge, the problems it reports, ``--log_output_level`` and
``/debug/logging``; a malformed declaration is its registry's config error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from registryd.adapter import AdapterContext, ConfigError
from registryd.daemon.app import App
from registryd.daemon.config import RegistryConfig, load_registries
from registryd.daemon.plugins import adapter_type, create_adapter
from registryd.model import Port, ShardKey
from registryd.registry.store import ChangeEvent
from registryd.tools.cli import parse_args
from tests.conftest import loopback_settings
from tests.support.plugins import install

PLUGINS = {
    "cmdbplug.py": (
        "import asyncio\n"
        "from registryd.adapter import Problems, Replace\n"
        "from registryd.model import Port, Service\n"
        "\n"
        "class Cmdb:\n"
        "    default_priority = 450\n"
        "    log_scope = 'cmdb-sync'\n"
        "    log_description = 'CMDB sync: hosts of the asset database.'\n"
        "\n"
        "    def __init__(self, *, name, settings, context):\n"
        "        pass\n"
        "\n"
        "    async def watch(self):\n"
        "        port = Port(number=9090, name='tcp')\n"
        "        yield Replace(services=(Service(hostname='db.example', ports=(port,)),))\n"
        "        yield Problems(errors={'asset 42': 'no owner recorded'})\n"
        "        await asyncio.Event().wait()\n"
        "\n"
        "class Sloppy(Cmdb):\n"
        "    default_priority = 'high'\n"
    ),
    "typeplugins-0.dist-info/METADATA": "Metadata-Version: 2.1\nName: typeplugins\nVersion: 0\n",
    "typeplugins-0.dist-info/entry_points.txt": (
        "[registryd.adapters]\ncmdb = cmdbplug:Cmdb\nsloppy = cmdbplug:Sloppy\n"
    ),
}
SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.0.5}]
"""
CMDB, FILES = ShardKey("cmdb", "assets"), ShardKey("serviceentry", "files")


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugins installed the way pip would (a dist-info on sys.path)."""
    return install(PLUGINS, tmp_path, monkeypatch)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def scope_lines(restore_loggers: None) -> Iterator[Lines]:
    """What is logged under the plugin's scope ``cmdb-sync``."""
    lines = Lines()
    logging.getLogger("registryd.cmdb-sync").addHandler(lines)
    yield lines


def test_the_scope_a_plugin_declares_is_accepted_by_log_output_level(plugins: Path) -> None:
    assert adapter_type("cmdb").log_scope == "cmdb-sync"
    parse_args(["discovery", "--log_output_level=cmdb-sync:debug"], environ={})
    with pytest.raises(ConfigError, match=r"unknown scope 'cmdb-syncs'.*cmdb-sync"):
        parse_args(["discovery", "--log_output_level=cmdb-syncs:debug"], environ={})


def test_the_nacos_scope_is_accepted_by_log_output_level() -> None:
    assert adapter_type("nacos").log_scope == "nacos"
    parse_args(["discovery", "--log_output_level=nacos:debug,default:info"], environ={})


async def test_a_plugins_declared_priority_and_scope_work_end_to_end(
    plugins: Path, scope_lines: Lines
) -> None:
    (plugins / "se").mkdir()
    (plugins / "se" / "db.yaml").write_text(SERVICE_ENTRY)
    config = plugins / "registryd.yaml"
    config.write_text(
        "registries:\n- {name: assets, type: cmdb}\n- {name: files, type: serviceentry, path: se}\n"
    )
    registries = load_registries(config)
    assert [(r.name, r.priority) for r in registries] == [("assets", 450), ("files", 300)]

    app = App(loopback_settings(registries=tuple(registries)))
    both = asyncio.Event()

    def merged(event: ChangeEvent) -> None:
        served = app.store.view.services.get("db.example")
        if served is not None and len(served.shards) == 2:
            both.set()

    app.store.subscribe(merged)
    await app.start()
    try:
        await asyncio.wait_for(both.wait(), 10)
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{app.http_port}/debug/logging"
            async with session.get(url) as response:
                scopes = {s["name"]: s["description"] for s in await response.json()}
    finally:
        await app.stop()
    served = app.store.view.services["db.example"]
    assert (served.winner, served.shards, served.priorities) == (CMDB, (CMDB, FILES), (450, 300))
    assert served.service.ports == (Port(number=9090, name="tcp"),)  # the plugin's, it won
    assert app.store.shards[CMDB].effective_priority == 450

    problems = [r.getMessage() for r in scope_lines.records]
    assert problems == ["registry cmdb/assets: no owner recorded"]
    assert scopes["cmdb-sync"] == "CMDB sync: hosts of the asset database."
    assert scopes["serviceentry"] == "ServiceEntry YAML registry adapter."


def test_a_malformed_declaration_is_the_registrys_config_error(plugins: Path) -> None:
    assert adapter_type("sloppy").default_priority == 0  # a default until it is fixed
    reg = RegistryConfig(name="assets", type="sloppy")
    with pytest.raises(ConfigError, match=r"'assets'.*default_priority must be an integer"):
        create_adapter(reg, AdapterContext())
