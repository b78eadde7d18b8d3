"""How often another Python thread runs while a call runs: the GIL's release, tested."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def ticks_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    """``(ticks, fn())``: how often a counter thread (a 0.5 ms sleep per tick) ran
    while ``fn()`` ran in this one. About 0 when ``fn`` holds the GIL throughout,
    hundreds per second of the call when its kernel releases it."""
    done = threading.Event()
    ticks = [0]

    def count() -> None:
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.0005)

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)  # the counter is running
    before = ticks[0]
    try:
        result = fn()
    finally:
        during = ticks[0] - before
        done.set()
        t.join()
    return during, result
