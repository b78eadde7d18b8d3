"""atheris fuzzer: embtable.scatter_add(deterministic=True) vs np.add.at, bitwise (see tests/fuzz_harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("scatter_add_deterministic")
