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
def max_threads() -> int: ...
def ensure_threads() -> int: ...
def take_thread_shortfall() -> tuple[int, int, str] | None: ...
def set_tuned(name: str, value: int, source: str) -> None: ...
def reset_tuning() -> None: ...
def calibrate() -> dict[str, int]: ...
def cpus_from_cgroup_cpu_max(contents: str) -> int: ...
def cpus_from_cgroup(root: str, proc_self_cgroup: str) -> int: ...
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
def load_vectors(
    path: bytes, display: str, binary: int, limit: int, dtype: str
) -> tuple[list[str], np.ndarray]: ...
def vectors_check_words(blob: bytes, offsets: np.ndarray) -> tuple[int, str] | None: ...
def save_vectors(
    fd: int,
    display: str,
    blob: bytes,
    offsets: np.ndarray,
    table: np.ndarray,
    binary: bool,
) -> None: ...
def vectors_config() -> dict[str, int]: ...
def _set_vectors_io_override(piece_bytes: int, binary_buffer_bytes: int) -> None: ...
def parse_vector_value(text: str) -> tuple[float, np.ndarray] | None: ...

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

# --- quantized tables and embedding_bags (register_quant.cpp) -----------------------------
def quantize(
    table: NDArray[Any], dtype: str, *, reference: bool = ...
) -> NDArray[Any]: ...
def dequantize(data: NDArray[Any], dtype: str, dim: int) -> NDArray[np.float32]: ...
def check_packed(data: NDArray[Any], dtype: str, dim: int) -> int: ...
def qrow_bytes(dtype: str, dim: int) -> int: ...
def qgather(
    data: NDArray[Any],
    dtype: str,
    dim: int,
    indices: NDArray[Any],
    *,
    out: NDArray[Any] | None = ...,
    reference: bool = ...,
) -> NDArray[np.float32]: ...
def qembedding_bag(
    data: NDArray[Any],
    dtype: str,
    dim: int,
    indices: NDArray[Any],
    offsets: NDArray[Any] | None = ...,
    *,
    mode: str = ...,
    per_sample_weights: NDArray[Any] | None = ...,
    padding_idx: int | None = ...,
    include_last_offset: bool = ...,
    out: NDArray[Any] | None = ...,
    reference: bool = ...,
) -> NDArray[np.float32]: ...
def embedding_bags(
    tables: list[Any],
    indices: list[Any],
    offsets: list[Any],
    *,
    mode: str = ...,
    per_sample_weights: list[Any],
    padding_idx: list[Any],
    include_last_offset: bool = ...,
    out: NDArray[Any] | None = ...,
    reference: bool = ...,
) -> NDArray[Any]: ...
