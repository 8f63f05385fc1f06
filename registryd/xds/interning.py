"""Recognising a request's resource names from its bytes, without decoding them.

Envoy repeats its whole EDS subscription (often thousands of names) in every ACK, and a
thousand Envoys usually share one subscription.  Decoding those names into Python
strings on every ACK would dominate the server's CPU, so :class:`Interner` keeps each
distinct subscription once, keyed by its serialized bytes, and :func:`names_start`
finds where the names sit in a serialized request so that an ACK repeating a
subscription is recognised by comparing bytes (:meth:`registryd.xds.stream.Connection.on_raw`).
:data:`added` computes what a changed subscription added once for every stream that
made the same change.

Memory contract: nothing here keeps a subscription alive.  Sets are held weakly and the
interner is bounded by bytes, so what a client invented goes when its stream does.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections import OrderedDict

from envoy.service.discovery.v3 import discovery_pb2

__all__ = ["NAME_TAG", "Differences", "Interner", "added", "names_start"]

_NOT_NAMES = ("version_info", "node", "response_nonce", "type_url", "error_detail")


class Interner:
    """Turns a request's resource names into a shared ``(key, names, star)`` triple.

    Envoy repeats its whole EDS subscription (often thousands of names) in every ACK.
    Materialising those as Python strings on every ACK would dominate the server's CPU,
    so the names are compared as serialized bytes (copied and serialized in C), and
    decoded into a set only the first time a subscription is seen.  A thousand Envoys
    usually share one subscription, hence one set.

    Memory contract: the interner never keeps a subscription alive.  It holds each name
    set weakly, so an entry goes away as soon as no stream's state uses its set any more
    (a client that subscribed to 90,000 made-up names and left leaves nothing behind),
    and the entries it holds are bounded by ``budget`` bytes, keys included (the
    least recently used are forgotten first; forgetting costs only a re-decode).
    """

    def __init__(self, budget: int = 64 * 2**20) -> None:
        # key -> (names, weakly; star; bytes held; the key itself, so equal keys are one)
        self._sets: OrderedDict[bytes, tuple[weakref.ref[frozenset[str]], bool, int, bytes]] = (
            OrderedDict()
        )
        self._budget = budget
        self.size = 0  # estimated bytes of the entries held

    @property
    def entries(self) -> int:
        """How many subscriptions are interned now."""
        return len(self._sets)

    def known(
        self, raw: bytes, start: int, request: discovery_pb2.DiscoveryRequest
    ) -> tuple[bytes, frozenset[str], bool] | None:
        """The interned subscription whose names are the bytes of ``raw`` from ``start``
        up to the fields that follow the names, without serializing anything big; None
        when those bytes are not an interned subscription (then call the interner).

        Sound because ``raw`` is then ``head + key + tail``: the head holds no names
        (:func:`names_start`), the tail is exactly the request's own type, nonce and
        error serialized (no names), and an interned key is nothing but names."""
        tail = discovery_pb2.DiscoveryRequest(
            type_url=request.type_url, response_nonce=request.response_nonce
        )
        if request.HasField("error_detail"):
            tail.error_detail.CopyFrom(request.error_detail)
        after = tail.SerializeToString(deterministic=True)
        end = len(raw) - len(after)
        if end < start or not raw.endswith(after):
            return None
        found = self._sets.get(raw[start:end])
        names = found[0]() if found is not None else None
        if found is None or names is None:
            return None
        return found[3], names, found[1]

    def __call__(
        self, request: discovery_pb2.DiscoveryRequest
    ) -> tuple[bytes, frozenset[str], bool]:
        probe = discovery_pb2.DiscoveryRequest()
        probe.CopyFrom(request)
        for name in _NOT_NAMES:
            probe.ClearField(name)
        key = probe.SerializeToString(deterministic=True)
        found = self._sets.get(key)
        names = found[0]() if found is not None else None
        if found is not None and names is not None:
            self._sets.move_to_end(key)
            return found[3], names, found[1]
        listed = list(request.resource_names)
        names = frozenset(n for n in listed if n != "*")
        star = "*" in listed
        self._forget(key)
        size = _entry_size(key, names)
        if size <= self._budget:
            ref = weakref.ref(names, functools.partial(self._gone, key))
            self._sets[key] = (ref, star, size, key)
            self.size += size
            while self.size > self._budget:
                self._forget(next(iter(self._sets)))
        return key, names, star

    def _gone(self, key: bytes, ref: weakref.ref[frozenset[str]]) -> None:
        found = self._sets.get(key)
        if found is not None and found[0] is ref:
            self._forget(key)

    def _forget(self, key: bytes) -> None:
        found = self._sets.pop(key, None)
        if found is not None:
            self.size -= found[2]


class Differences:
    """``new - old`` of interned sets, remembered for the ``kept`` latest pairs: the same
    change on a thousand streams is computed once (interned sets compare by identity).

    Holds neither set: an entry (and the difference, which shares the sets' strings)
    goes as soon as either set does, so a subscription no stream uses any more is never
    kept alive here."""

    def __init__(self, kept: int = 8) -> None:
        self._kept = kept
        # (id(new), id(old)) -> (new, weakly; old, weakly; new - old)
        self._entries: OrderedDict[
            tuple[int, int],
            tuple[weakref.ref[frozenset[str]], weakref.ref[frozenset[str]], frozenset[str]],
        ] = OrderedDict()

    def __call__(self, new: frozenset[str], old: frozenset[str]) -> frozenset[str]:
        key = (id(new), id(old))
        found = self._entries.get(key)
        if found is not None and found[0]() is new and found[1]() is old:
            return found[2]
        added = new - old
        drop = functools.partial(self._drop, key)
        self._entries[key] = (weakref.ref(new, drop), weakref.ref(old, drop), added)
        while len(self._entries) > self._kept:
            self._entries.popitem(last=False)
        return added

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[int, int], ref: weakref.ref[frozenset[str]]) -> None:
        found = self._entries.get(key)
        if found is not None and ref in (found[0], found[1]):
            del self._entries[key]


added = Differences()
NAME_TAG = b"\x1a"  # DiscoveryRequest.resource_names: field 3, length-delimited
_HEAD_TAGS = (0x0A, 0x12)  # version_info (1) and node (2), which come before the names


def names_start(raw: bytes) -> int | None:
    """Where the ``resource_names`` of a serialized DiscoveryRequest start: just after its
    ``version_info`` and ``node`` fields, which clients serialize first (fields in number
    order).  ``None`` when the bytes are not laid out like that.  The caller still checks
    that what follows the names holds none (so the names are exactly those bytes)."""
    pos, size = 0, len(raw)
    while pos < size and raw[pos] in _HEAD_TAGS:
        pos += 1
        length, shift = 0, 0
        while True:
            if pos >= size or shift > 63:
                return None
            byte = raw[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        pos += length
    return pos if pos <= size else None


def _entry_size(key: bytes, names: frozenset[str]) -> int:
    """Rough bytes an interned entry holds: the key, the set and its strings."""
    return len(key) + sys.getsizeof(names) + sum(len(n) + 49 for n in names)
