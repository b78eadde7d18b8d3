# Type stubs of the compiled module embtable._core (the binding layer).
from typing import Any

import numpy as np
from numpy.typing import NDArray

__version__: str

# --- core: gather / scatter_add / threads / build -------------------------------------
def gather(
    table: NDArray[Any], indices: NDArray[Any], *, out: NDArray[Any] | None = ...
) -> NDArray[Any]: ...
def scatter_add(
    target: NDArray[Any],
    indices: NDArray[Any],
    updates: NDArray[Any],
    *,
    deterministic: bool = ...,
) -> NDArray[Any]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def default_num_threads() -> int: ...
def cpus_from_cgroup_cpu_max(contents: str) -> int: ...
def config() -> dict[str, Any]: ...
def set_simd_level(level: str) -> None: ...
def get_simd_level() -> str: ...
def index_error_message(value: str, shape: list[int], flat: int, V: int) -> str: ...

# --- layer: sparse gradients, max_norm renorm, optimizer steps --------------------------
def rowgrad_coalesce(
    indices: NDArray[Any], grad_output: NDArray[Any], V: int, padding_idx: int = ...
) -> tuple[NDArray[Any], NDArray[Any]]: ...
def rowgrad_merge(
    rows_a: NDArray[Any],
    values_a: NDArray[Any],
    rows_b: NDArray[Any],
    values_b: NDArray[Any],
) -> tuple[NDArray[Any], NDArray[Any]]: ...
def embedding_renorm(
    table: NDArray[Any], indices: NDArray[Any], max_norm: float, norm_type: float = ...
) -> None: ...
def optim_step(
    kind: str,
    table: NDArray[Any],
    rows: NDArray[Any] | None,
    grad: NDArray[Any],
    states: list[NDArray[Any] | None],
    learning_rate: float,
    momentum: float = ...,
    nesterov: bool = ...,
    epsilon: float = ...,
    rho: float = ...,
    centered: bool = ...,
    beta_1: float = ...,
    beta_2: float = ...,
    step: int = ...,
) -> None: ...
def rowgrad_coalesce_ref(
    indices: NDArray[Any], grad_output: NDArray[Any], V: int, padding_idx: int = ...
) -> tuple[NDArray[Any], NDArray[Any]]: ...
def embedding_renorm_ref(
    table: NDArray[Any], indices: NDArray[Any], max_norm: float, norm_type: float = ...
) -> None: ...

# --- bag: embedding_bag forward / backward --------------------------------------------
def embedding_bag(
    table: NDArray[Any],
    indices: NDArray[Any],
    offsets: NDArray[Any] | None = ...,
    *,
    mode: str = ...,
    per_sample_weights: NDArray[Any] | None = ...,
    padding_idx: int | None = ...,
    include_last_offset: bool = ...,
    out: NDArray[Any] | None = ...,
    return_argmax: bool = ...,
    reference: bool = ...,
) -> Any: ...
def embedding_bag_backward(
    grad_out: NDArray[Any],
    indices: NDArray[Any],
    offsets: NDArray[Any] | None = ...,
    *,
    mode: str = ...,
    per_sample_weights: NDArray[Any] | None = ...,
    padding_idx: int | None = ...,
    include_last_offset: bool = ...,
    argmax: NDArray[Any] | None = ...,
    target: NDArray[Any],
    deterministic: bool = ...,
    reference: bool = ...,
) -> NDArray[Any]: ...
def embedding_bag_backward_sparse(
    grad_out: NDArray[Any],
    indices: NDArray[Any],
    offsets: NDArray[Any] | None = ...,
    *,
    num_embeddings: int,
    mode: str = ...,
    per_sample_weights: NDArray[Any] | None = ...,
    padding_idx: int | None = ...,
    include_last_offset: bool = ...,
    argmax: NDArray[Any] | None = ...,
) -> tuple[NDArray[Any], NDArray[Any]]: ...
def embedding_bag_per_sample_weights_backward(
    grad_out: NDArray[Any],
    table: NDArray[Any],
    indices: NDArray[Any],
    offsets: NDArray[Any] | None = ...,
    *,
    padding_idx: int | None = ...,
    include_last_offset: bool = ...,
    reference: bool = ...,
) -> NDArray[Any]: ...

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

# Read-ahead for file-backed tables (register_prefetch.cpp).
def prefetch_rows(
    table: np.ndarray, indices: np.ndarray, method: str, io_threads: int
) -> dict[str, int]: ...
def mapped_file(array: np.ndarray) -> str: ...
def resident_pages(array: np.ndarray) -> int: ...
def page_size() -> int: ...

# Sanitizer self-test canaries: only in builds with -DEMBTABLE_TEST_CANARIES=ON
# (ci/asan.sh, ci/tsan.sh, ci/fuzz.sh); absent from release builds.
def _canary_oob_read() -> int: ...
def _canary_signed_overflow(x: int) -> int: ...
def _canary_data_race() -> int: ...
