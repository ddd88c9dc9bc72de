"""The current organization is a context variable: checked on entry, restored on exit, its own
in each thread and asyncio task."""

from __future__ import annotations

import asyncio
import threading

import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.enqueueing.current_organization import (
    Organization,
    organization_in_context,
    scope_arguments,
)


def test_a_block_sets_the_pair_and_nesting_restores_the_outer_one() -> None:
    assert organization_in_context() is None
    with bbo.current_organization(1, 10):
        assert organization_in_context() == Organization(1, 10)
        with bbo.current_organization(2, 20):
            assert organization_in_context() == Organization(2, 20)
        assert organization_in_context() == Organization(1, 10)
        with bbo.current_organization(None, None):  # the cell's own work inside a request
            assert organization_in_context() is None
        assert organization_in_context() == Organization(1, 10)
    assert organization_in_context() is None


def test_an_error_in_the_block_still_restores_the_outer_pair() -> None:
    with bbo.current_organization(1, 10):
        with pytest.raises(RuntimeError), bbo.current_organization(2, 20):
            raise RuntimeError("boom")
        assert organization_in_context() == Organization(1, 10)


@pytest.mark.parametrize(
    ("organization_id", "user_id"),
    [(5, None), (None, 7), (True, 1), (1, "2"), (2**63, 1), (1, 1.0)],
)
def test_a_half_given_or_malformed_pair_is_refused_on_entry(
    organization_id: object, user_id: object
) -> None:
    with bbo.current_organization(1, 10):
        with pytest.raises(bbo.errors.InvalidScope):
            with bbo.current_organization(organization_id, user_id):  # type: ignore[arg-type]
                pytest.fail("entered")
        assert organization_in_context() == Organization(1, 10)


def test_explicit_scope_arguments_win_whole_over_the_context() -> None:
    with bbo.current_organization(1, 10):
        assert scope_arguments(None, None, None) == (1, 10, None)
        assert scope_arguments(3, 30, None) == (3, 30, None)
        # a half stays a half: the checks refuse it, the context never completes it
        assert scope_arguments(3, None, None) == (3, None, None)
        assert scope_arguments(None, 30, None) == (None, 30, None)
        user = object()
        assert scope_arguments(None, None, user) == (None, None, user)
    assert scope_arguments(None, None, None) == (None, None, None)


def test_a_new_thread_starts_without_the_requests_organization() -> None:
    seen: list[object] = []
    with bbo.current_organization(1, 10):
        thread = threading.Thread(target=lambda: seen.append(organization_in_context()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_concurrent_asyncio_tasks_each_keep_their_own_organization() -> None:
    async def request(organization_id: int) -> list[object]:
        seen = []
        with bbo.current_organization(organization_id, organization_id * 10):
            for _ in range(3):
                await asyncio.sleep(0)  # the other requests run in between
                seen.append(organization_in_context())
        seen.append(organization_in_context())
        return seen

    async def main() -> list[list[object]]:
        with bbo.current_organization(99, 990):
            inherited = asyncio.create_task(_current())
            results = await asyncio.gather(request(1), request(2), inherited)
            assert organization_in_context() == Organization(99, 990)
            return results

    first, second, inherited = asyncio.run(main())
    assert first == [Organization(1, 10)] * 3 + [Organization(99, 990)]
    assert second == [Organization(2, 20)] * 3 + [Organization(99, 990)]
    assert inherited == [Organization(99, 990)]  # a task sees its creator's value


async def _current() -> list[object]:
    return [organization_in_context()]
