"""What the kubernetes registry keeps of Pods: their labels, and which slices name them.

A cluster can run 100 000 pods, so a Pod is reduced to its labels as soon as it arrives
(:func:`shrink_pod`, applied to every listed item and watch event before it is queued),
and equal label sets are stored once (:class:`PodLabels` interns them: the replicas of
one workload share theirs).  Pure: no I/O.

:class:`PodLabels` also indexes which EndpointSlices name a pod in an endpoint's
``targetRef``, so that a pod whose labels change dirties exactly the Services whose
endpoints it backs, without a scan of every slice.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from registryd.model import Labels

__all__ = ["PodLabels", "shrink_pod"]

Key = tuple[str, str]  # (namespace, name)


def shrink_pod(obj: Any) -> Any:
    """A Pod's JSON cut down to what the registry reads (name, namespace, labels and
    resourceVersion); anything that is not a Pod object is returned as it is."""
    if not isinstance(obj, Mapping):
        return obj
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return obj
    fields = ("name", "namespace", "labels", "resourceVersion")
    kept = {k: metadata[k] for k in fields if k in metadata}
    if isinstance(kept.get("namespace"), str):
        kept["namespace"] = sys.intern(kept["namespace"])
    return {"metadata": kept}


class PodLabels:
    """Pod labels interned (one shared copy per distinct label set, counted by its
    users), and the slices that reference each pod.  The labels per pod are kept by the
    caller."""

    def __init__(self) -> None:
        self._pool: dict[Labels, list[Any]] = {}  # labels -> [the shared copy, users]
        self._slices: dict[Key, tuple[Key, ...]] = {}  # pod -> slices naming it

    def intern(self, labels: Labels) -> Labels:
        """The shared copy of ``labels``, with one more user (see :meth:`release`)."""
        entry = self._pool.setdefault(labels, [labels, 0])
        entry[1] += 1
        shared: Labels = entry[0]
        return shared

    def release(self, labels: Labels) -> None:
        """One user of ``labels`` (as :meth:`intern` gave them) is gone."""
        entry = self._pool[labels]
        entry[1] -= 1
        if not entry[1]:
            del self._pool[labels]

    @property
    def distinct(self) -> int:
        """How many different label sets are stored."""
        return len(self._pool)

    # -- which slices name which pods ------------------------------------------------------

    def link(self, slice_key: Key, pods: Iterable[Key]) -> None:
        for pod in set(pods):
            self._slices[pod] = (*self._slices.get(pod, ()), slice_key)

    def unlink(self, slice_key: Key, pods: Iterable[Key]) -> None:
        for pod in set(pods):
            rest = tuple(k for k in self._slices.get(pod, ()) if k != slice_key)
            if rest:
                self._slices[pod] = rest
            else:
                self._slices.pop(pod, None)

    def slices_of(self, pod: Key) -> tuple[Key, ...]:
        """The slices whose endpoints name ``pod`` as their ``targetRef``."""
        return self._slices.get(pod, ())
