"""The atheris entry point shared by fuzz/fuzz_<target>.py (one script per target)."""

from __future__ import annotations

import os
import sys

import atheris

# The harness lives in tests/ (the suite replays the kept corpus through it, also
# from a copy of tests/ outside the tree).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
)

import numpy  # noqa: F401 - imported first: only embtable's Python is instrumented

# Coverage feedback: embtable's Python (instrumented here) and its C++ (compiled
# with -fsanitize=fuzzer-no-link). The harness decoder is deliberately not
# instrumented: tracing its byte loops would cost most of the fuzzer's speed.
with atheris.instrument_imports(include=["embtable"]):
    import embtable  # noqa: F401
import fuzz_harness as harness  # noqa: E402


def main(target: str) -> None:
    """Fuzz one harness target; libFuzzer flags (-runs=, -max_total_time=, ...) from argv."""
    if not harness.available(target):
        print(f"SKIP {target}: the installed embtable has no such function", flush=True)
        return

    def one_input(data: bytes) -> None:
        harness.run(target, data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
