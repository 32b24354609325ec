"""The job queue's rules, directly: no threads, no files, the time passed in."""

from __future__ import annotations

import itertools
from typing import List, Optional

import pytest

from scingestor.jobqueue import (
    RETRY_MAX_SECONDS,
    JobQueue,
    ListOrder,
    backoff,
    grouped,
    job_scan_keys,
)
from scingestor.journal import Job

LIST = "/gpfs/current/raw/scicat-datasets-1234.lst"
OTHER_LIST = "/gpfs/current/raw/sub/scicat-datasets-1234.lst"
BEAMTIME = "/gpfs/current/beamtime-metadata-1234.json"

_ids = itertools.count(1)


def job(
    text: str,
    *,
    list_file: str = LIST,
    measurement: str = "",
    is_measurement: bool = False,
    attempts: int = 0,
) -> Job:
    """A job as the intake makes them: ids grow in listing order."""
    number = next(_ids)
    return Job(
        id=number,
        list_file=list_file,
        beamtime_file=BEAMTIME,
        lineno=number,
        text=text,
        measurement=measurement,
        is_measurement=is_measurement,
        attempts=attempts,
    )


def take_text(queue: JobQueue, now: float) -> Optional[str]:
    taken, _upcoming = queue.take(now)
    return None if taken is None else taken.text


def run_to_end(queue: JobQueue, taken: Job) -> None:
    """A job ran and was retired (the worker's _finish)."""
    queue.stopped(taken)
    queue.release(taken, retired=True)


# -- ListOrder.may_start: the per-list-file rule -----------------------------------------


def test_a_list_with_nothing_running_lets_any_job_start() -> None:
    order = ListOrder()
    assert order.may_start(job("s1"))
    assert order.may_start(job("s2", measurement="m"))


def test_plain_scans_of_one_list_run_side_by_side_but_a_grouped_one_waits() -> None:
    order = ListOrder()
    order.running[job("s1").id] = False
    assert order.may_start(job("s2"))
    assert not order.may_start(job("s3", measurement="m"))
    assert not order.may_start(job("m", is_measurement=True))


def test_a_running_grouped_job_holds_every_other_job_of_its_list() -> None:
    order = ListOrder()
    order.running[job("s1", measurement="m").id] = True
    assert not order.may_start(job("s2"))
    assert not order.may_start(job("s3", measurement="m"))


def test_a_grouped_job_waiting_for_a_retry_holds_the_later_grouped_jobs_only() -> None:
    order = ListOrder()
    first = job("s1", measurement="m")
    later_grouped = job("s2", measurement="m")
    later_plain = job("s3")
    order.retrying_grouped.add(first.id)
    assert not order.may_start(later_grouped)
    assert order.may_start(later_plain)
    earlier = Job(
        id=first.id - 1,
        list_file=LIST,
        beamtime_file=BEAMTIME,
        lineno=1,
        text="s0",
        measurement="m",
    )
    assert order.may_start(earlier)  # listed before it: not held


def test_grouped_means_in_a_measurement_or_the_measurement_line() -> None:
    assert grouped(job("s1", measurement="m"))
    assert grouped(job("m", is_measurement=True))
    assert not grouped(job("s1"))


# -- due time and listing order --------------------------------------------------------------


def test_the_earliest_due_job_goes_first_and_listing_order_breaks_ties() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    late, first, second = job("late_1"), job("a_1"), job("b_1")
    queue.push(late, 20.0)
    queue.push(first, 10.0)
    queue.push(second, 10.0)
    assert [take_text(queue, 30.0) for _ in range(3)] == ["a_1", "b_1", "late_1"]
    assert queue.in_flight == 3 and len(queue) == 0 and queue.length == 3


def test_nothing_due_yet_tells_when_the_next_job_falls_due() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    queue.push(job("s1"), 15.0)
    assert queue.take(10.0) == (None, 15.0)
    assert queue.take(15.0)[0] is not None
    assert queue.take(15.0) == (None, None)


# -- lines of one scan: one at a time, in list order ----------------------------------------


