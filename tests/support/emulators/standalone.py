"""Running an emulator as a standalone server, for trying registryd by hand:
``python -m tests.support.emulators.consul [--port P] [FILE]`` and
``python -m tests.support.emulators.nacos [--port P] [FILE]``.

Contract: :func:`run` parses the command line (``--port``, default the real server's
port; 0 picks a free one; an optional state file), builds the emulator with the file's
state, serves it on 127.0.0.1 and prints one line, ``<name> emulator: <url> (address
<host:port>)``, once it listens; then serves until SIGINT (Ctrl-C) or SIGTERM and exits
0.  A file that cannot be read or does not have the emulator's format is one line on
stderr and exit status 2, before anything listens.

The state file is YAML (or JSON, which is YAML too): one mapping whose keys each
emulator documents (``services`` for Consul, ``instances`` for Nacos), each a list of
mappings; unknown keys are errors, so a typo does not pass unnoticed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.emulators.base import LoopbackServer

__all__ = ["StateError", "entries", "run"]


class StateError(ValueError):
    """A state file that does not have the emulator's format; the message says where."""


def entries(
    document: Any, key: str, fields: Mapping[str, type | tuple[type, ...]], required: Sequence[str]
) -> list[dict[str, Any]]:
    """The list under ``key`` of a state document, each entry checked: only ``fields``
    (name -> accepted types), ``required`` ones present.  An absent key is an empty list."""
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise StateError(
            f"the file must hold a mapping with '{key}', not {type(document).__name__}"
        )
    unknown = sorted(set(document) - {key})
    if unknown:
        raise StateError(f"unknown keys {unknown}: the file has only '{key}'")
    items = document.get(key) or []
    if not isinstance(items, list):
        raise StateError(f"'{key}' must be a list")
    checked = []
    for number, item in enumerate(items, 1):
        where = f"{key}[{number}]"
        if not isinstance(item, Mapping):
            raise StateError(f"{where} must be a mapping")
        extra = sorted(set(item) - set(fields))
        if extra:
            raise StateError(f"{where}: unknown fields {extra} (known: {sorted(fields)})")
        for name in required:
            if name not in item:
                raise StateError(f"{where}: '{name}' is required")
        for name, value in item.items():
            accepted = fields[name]
            if isinstance(value, bool) and bool not in (
                accepted if isinstance(accepted, tuple) else (accepted,)
            ):
                raise StateError(f"{where}: '{name}' has the wrong type (bool)")
            if not isinstance(value, accepted):
                raise StateError(f"{where}: '{name}' has the wrong type ({type(value).__name__})")
        checked.append(dict(item))
    return checked


async def _serve(server: LoopbackServer, name: str, port: int) -> None:
    server.port = port
    await server.start()
    print(f"{name} emulator: {server.url} (address {server.address})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(
    name: str,
    default_port: int,
    build: Callable[[Any], LoopbackServer],
    argv: Sequence[str] | None = None,
    *,
    file_help: str,
) -> None:
    """Parse ``argv``, build the emulator from the state file with ``build(document)``
    (which raises :class:`StateError`) and serve it (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m tests.support.emulators.{name}",
        description=f"{name} emulator on 127.0.0.1, until Ctrl-C",
    )
    parser.add_argument(
        "--port", type=int, default=default_port, help=f"default {default_port}; 0: any free"
    )
    parser.add_argument("file", nargs="?", type=Path, help=file_help)
    args = parser.parse_args(argv)
    if not 0 <= args.port < 65536:
        parser.error(f"--port {args.port} is out of range")
    document = None
    if args.file is not None:
        try:
            document = yaml.safe_load(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            parser.error(f"{args.file}: {exc}")
    try:
        server = build(document)
    except StateError as exc:
        parser.error(f"{args.file}: {exc}")
    try:
        asyncio.run(_serve(server, name, args.port))
    except OSError as exc:  # the port is taken
        print(f"{parser.prog}: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
