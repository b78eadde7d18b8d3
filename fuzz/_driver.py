"""The atheris entry point shared by fuzz/fuzz_<target>.py (one script per target)."""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy  # noqa: F401 - imported first: only embtable's Python is instrumented

# Coverage feedback: embtable's Python (instrumented here) and its C++ (compiled
# with -fsanitize=fuzzer-no-link). The harness decoder is deliberately not
# instrumented: tracing its byte loops would cost most of the fuzzer's speed.
with atheris.instrument_imports(include=["embtable"]):
    import embtable  # noqa: F401
import harness  # noqa: E402


def main(target: str) -> None:
    """Fuzz one harness target; libFuzzer flags (-runs=, -max_total_time=, ...) from argv."""
    if not harness.available(target):
        print(f"SKIP {target}: the installed embtable has no such function", flush=True)
        return

    def one_input(data: bytes) -> None:
        harness.run(target, data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
