"""atheris fuzzer: embtable.scatter_add (atomic mode) vs np.add.at (see tests/fuzz_harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("scatter_add")
