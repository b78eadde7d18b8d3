"""The SIMD levels this CPU runs, for the tests that check every level.

``show_config()`` lists the levels compiled into the build; a level the CPU lacks
is refused by ``_core.set_simd_level`` with ``ValueError``.
"""

from __future__ import annotations

import embtable
from embtable import _core

COMPILED: list[str] = embtable.show_config(mode="dicts")["simd"]["compiled"]


def _runnable(level: str) -> bool:
    saved = _core.get_simd_level()
    try:
        _core.set_simd_level(level)
    except ValueError:
        return False
    finally:
        _core.set_simd_level(saved)
    return True


#: The compiled levels this CPU can run, baseline first.
LEVELS: list[str] = [lv for lv in COMPILED if _runnable(lv)]
