import asyncio
import threading
import time

import pytest

from deployments.decode_pool import BACKGROUND, URGENT, DecodePool


async def test_urgent_work_overtakes_queued_background_work() -> None:
    pool = DecodePool(workers=1)
    gate = threading.Event()
    order: list[str] = []

    def job(name: str) -> str:
        order.append(name)
        return name

    blocker = asyncio.create_task(pool.run(BACKGROUND, lambda: gate.wait(5)))
    await asyncio.sleep(0.05)  # the only worker is busy
    later = [asyncio.create_task(pool.run(BACKGROUND, lambda n=n: job(n))) for n in ("b1", "b2")]
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(pool.run(URGENT, lambda: job("final")))
    await asyncio.sleep(0.01)
    gate.set()
    assert await urgent == "final"
    await asyncio.gather(blocker, *later)
    assert order == ["final", "b1", "b2"]


async def test_a_cancelled_caller_s_job_never_runs_and_errors_reach_the_caller() -> None:
    pool = DecodePool(workers=1)
    ran: list[str] = []
    busy = asyncio.create_task(pool.run(BACKGROUND, lambda: time.sleep(0.2)))
    await asyncio.sleep(0.05)
    dropped = asyncio.create_task(pool.run(BACKGROUND, lambda: ran.append("dropped")))
    await asyncio.sleep(0.01)
    dropped.cancel()

    def boom() -> None:
        raise ValueError("bad audio")

    with pytest.raises(ValueError, match="bad audio"):
        await pool.run(BACKGROUND, boom)
    await busy
    assert await pool.run(URGENT, lambda: "still serving") == "still serving"
    assert ran == []


async def test_deadlines_run_earliest_first_after_urgent_work() -> None:
    pool = DecodePool(workers=1)
    gate = threading.Event()
    order: list[str] = []
    blocker = asyncio.create_task(pool.run(BACKGROUND, lambda: gate.wait(5)))
    await asyncio.sleep(0.05)
    now = time.monotonic()
    jobs = [asyncio.create_task(pool.run(p, lambda n=n: order.append(n)))
            for n, p in (("late", now + 3.0), ("soon", now + 0.5), ("first", URGENT))]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(blocker, *jobs)
    assert order == ["first", "soon", "late"]
