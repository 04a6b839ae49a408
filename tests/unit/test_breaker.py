"""The asyncio layer on pybreaker: admission before I/O, outcome replay after it."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pybreaker
import pytest

from otel_dist import breaker_states
from otel_dist._resilience._breaker import (
    FAILURE,
    NEUTRAL,
    SUCCESS,
    Breaker,
    Rejected,
    Transition,
    _forget_breakers,
    breaker_for,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 2, successes: int = 1, reset: float = 10.0) -> tuple[Breaker, Clock]:
    clock = Clock()
    breaker = Breaker(
        "orders", failure_threshold=failures, success_threshold=successes, reset_timeout=reset, clock=clock
    )
    return breaker, clock


def run(breaker: Breaker, outcome: str) -> tuple[Transition, ...]:
    ticket, before = breaker.admit()
    return before + breaker.record(ticket, outcome)


def moves(transitions: tuple[Transition, ...]) -> list[tuple[str, str]]:
    return [(t.from_state, t.to_state) for t in transitions]


def trip(breaker: Breaker) -> None:
    for _ in range(breaker.pybreaker.fail_max):
        run(breaker, FAILURE)
    assert breaker.state == "open"


# --- the pybreaker behaviour this layer exists for (pinned: if upstream fixes it, revisit) ---


def test_bare_pybreaker_counts_cancellation_and_excluded_errors_wrongly():
    cb = pybreaker.CircuitBreaker(fail_max=5, exclude=[KeyError])
    with pytest.raises(asyncio.CancelledError), cb.calling():
        raise asyncio.CancelledError
    assert cb.fail_counter == 1  # a cancelled call counted as a failure
    with pytest.raises(KeyError), cb.calling():
        raise KeyError
    assert cb.fail_counter == 0  # an excluded error counted as a success


# --- closed ---


def test_consecutive_failures_open_it_once():
    breaker, _ = make(failures=3)
    assert run(breaker, FAILURE) == ()
    assert run(breaker, FAILURE) == ()
    assert moves(run(breaker, FAILURE)) == [("closed", "open")]
    assert breaker.state == "open"


def test_success_resets_the_failure_count():
    breaker, _ = make(failures=2)
    run(breaker, FAILURE)
    run(breaker, SUCCESS)
    run(breaker, FAILURE)
    assert breaker.state == "closed" and breaker.failures == 1


def test_neutral_outcomes_neither_count_nor_heal():
    breaker, _ = make(failures=2)
    run(breaker, FAILURE)
    for _ in range(5):
        run(breaker, NEUTRAL)  # a 4xx, or a cancelled attempt
    assert breaker.failures == 1
    assert moves(run(breaker, FAILURE)) == [("closed", "open")]


# --- open ---


def test_open_rejects_without_running_anything_until_the_timeout():
    breaker, clock = make(reset=10.0)
    trip(breaker)
    clock.now += 4.0
    with pytest.raises(Rejected) as rejected:
        breaker.admit()
    assert rejected.value.state == "open"
    assert rejected.value.retry_in == pytest.approx(6.0)


def test_an_open_breaker_reads_half_open_once_its_timeout_has_elapsed():
    breaker, clock = make(reset=10.0)
    trip(breaker)
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"  # for /ready: the next call will be the probe
    assert breaker.pybreaker.current_state == pybreaker.STATE_OPEN  # no transition happened yet
    _, transitions = breaker.admit()
    assert moves(transitions) == [("open", "half_open")]


def test_after_the_timeout_one_probe_is_admitted_and_others_are_rejected():
    breaker, clock = make(reset=10.0)
    trip(breaker)
    clock.now += 10.0
    probe, transitions = breaker.admit()
    assert probe.probe and moves(transitions) == [("open", "half_open")]
    for _ in range(3):
        with pytest.raises(Rejected) as rejected:
            breaker.admit()
        assert rejected.value.state == "half_open"
    assert moves(breaker.record(probe, SUCCESS)) == [("half_open", "closed")]
    assert breaker.state == "closed"


def test_a_failed_probe_reopens_for_a_full_timeout():
    breaker, clock = make(reset=10.0)
    trip(breaker)
    clock.now += 10.0
    probe, _ = breaker.admit()
    clock.now += 3.0
    assert moves(breaker.record(probe, FAILURE)) == [("half_open", "open")]
    clock.now += 9.0
    with pytest.raises(Rejected):
        breaker.admit()
    clock.now += 1.0
    assert breaker.admit()[0].probe


def test_success_threshold_needs_that_many_probes_one_at_a_time():
    breaker, clock = make(successes=2)
    trip(breaker)
    clock.now += 10.0
    first, _ = breaker.admit()
    with pytest.raises(Rejected):
        breaker.admit()
    assert breaker.record(first, SUCCESS) == ()
    assert breaker.state == "half_open"
    second, transitions = breaker.admit()
    assert second.probe and transitions == ()
    assert moves(breaker.record(second, SUCCESS)) == [("half_open", "closed")]


@pytest.mark.parametrize("outcome", [NEUTRAL], ids=["4xx-or-cancelled"])
def test_a_neutral_probe_frees_the_slot_and_changes_nothing(outcome):
    breaker, clock = make()
    trip(breaker)
    clock.now += 10.0
    probe, _ = breaker.admit()
    assert breaker.record(probe, outcome) == ()
    assert breaker.state == "half_open"
    assert breaker.admit()[0].probe


def test_results_from_an_earlier_breaker_period_are_dropped():
    breaker, clock = make(failures=1)
    slow, _ = breaker.admit()  # admitted while closed
    run(breaker, FAILURE)  # another call opens it
    clock.now += 10.0
    probe, _ = breaker.admit()
    assert breaker.record(slow, SUCCESS) == ()  # must not count as a probe success
    assert breaker.state == "half_open"
    with pytest.raises(Rejected):
        breaker.admit()  # the real probe is still in flight
    assert moves(breaker.record(probe, SUCCESS)) == [("half_open", "closed")]


def test_no_duplicate_state_change_is_reported():
    breaker, _ = make()
    breaker.pybreaker.close()  # pybreaker notifies closed -> closed
    assert breaker.admit()[1] == ()


# --- concurrency ---


async def test_20_concurrent_tasks_get_exactly_one_probe():
    breaker, clock = make()
    trip(breaker)
    clock.now += 10.0
    admitted: list[int] = []
    rejected: list[int] = []
    gate = asyncio.Event()

    async def caller(i: int) -> None:
        await asyncio.sleep(0)
        try:
            ticket, _ = breaker.admit()
        except Rejected:
            rejected.append(i)
            return
        admitted.append(i)
        await gate.wait()  # the probe's I/O
        breaker.record(ticket, SUCCESS)

    tasks = [asyncio.create_task(caller(i)) for i in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks)
    assert len(admitted) == 1 and len(rejected) == 19
    assert breaker.state == "closed"


def test_threads_sharing_a_breaker_get_exactly_one_probe():
    breaker, clock = make()
    trip(breaker)
    clock.now += 10.0
    barrier = threading.Barrier(16)
    results: list[bool] = []

    def caller() -> None:
        barrier.wait()
        try:
            breaker.admit()
            results.append(True)
        except Rejected:
            results.append(False)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


# --- registry ---


def test_one_breaker_per_target_shared_and_readable():
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    try:
        first = breaker_for(a, failure_threshold=1, success_threshold=1, reset_timeout=60)
        again = breaker_for(a, failure_threshold=9, success_threshold=1, reset_timeout=60)
        assert again is first and first.pybreaker.fail_max == 1  # the first configuration wins
        breaker_for(b, failure_threshold=1, success_threshold=1, reset_timeout=60)
        run(first, FAILURE)
        states = breaker_states()
        assert states[a] == "open" and states[b] == "closed"
    finally:
        _forget_breakers(a, b)
    assert a not in breaker_states()
