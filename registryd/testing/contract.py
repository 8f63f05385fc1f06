"""The adapter contract as a test suite that plugin authors run against their adapter.

Subclass :class:`AdapterContract` in a pytest module under a name starting with ``Test``
and implement its hooks; pytest then runs every ``test_*`` method against your adapter::

    class TestInventoryAdapter(AdapterContract):
        async def create(self) -> Adapter: ...            # a new adapter on the test registry
        async def add_service(self, name: str) -> str: ... # register; return its hostname
        async def remove_service(self, name: str) -> None: ...
        async def break_registry(self) -> None: ...        # make it unreachable (optional)
        async def heal_registry(self) -> None: ...         # and reachable again (optional)

The tests are plain synchronous functions that run their own event loop, so no pytest
plugin is needed; every step is bounded by :attr:`AdapterContract.timeout`.  What they
check (see :mod:`registryd.adapter` for the contract itself):

* the first update of ``watch()`` (``Problems`` aside) is a ``Replace`` with the full state;
* later changes arrive as ``Upsert``/``Delete`` of the changed hostname, not as silence;
* an unreachable registry makes ``watch()`` raise, instead of hanging or spinning;
* after the registry returns, a new ``watch()`` starts again with the full, current state;
* cancelling ``watch()`` finishes promptly and leaves no task of the adapter running;
* bad settings are rejected by the factory with ``ConfigError`` (:meth:`bad_settings`).

Registry state is shared between tests only if your hooks share it: give each test a
fresh registry in :meth:`setup_registry` / :meth:`teardown_registry` when you can.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from registryd.adapter import (
    Adapter,
    AdapterContext,
    AdapterFactory,
    ConfigError,
    Delete,
    Problems,
    Replace,
    Update,
    Upsert,
)

__all__ = ["AdapterContract"]

T = TypeVar("T")


class AdapterContract:
    """Base class of the contract suite; see the module docstring."""

    timeout: float = 10.0  # seconds any one step may take
    factory: AdapterFactory | None = None  # for test_bad_settings_are_config_errors

    # -- hooks ---------------------------------------------------------------------------
    async def setup_registry(self) -> None:
        """Called before each test, inside its event loop."""

    async def teardown_registry(self) -> None:
        """Called after each test, inside its event loop, even when it failed."""

    async def create(self) -> Adapter:
        raise NotImplementedError

    async def add_service(self, name: str) -> str:
        """Register service ``name`` with at least one endpoint; return its hostname."""
        raise NotImplementedError

    async def remove_service(self, name: str) -> None:
        raise NotImplementedError

    async def break_registry(self) -> None:
        """Make the registry unreachable.  Leave unimplemented to skip those tests."""
        raise NotImplementedError

    async def heal_registry(self) -> None:
        raise NotImplementedError

    def bad_settings(self) -> Sequence[Mapping[str, Any]]:
        """Settings the factory must reject with ConfigError (needs :attr:`factory`)."""
        return ()

    # -- machinery ---------------------------------------------------------------------------
    def _run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            await self.setup_registry()
            try:
                await scenario()
            finally:
                await self.teardown_registry()

        asyncio.run(main())

    async def _within(self, awaitable: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except TimeoutError:
            raise AssertionError(f"adapter contract: {what} within {self.timeout}s") from None

    async def _next(self, updates: AsyncIterator[Update], what: str) -> Update:
        """The next update that is not ``Problems``."""
        while True:
            update = await self._within(anext(updates), what)
            if not isinstance(update, Problems):
                return update

    async def _optional(self, hook: Callable[[], Awaitable[None]]) -> bool:
        try:
            await hook()
        except NotImplementedError:
            return False
        return True

    # -- the contract ------------------------------------------------------------------------
    def test_first_update_is_the_full_state(self) -> None:
        async def scenario() -> None:
            hosts = {await self.add_service("alpha"), await self.add_service("beta")}
            updates = (await self.create()).watch()
            try:
                first = await self._next(updates, "a first update")
                assert isinstance(first, Replace), f"first update must be Replace, got {first!r}"
                served = {s.hostname for s in first.services}
                assert hosts <= served, f"Replace lacks {sorted(hosts - served)}"
                for endpoint in first.endpoints:
                    assert endpoint.hostname in served, f"endpoint of unknown {endpoint.hostname}"
            finally:
                await _close(updates, self.timeout)

        self._run(scenario)

    def test_changes_arrive_as_increments(self) -> None:
        async def scenario() -> None:
            await self.add_service("alpha")
            updates = (await self.create()).watch()
            try:
                assert isinstance(await self._next(updates, "the full state"), Replace)
                added = await self.add_service("gamma")
                upsert = await self._until(updates, lambda u: _upserts(u, added), "Upsert")
                assert upsert.endpoints, f"Upsert of {added} carries no endpoints"
                assert all(e.hostname == added for e in upsert.endpoints)
                await self.remove_service("gamma")
                await self._until(updates, lambda u: _deletes(u, added), f"Delete of {added}")
            finally:
                await _close(updates, self.timeout)

        self._run(scenario)

    async def _until(
        self, updates: AsyncIterator[Update], match: Callable[[Update], T | None], what: str
    ) -> T:
        async def scan() -> T:
            async for update in updates:
                assert not isinstance(update, Replace), (
                    f"a Replace while connected (expected increments): waiting for {what}"
                )
                found = match(update)
                if found is not None:
                    return found
            raise AssertionError(f"watch() ended while waiting for {what}")

        return await self._within(scan(), what)

    def test_an_unreachable_registry_raises_and_a_new_watch_resyncs(self) -> None:
        async def scenario() -> None:
            await self.add_service("alpha")
            updates = (await self.create()).watch()
            try:
                assert isinstance(await self._next(updates, "the full state"), Replace)
                if not await self._optional(self.break_registry):
                    _skip("break_registry() is not implemented")

                async def drain() -> None:
                    async for _ in updates:
                        pass

                try:
                    await self._within(drain(), "watch() to raise once the registry is gone")
                except AssertionError:
                    raise
                except Exception:
                    pass  # raised, as the contract says
                else:
                    raise AssertionError("watch() ended without raising")
            finally:
                await _close(updates, self.timeout)
            await self.heal_registry()
            gone = await self.add_service("alpha")  # its hostname; already registered
            await self.remove_service("alpha")
            now = await self.add_service("delta")
            again = (await self.create()).watch()
            try:
                first = await self._next(again, "the full state after the registry came back")
                assert isinstance(first, Replace), f"expected Replace, got {first!r}"
                served = {s.hostname for s in first.services}
                assert now in served, f"{now} missing after resync: {sorted(served)}"
                assert gone not in served, f"{gone} still served after it was removed"
            finally:
                await _close(again, self.timeout)

        self._run(scenario)

    def test_cancelling_watch_is_prompt_and_leaves_nothing_running(self) -> None:
        async def scenario() -> None:
            await self.add_service("alpha")
            before = asyncio.all_tasks()
            adapter = await self.create()
            started = asyncio.Event()

            async def consume() -> None:
                async for update in adapter.watch():
                    if isinstance(update, Replace):
                        started.set()

            task = asyncio.create_task(consume())
            await self._within(started.wait(), "the full state")
            task.cancel()
            await self._within(
                asyncio.gather(task, return_exceptions=True), "watch() to finish when cancelled"
            )
            await asyncio.sleep(0)
            left = [
                t
                for t in asyncio.all_tasks() - before
                if t is not asyncio.current_task() and not t.done()
            ]
            assert not left, f"tasks still running after watch() was cancelled: {left}"

        self._run(scenario)

    def test_bad_settings_are_config_errors(self) -> None:
        cases = self.bad_settings()
        if self.factory is None or not cases:
            _skip("no factory or bad_settings() given")
        assert self.factory is not None
        for settings in cases:
            try:
                self.factory(name="contract", settings=settings, context=AdapterContext())
            except ConfigError as exc:
                assert "contract" in str(exc), f"error does not name the registry: {exc}"
            else:
                raise AssertionError(f"settings {dict(settings)!r} were accepted")


def _upserts(update: Update, hostname: str) -> Upsert | None:
    return update if isinstance(update, Upsert) and update.service.hostname == hostname else None


def _deletes(update: Update, hostname: str) -> Delete | None:
    return update if isinstance(update, Delete) and update.hostname == hostname else None


async def _close(updates: AsyncIterator[Update], timeout: float = 10.0) -> None:
    """Close ``watch()``'s generator; its clean-up failing is a contract failure too."""
    closer = getattr(updates, "aclose", None)
    if closer is None:
        return
    try:
        await asyncio.wait_for(closer(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"adapter contract: aclose() of watch() took over {timeout}s"
        ) from None
    except Exception as exc:
        raise AssertionError(f"adapter contract: aclose() of watch() raised {exc!r}") from exc


def _skip(reason: str) -> None:
    import pytest  # only the test run needs pytest

    pytest.skip(reason)
