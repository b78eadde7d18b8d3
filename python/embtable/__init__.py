"""embtable: fast, trustworthy embedding tables for NumPy.

An embedding layer is a trainable lookup table: the forward pass is a row gather,
the backward pass a row scatter-add. embtable does both in a multithreaded C++
core over NumPy buffers, with zero copies.
"""

from __future__ import annotations

from . import _core, constraints, initializers, optimizers, regularizers
from ._bag import embedding_bag
from ._config import _threads_from_env, get_num_threads, set_num_threads, show_config
from ._functional import gather, scatter_add
from ._prefetch import prefetch
from ._rowgrad import RowGrad
from ._sgns import sgns_step, sgns_train
from .layers import Embedding, EmbeddingBag

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "Embedding",
    "EmbeddingBag",
    "RowGrad",
    "constraints",
    "initializers",
    "optimizers",
    "prefetch",
    "regularizers",
    "embedding_bag",
    "gather",
    "get_num_threads",
    "scatter_add",
    "set_num_threads",
    "sgns_step",
    "sgns_train",
    "show_config",
]

_threads_from_env()
