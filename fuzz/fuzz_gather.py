"""atheris fuzzer: embtable.gather vs np.take (see tests/fuzz_harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("gather")
