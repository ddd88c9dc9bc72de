"""A walk that reconnects checks that the job row holds the checkpoint it committed last:
a sub-batch commits without waiting for the WAL flush, so a server crash can lose a commit
the walk was told had succeeded, and going on from memory would skip its rows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dramatiq_bbo.reconnect import is_connection_error
from dramatiq_bbo.walk.round_trips import _check_durable

JOB: Any = SimpleNamespace(id=7)


@pytest.mark.parametrize(
    ("stored", "committed"), [(None, None), ([500], [500]), ([3, "b"], [3, "b"]), ([1], (1,))]
)
def test_the_stored_checkpoint_of_this_walk_lets_it_go_on(stored: Any, committed: Any) -> None:
    _check_durable(JOB, stored, committed)


@pytest.mark.parametrize(("stored", "committed"), [([500], [1000]), (None, [500]), ([2], None)])
def test_a_checkpoint_lost_with_the_server_stops_the_walk_as_a_lost_connection(
    stored: Any, committed: Any
) -> None:
    with pytest.raises(Exception, match="a commit was lost with the server") as raised:
        _check_durable(JOB, stored, committed)
    assert is_connection_error(raised.value)  # the job is given back, not failed
