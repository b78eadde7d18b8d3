"""embtable: fast, trustworthy embedding tables for NumPy.

An embedding layer is a trainable lookup table: the forward pass is a row gather,
the backward pass a row scatter-add. embtable does both in a multithreaded C++
core over NumPy buffers, with zero copies.
"""

from __future__ import annotations

from . import _core, constraints, initializers, optimizers, regularizers
from ._bag import embedding_bag
from ._config import (
    _simd_from_env,
    _threads_from_env,
    _tune_at_import,
    get_num_threads,
    set_num_threads,
    show_config,
)
from ._functional import gather, scatter_add
from ._multibag import embedding_bags
from ._prefetch import prefetch
from ._quant import QuantizedTable, quantize
from ._rowgrad import RowGrad
from ._sgns import sgns_step, sgns_train
from ._vectors import load_vectors, save_vectors
from .layers import Embedding, EmbeddingBag

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "Embedding",
    "EmbeddingBag",
    "QuantizedTable",
    "RowGrad",
    "constraints",
    "initializers",
    "optimizers",
    "prefetch",
    "regularizers",
    "save_vectors",
    "embedding_bag",
    "embedding_bags",
    "gather",
    "quantize",
    "get_num_threads",
    "load_vectors",
    "scatter_add",
    "set_num_threads",
    "sgns_step",
    "sgns_train",
    "show_config",
]

_threads_from_env()
_simd_from_env()
_tune_at_import()
