"""The gateway's wait order: earliest deadline first, late requests last, expiry by arrival."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgpu.gateway.deadline_queue import DeadlineQueue


def test_earliest_deadline_goes_first_whatever_the_arrival_order():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("long", arrival=0.0, deadline=10.0)
    queue.push("short", arrival=1.0, deadline=3.0)
    queue.push("medium", arrival=2.0, deadline=6.0)
    assert [queue.pop(now=2.0) for _ in range(3)] == ["short", "medium", "long"]
    assert len(queue) == 0


def test_a_late_request_waits_behind_every_one_that_can_still_make_it():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("hopeless", arrival=0.0, deadline=1.0)
    queue.push("on-time", arrival=0.5, deadline=9.0)
    # At t=0.8 nothing is late yet: plain earliest deadline first.
    assert queue.pop(now=0.8) == "hopeless"
    queue.push("hopeless-2", arrival=1.0, deadline=1.5)
    queue.push("late-too", arrival=1.1, deadline=1.2)
    # At t=2 both passed their deadlines: the on-time one goes first, then the late ones by deadline.
    assert [queue.pop(now=2.0) for _ in range(3)] == ["on-time", "late-too", "hopeless-2"]


def test_equal_budgets_keep_arrival_order():
    queue: DeadlineQueue[int] = DeadlineQueue()
    for i in range(5):
        queue.push(i, arrival=float(i), deadline=float(i) + 120.0)
    assert [queue.pop(now=5.0) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_expire_takes_out_exactly_those_that_waited_too_long():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("a", arrival=0.0, deadline=50.0)
    queue.push("b", arrival=5.0, deadline=1.0 + 5.0)
    queue.push("c", arrival=9.0, deadline=100.0)
    assert queue.oldest_arrival() == 0.0
    assert queue.expire(arrived_by=5.0) == ["a", "b"]
    assert len(queue) == 1 and queue.oldest_arrival() == 9.0
    assert queue.pop(now=10.0) == "c"
    with pytest.raises(IndexError):
        queue.pop(now=10.0)


def test_discard_removes_once_and_reports_whether_it_still_waited():
    queue: DeadlineQueue[str] = DeadlineQueue()
    handle = queue.push("x", arrival=0.0, deadline=1.0)
    other = queue.push("y", arrival=0.0, deadline=2.0)
    assert queue.discard(handle) is True
    assert queue.discard(handle) is False
    assert queue.pop(now=0.0) == "y"
    assert queue.discard(other) is False  # already served
    assert len(queue) == 0 and queue.oldest_arrival() is None


requests = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)), max_size=40
)


@given(requests, st.floats(0, 200, allow_nan=False))
def test_pop_order_is_on_time_by_deadline_then_late_by_deadline(items, now):
    queue: DeadlineQueue[int] = DeadlineQueue()
    for index, (arrival, budget) in enumerate(sorted(items)):
        queue.push(index, arrival, arrival + budget)
    deadlines = {i: a + b for i, (a, b) in enumerate(sorted(items))}
    popped = [queue.pop(now) for _ in range(len(items))]
    on_time = [i for i in popped if deadlines[i] >= now]
    late = [i for i in popped if deadlines[i] < now]
    assert popped == on_time + late
    assert [deadlines[i] for i in on_time] == sorted(deadlines[i] for i in on_time)
    assert [deadlines[i] for i in late] == sorted(deadlines[i] for i in late)
    assert sorted(popped) == list(range(len(items)))


def test_served_and_discarded_entries_do_not_pile_up():
    queue: DeadlineQueue[int] = DeadlineQueue()
    for round_ in range(100):
        handles = [queue.push(i, arrival=float(round_), deadline=float(round_ + i)) for i in range(10)]
        queue.discard(handles[3])
        while queue:
            queue.pop(now=float(round_))
    assert (len(queue._on_time), len(queue._late), len(queue._by_arrival)) == (0, 0, 0)


def test_waiting_lists_what_still_waits_with_its_deadline_in_arrival_order():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("a", arrival=0.0, deadline=9.0)
    b = queue.push("b", arrival=1.0, deadline=5.0)
    queue.push("c", arrival=2.0, deadline=2.5)
    queue.push("d", arrival=3.0, deadline=7.0)
    assert queue.pop(now=2.0) == "c"
    queue.discard(b)
    assert queue.waiting() == [("a", 9.0), ("d", 7.0)]
