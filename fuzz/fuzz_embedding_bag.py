"""atheris fuzzer: embtable.embedding_bag (offsets, 2-D bags, weights, padding_idx) vs a NumPy oracle (see tests/fuzz_harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("embedding_bag")