def test_lines_of_one_scan_run_one_at_a_time_in_list_order() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    jobs = [job("s_00001"), job("s_00001:1"), job("s_00001:2 det1")]
    other = job("t_00002")
    for item in [*jobs, other]:
        queue.push(item, 0.0)
    first, _ = queue.take(1.0)
    assert first is jobs[0]
    # the scan is taken: its other lines are held, another scan is not
    assert take_text(queue, 1.0) == "t_00002"
    assert queue.take(1.0) == (None, None)
    run_to_end(queue, first)
    assert take_text(queue, 1.0) == "s_00001:1"


def test_the_scan_stays_taken_until_the_outcome_is_recorded() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    first, second = job("s_00001"), job("s_00001:1")
    queue.push(first, 0.0)
    queue.push(second, 0.0)
    assert queue.take(1.0)[0] is first
    queue.stopped(first)  # the run ended, the record not written yet
    assert queue.in_flight == 0
    assert queue.take(1.0) == (None, None)
    queue.release(first, retired=True)
    assert queue.take(1.0)[0] is second


def test_a_line_waiting_for_a_retry_still_goes_before_the_later_lines_of_its_scan() -> None:
    queue = JobQueue(retry_base_delay=5.0)
    first, second = job("s_00001"), job("s_00001:1")
    queue.push(first, 0.0)
    queue.push(second, 0.0)
    assert queue.take(1.0)[0] is first
    queue.stopped(first)
    first.attempts += 1
    assert queue.retry_later(first, 1.0) == 5.0
    queue.release(first, retired=False)
    # the later line is due, but the first one (due at 6.0) comes first
    assert queue.take(2.0) == (None, 6.0)
    assert queue.take(6.0)[0] is first
    run_to_end(queue, first)
    assert queue.take(6.0)[0] is second


def test_a_line_that_names_no_scan_is_not_held() -> None:
    escaping = job("../s_00001")  # does not parse: leaves the scan directory
    command = job("__command__ start m")  # not a scan line
    assert job_scan_keys(escaping) == () and job_scan_keys(command) == ()
    queue = JobQueue(retry_base_delay=1.0)
    queue.push(escaping, 0.0)
    queue.push(command, 0.0)
    assert queue.take(0.0)[0] is escaping
    assert queue.take(0.0)[0] is command
    assert queue.scan_key(escaping) == "../s_00001"


def test_one_scan_listed_in_two_list_files_is_one_scan() -> None:
    top = job("sub/s_00001")
    nested = job("s_00001", list_file=OTHER_LIST)
    assert set(job_scan_keys(top)) & set(job_scan_keys(nested))
    queue = JobQueue(retry_base_delay=1.0)
    queue.push(top, 0.0)
    queue.push(nested, 0.0)
    assert queue.take(0.0)[0] is top
    assert queue.take(0.0) == (None, None)


# -- measurement order -------------------------------------------------------------------------


def test_grouped_jobs_of_one_list_run_alone_and_in_list_order() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    scans = [job(f"s_{n:05d}", measurement="m") for n in range(1, 4)]
    closing = job("m", is_measurement=True)
    for item in [*scans, closing]:
        queue.push(item, 0.0)
    order: List[str] = []
    while True:
        taken, _ = queue.take(0.0)
        if taken is None:
            break
        assert queue.take(0.0) == (None, None)  # alone
        order.append(taken.text)
        run_to_end(queue, taken)
    assert order == ["s_00001", "s_00002", "s_00003", "m"]


def test_grouped_jobs_of_two_list_files_run_side_by_side() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    here = job("a_00001", measurement="m")
    there = job("b_00001", list_file=OTHER_LIST, measurement="m")
    queue.push(here, 0.0)
    queue.push(there, 0.0)
    assert queue.take(0.0)[0] is here
    assert queue.take(0.0)[0] is there


def test_a_grouped_job_retried_holds_the_later_grouped_jobs_until_it_ran() -> None:
    queue = JobQueue(retry_base_delay=10.0)
    first, second = job("a_00001", measurement="m"), job("b_00002", measurement="m")
    plain = job("c_00003")
    for item in (first, second, plain):
        queue.push(item, 0.0)
    assert queue.take(0.0)[0] is first
    queue.stopped(first)
    first.attempts = 1
    queue.retry_later(first, 0.0)
    queue.release(first, retired=False)
    assert queue.order(LIST).retrying_grouped == {first.id}
    # the plain scan may go; the later grouped one waits for the retried one
    assert queue.take(1.0)[0] is plain
    run_to_end(queue, plain)
    assert queue.take(1.0) == (None, 10.0)
    assert queue.take(10.0)[0] is first
    run_to_end(queue, first)
    assert queue.take(10.0)[0] is second


