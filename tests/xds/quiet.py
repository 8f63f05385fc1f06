"""Deterministic "nothing more was sent" checks for ADS tests.

Responses on one stream are written in order, and the server plans CDS, EDS, LDS, RDS
in that order.  :func:`nothing_pending` subscribes the client to one more RDS name,
unknown to the server; the server always answers a new name (with an empty
RouteConfiguration).  Anything the server meant to send before that request was read
arrives before or with that answer, so "the next response is exactly the barrier" proves
nothing else was sent, without waiting a fixed time.
"""

from __future__ import annotations

import itertools

from registryd.testing import AdsClient
from registryd.testing.ads import TYPES

_barriers = itertools.count(1)


async def nothing_pending(client: AdsClient) -> None:
    """Fail if the server sends anything before answering a barrier request."""
    rds = TYPES["rds"]
    name = f"barrier-{next(_barriers)}"
    client.subscribe("rds", [*client.subscriptions.get(rds, []), name])
    response = await client.next()
    assert (response.type_url, response.names) == (rds, [name]), (
        f"unexpected response {response.type_url} {response.names}"
    )
