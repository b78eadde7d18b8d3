# Type stubs of embtable._core (the compiled module). One section per register_*.cpp.

import numpy as np

# --- sgns (python/src/register_sgns.cpp) -------------------------------------

def sgns_step(
    in_table: np.ndarray,
    out_table: np.ndarray,
    centers: np.ndarray,
    contexts: np.ndarray,
    negatives: np.ndarray,
    lr: float,
    *,
    ref: bool = False,
) -> float: ...
def sgns_train(
    in_table: np.ndarray,
    out_table: np.ndarray,
    tokens: np.ndarray,
    sentences: np.ndarray | None,
    noise: np.ndarray,
    start: int,
    stop: int,
    window: int,
    negative: int,
    lr: float,
    end_lr: float,
    seed: int,
) -> tuple[float, int]: ...
def sgns_pairs(
    tokens: np.ndarray,
    sentences: np.ndarray | None,
    noise: np.ndarray,
    start: int,
    stop: int,
    window: int,
    negative: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
