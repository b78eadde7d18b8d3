"""atheris fuzzer: embtable.Embedding / EmbeddingBag forward + backward vs NumPy (see tests/fuzz_harness.py)."""

import _driver

if __name__ == "__main__":
    _driver.main("layer")
