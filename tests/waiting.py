"""Wait on what proves a thing, with a generous deadline, instead of sleeping and hoping
a busy 2-core box was quick enough."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], bool | Awaitable[bool]], within_s: float = 30.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while True:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s:g} s")
        await asyncio.sleep(0.05)
