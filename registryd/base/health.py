"""Long-lived tasks that fail: counted, logged with their traceback, and those that end
for good remembered, so that ``/healthz`` and ``registryd_task_failures_total`` say so.

Every layer runs such tasks (a stream's reader and writer, the push loop, a registry, an
xDS worker, an HTTP handler), so this module sits below all of them and knows none.
Failures are logged on the ``supervisor`` scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["TaskFailures", "TaskHealth"]

log = logging.getLogger("registryd.supervisor")


class TaskHealth:
    """Unexpected failures of long-lived tasks, counted per task name (see the module
    docstring).  Task names are fixed words (``push``, ``xds-writer``, ``http``) or
    ``registry:<provider>/<instance>``, so the metric's label set stays small."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.dead: dict[str, str] = {}  # task name -> why it ended

    def failed(self, task: str, error: BaseException) -> None:
        """Log ``error`` (with its traceback) as a failure of ``task`` and count it."""
        self.failures[task] = self.failures.get(task, 0) + 1
        log.error(
            "task %s failed: %s: %s",
            task,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
        )

    def watch(self, task: asyncio.Task[None], name: str | None = None) -> None:
        """Report ``task`` as dead if it ever ends with an exception (cancellation is a
        normal end)."""
        label = name or task.get_name()

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                self.dead[label] = f"{type(error).__name__}: {error}"
                self.failed(label, error)

        task.add_done_callback(done)


class TaskFailures(Collector):
    """``registryd_task_failures_total{task}``: the counts ``failures`` returns (a
    :attr:`TaskHealth.failures` copy) at scrape time.  Register it once per process (the
    main process and each xDS worker each count their own tasks)."""

    def __init__(self, failures: Callable[[], dict[str, int]]) -> None:
        self._failures = failures

    def collect(self) -> Iterator[Metric]:
        tasks = CounterMetricFamily(
            "registryd_task_failures",
            "Unexpected exceptions in long-lived tasks (push, xds-reader, xds-writer, "
            "xds-worker, http, registry:<provider>/<instance>), logged with their traceback.",
            labels=["task"],
        )
        for task, count in sorted(self._failures().items()):
            tasks.add_metric([task], count)
        yield tasks
