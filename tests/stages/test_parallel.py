"""`sweep --jobs`: points run in spawned worker processes, each recorded as it finishes;
a failure or Ctrl-C starts no new point, keeps the finished ones and is raised after."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mpsctl.console import Reporter
from mpsctl.errors import Interrupted, UserError
from mpsctl.stages.parallel import run_in_workers, threads_per_job


def _sleeps(seconds: float) -> dict:
    time.sleep(seconds)
    return {"seconds": seconds, "accuracy": 0.5, "pid": os.getpid()}


def _fails() -> dict:
    raise UserError("search.budget: broken on purpose")


def _interrupts_parent() -> dict:
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(0.5)
    return {"seconds": 0.5, "accuracy": 0.5, "pid": os.getpid()}


def _dispatch(kind: str, *args) -> dict:
    return {"sleep": _sleeps, "fail": _fails, "interrupt": _interrupts_parent}[kind](*args)


def _run(job, todo, jobs=2):
    recorded: dict[str, dict] = {}
    try:
        run_in_workers(job, todo, jobs, Reporter(quiet=True), recorded.__setitem__)
    except BaseException as error:  # noqa: BLE001 - the test inspects what was raised
        return recorded, error
    return recorded, None


def test_points_run_side_by_side_in_worker_processes():
    todo = [(f"p{i}", (1.0,)) for i in range(3)]
    recorded, error = _run(_sleeps, todo)
    assert error is None
    assert sorted(recorded) == ["p0", "p1", "p2"]
    pids = {r["pid"] for r in recorded.values()}
    assert os.getpid() not in pids and len(pids) == 2  # two workers, reused for the third


def test_a_failed_point_keeps_the_others_and_is_raised():
    # one worker: the points run in order, so "later" would start only after "bad" failed
    recorded, error = _run(_dispatch, [("ok", ("sleep", 0.1)), ("bad", ("fail",)),
                                       ("later", ("sleep", 0.1))], jobs=1)
    assert isinstance(error, UserError) and "broken on purpose" in str(error)
    assert list(recorded) == ["ok"]  # kept, and no new point after the failure


def test_ctrl_c_starts_no_new_point_and_keeps_the_finished_ones():
    previous = signal.getsignal(signal.SIGINT)
    recorded, error = _run(_dispatch, [("first", ("interrupt",)), ("second", ("sleep", 1.0)),
                                       ("third", ("sleep", 0.1))])
    assert isinstance(error, Interrupted) and "kept in sweep.json" in str(error)
    assert sorted(recorded) == ["first", "second"]  # both running points end and are kept
    assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.parametrize(("jobs", "available", "expected"), [(2, 2, 1), (2, 8, 4), (4, 2, 1),
                                                             (1, 6, 6)])
def test_each_worker_gets_its_share_of_the_threads(jobs, available, expected):
    assert threads_per_job(jobs, available) == expected
