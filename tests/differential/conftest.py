"""One istiod and one registryd for every file comparison of a test run (they are
reloaded with each input: :meth:`tests.differential.servers.Pair.serve`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.differential.servers import Pair


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    servers = Pair(tmp_path_factory.mktemp("differential"))
    try:
        yield servers
    finally:
        servers.stop()
