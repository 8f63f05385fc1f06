"""One istiod and one registryd for the file comparisons of a test module (they are
reloaded with each input: :meth:`tests.differential.servers.Pair.serve`).  Per module,
not per session: an idle istiod left running would load the rest of the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.differential.servers import Pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    servers = Pair(tmp_path_factory.mktemp("differential"))
    try:
        yield servers
    finally:
        servers.stop()
