"""Run independent sweep points in worker processes (``mpsctl sweep --jobs N``).

Small models do not keep several CPU cores busy in one process: two points side by side,
one thread each, finish sooner than the same two one after the other with two threads.
Each worker is a fresh (spawned) Python process that runs one point at a time with its
share of the threads and reports nothing; the parent logs each point's start and end and
records it the moment it finishes, so Ctrl-C or a failed point keeps every finished one.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from mpsctl.console import Reporter
from mpsctl.errors import Interrupted
from mpsctl.training.loop import StopFlag, sigint_stops

#: The job a worker runs: (recipe as a dict, point, run folder, warm-up weights, swept
#: cost, its highest value) -> the point's record.
PointJob = Callable[..., dict[str, Any]]


def threads_per_job(jobs: int, available: int | None = None) -> int:
    """Each worker's share of the threads this process would use (at least one)."""
    total = torch.get_num_threads() if available is None else available
    return max(1, total // max(jobs, 1))


def _start_worker(threads: int) -> None:
    # Ctrl-C reaches every process of the terminal's group: an idle worker ignores it, a
    # busy one stops its point through the stage's own handler, which saves last.pt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def run_in_workers(
    job: PointJob,
    todo: Iterable[tuple[str, tuple[Any, ...]]],
    jobs: int,
    reporter: Reporter,
    record: Callable[[str, dict[str, Any]], None],
) -> None:
    """Run ``job(*args)`` for each ``(point id, args)`` of ``todo`` on ``jobs`` processes,
    at most ``jobs`` at a time, calling ``record(point id, result)`` as each one finishes.

    After Ctrl-C (a second one interrupts at once, as in every stage) or a failed point no
    new point starts; the running ones end (an
    interrupted one saves its state), and then the first failure is raised, or one
    :class:`Interrupted` for the sweep after Ctrl-C.
    """
    pending = list(todo)
    stop = StopFlag()
    context = multiprocessing.get_context("spawn")
    failure: BaseException | None = None
    with sigint_stops(stop), ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(threads_per_job(jobs),)
    ) as pool:
        running: dict[Future, str] = {}
        while pending or running:
            while pending and len(running) < jobs and not stop() and not failure:
                point_id, args = pending.pop(0)
                reporter.log(f"sweep: {point_id} started")
                running[pool.submit(job, *args)] = point_id
            if not running:
                break
            finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                point_id = running.pop(future)
                error = future.exception()
                if error is None:
                    result = future.result()
                    record(point_id, result)
                    reporter.log(f"sweep: {point_id} finished in {result['seconds']:.0f} s, "
                                 f"validation accuracy {result['accuracy']:.4f}")
                elif failure is None:
                    failure = error
    if failure is not None and not isinstance(failure, Interrupted):
        raise failure
    if stop() or failure is not None:  # Ctrl-C (the workers saw it too)
        raise Interrupted("sweep stopped; every finished point is kept in sweep.json")

