"""atheris fuzzer: embtable.gather vs np.take (see harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("gather")
