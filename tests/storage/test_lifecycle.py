"""The segment lifecycle table, tested without any I/O."""

import itertools

import pytest

from logstore.errors import FailedPrecondition
from logstore.storage.lifecycle import TRANSITIONS, SegmentEvent, SegmentState, next_state

S, E = SegmentState, SegmentEvent


def test_happy_path_ends_deleted():
    """An active segment is sealed, renamed for deletion, then unlinked."""
    state = S.ACTIVE
    for event in (E.SEAL, E.DELETE, E.UNLINK):
        state = next_state(state, event)
    assert state is S.DELETED


def test_active_segment_cannot_be_deleted():
    """The active segment must be sealed before retention may delete it."""
    with pytest.raises(FailedPrecondition, match="cannot delete"):
        next_state(S.ACTIVE, E.DELETE)


def test_terminal_states_accept_nothing():
    """DELETED and CLOSED are final: every event is refused."""
    for state, event in itertools.product((S.DELETED, S.CLOSED), E):
        with pytest.raises(FailedPrecondition):
            next_state(state, event)


def test_table_is_exactly_the_documented_moves():
    """Only the five documented transitions exist; everything else is refused."""
    expected = {
        (S.ACTIVE, E.SEAL): S.SEALED,
        (S.ACTIVE, E.CLOSE): S.CLOSED,
        (S.SEALED, E.DELETE): S.DELETING,
        (S.SEALED, E.CLOSE): S.CLOSED,
        (S.DELETING, E.UNLINK): S.DELETED,
    }
    assert TRANSITIONS == expected
    for state, event in itertools.product(S, E):
        if (state, event) not in expected:
            with pytest.raises(FailedPrecondition):
                next_state(state, event)