# -- backoff and bookkeeping -------------------------------------------------------------------


@pytest.mark.parametrize(
    "attempts, expected",
    [
        (0, 2.0),
        (1, 2.0),
        (2, 4.0),
        (3, 8.0),
        (6, 64.0),
        (9, 512.0),
        (10, RETRY_MAX_SECONDS),
        (50, RETRY_MAX_SECONDS),
    ],
)
def test_backoff_doubles_from_the_base_up_to_the_cap(attempts: int, expected: float) -> None:
    assert backoff(attempts, 2.0) == expected


def test_retry_later_queues_the_job_after_its_backoff() -> None:
    queue = JobQueue(retry_base_delay=3.0)
    item = job("s_00001", attempts=2)
    assert queue.retry_later(item, 100.0) == 6.0
    assert queue.queued(item) and len(queue) == 1
    assert queue.take(105.9) == (None, 106.0)
    assert queue.take(106.0)[0] is item


def test_retry_now_makes_the_retried_jobs_due_and_leaves_fresh_ones() -> None:
    queue = JobQueue(retry_base_delay=60.0)
    retried = job("a_00001", attempts=1)
    fresh = job("b_00002")
    queue.retry_later(retried, 0.0)  # due at 60
    queue.push(fresh, 30.0)
    queue.retry_now(5.0)
    assert queue.take(5.0)[0] is retried
    assert queue.take(5.0) == (None, 30.0)


def test_stopped_and_release_keep_the_counts_right() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    item = job("s_00001", measurement="m")
    queue.push(item, 0.0)
    assert queue.length == 1 and not queue.idle
    assert queue.take(0.0)[0] is item
    assert queue.length == 1 and len(queue) == 0 and queue.in_flight == 1
    assert queue.order(LIST).running == {item.id: True}
    queue.stopped(item)
    assert queue.in_flight == 0 and queue.idle
    queue.release(item, retired=True)
    # nothing of the job is left: a later line of its scan is first at once
    later = job("s_00001:1")
    queue.push(later, 0.0)
    assert queue.take(0.0)[0] is later


def test_queued_texts_and_clear() -> None:
    queue = JobQueue(retry_base_delay=1.0)
    queue.push(job("a_00001"), 5.0)
    queue.push(job("b_00001", list_file=OTHER_LIST), 5.0)
    assert queue.queued_texts(LIST) == {"a_00001"}
    running = job("c_00001")
    queue.push(running, 0.0)
    assert queue.take(0.0)[0] is running
    queue.clear()
    assert queue.idle and queue.length == 0 and queue.take(10.0) == (None, None)


def test_measurement_line_waits_for_a_grouped_scan_held_by_its_own_scan() -> None:
    """``s``; ``start m``; ``s:1``; ``stop``; ``m:2`` - the measurement comes last.

    ``s:1`` waits for ``s`` (one scan at a time); the measurement line ``m:2``
    must wait for ``s:1`` although nothing of the list runs between ``s``
    ending and ``s`` being released (seen as a measurement with no scan).
    """
    queue = JobQueue(retry_base_delay=5.0)
    first = job("s_00001")
    again = job("s_00001:1", measurement="m")
    measurement = job("m:2", is_measurement=True)
    for each in (first, again, measurement):
        queue.push(each, 0.0)
    taken, _ = queue.take(1.0)
    assert taken is first
    queue.stopped(first)  # its run ended; its outcome not recorded yet
    assert take_text(queue, 1.0) is None  # s:1 waits for s; m:2 for s:1
    queue.release(first, retired=True)
    taken, _ = queue.take(1.0)
    assert taken is again
    assert take_text(queue, 1.0) is None  # m:2 waits while s:1 runs
    run_to_end(queue, again)
    assert take_text(queue, 1.0) == "m:2"
