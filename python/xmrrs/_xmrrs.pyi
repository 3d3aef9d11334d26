"""Type stubs of the compiled core ``xmrrs._xmrrs`` (kept in sync by tests/test_stubs.py).

A CSR matrix crosses the boundary as ``(n_rows, n_cols, indptr, indices, data)``; see
``xmrrs._validation.csr_parts`` and ``to_scipy``.
"""

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

CsrParts = tuple[
    int, int, npt.NDArray[np.integer], npt.NDArray[np.integer], npt.NDArray[np.floating]
]
CsrOut = tuple[int, int, npt.NDArray[np.int64], npt.NDArray[np.integer], npt.NDArray[np.float32]]

TreeParts = tuple[list[npt.NDArray[np.uint32]], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]

__version__: str

def csr_canonicalize(a: CsrParts, n_jobs: int | None = None) -> CsrOut: ...
def csr_transpose(a: CsrParts, n_jobs: int | None = None) -> CsrOut: ...
def csr_normalize_rows(a: CsrParts, n_jobs: int | None = None) -> CsrOut: ...
def csr_rows_are_unit(a: CsrParts, n_jobs: int | None = None) -> bool: ...
def csr_fill_empty_rows(
    a: CsrParts,
    cols: npt.NDArray[np.int64],
    vals: npt.NDArray[np.float32],
    n_jobs: int | None = None,
) -> CsrOut: ...
def csr_spgemm(a: CsrParts, b: CsrParts, n_jobs: int | None = None) -> CsrOut: ...
def csr_dense(
    a: CsrParts, b: npt.NDArray[np.float32], n_jobs: int | None = None
) -> npt.NDArray[np.float32]: ...
def csr_dot_dense_rows(
    a: CsrParts, w: npt.NDArray[np.float32], n_jobs: int | None = None
) -> npt.NDArray[np.float32]: ...
def csr_row_gather(
    a: CsrParts, rows: npt.NDArray[np.int64], n_jobs: int | None = None
) -> CsrOut: ...
def csr_col_gather(
    a: CsrParts, cols: npt.NDArray[np.int64], n_jobs: int | None = None
) -> CsrOut: ...
def csr_topk(
    a: CsrParts, k: int, n_jobs: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
def csr_topk_csr(a: CsrParts, k: int, n_jobs: int | None = None) -> CsrOut: ...
def read_xc(
    path: str | os.PathLike[str],
    header: bool = True,
    zero_based: bool | None = None,
    n_features: int | None = None,
    n_labels: int | None = None,
    n_jobs: int | None = None,
) -> tuple[CsrOut, CsrOut]: ...
def write_xc(
    path: str | os.PathLike[str],
    x: CsrParts,
    y: CsrParts,
    header: bool = True,
    n_jobs: int | None = None,
) -> None: ...
def simd_level() -> str: ...
def effective_n_jobs(n_jobs: int | None = None) -> int: ...
def _test_panic() -> None: ...
def hierarchical_kmeans(
    z: CsrParts | npt.NDArray[np.float32],
    branching: int = 16,
    max_leaf_size: int = 100,
    spherical: bool = True,
    balanced: bool = True,
    max_iter: int = 20,
    tol: float = 0.01,
    seed: int = 0,
    n_jobs: int | None = None,
    fanouts: list[int] | None = None,
    n_init: int | None = None,
) -> TreeParts: ...
def kmeans_split_subtrees(
    z: CsrParts | npt.NDArray[np.float32],
    n_labels: int,
    level: int,
    node_ptr: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    first: list[npt.NDArray[np.int64]],
    branching: int = 16,
    max_leaf_size: int = 100,
    spherical: bool = True,
    balanced: bool = True,
    max_iter: int = 20,
    tol: float = 0.01,
    seed: int = 0,
    n_jobs: int | None = None,
    fanouts: list[int] | None = None,
    n_init: int | None = None,
) -> TreeParts: ...
def kmeans_fanouts(n_labels: int, branching: int, max_leaf_size: int) -> list[int]: ...
def cluster_tree_from_parts(
    child_ptrs: list[npt.NDArray[np.int64]],
    leaf_ptr: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
) -> TreeParts: ...
def cluster_tree_from_assignments(assignments: list[npt.NDArray[np.int64]]) -> TreeParts: ...

# XR-Linear ---------------------------------------------------------------------------------

TopK = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]

class XrModel:
    """A compiled XR-Linear model (owned or memory-mapped)."""

    @property
    def n_features(self) -> int: ...
    @property
    def n_dense(self) -> int: ...
    @property
    def n_labels(self) -> int: ...
    @property
    def depth(self) -> int: ...
    @property
    def layer_nnz(self) -> list[int]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def is_mmap(self) -> bool: ...
    def tree_parts(self) -> TreeParts: ...
    def predict_topk(
        self,
        x: CsrParts,
        k: int,
        beam_size: int,
        post_processor: str,
        n_jobs: int | None = None,
        normalize: bool = False,
        x_dense: npt.NDArray[np.float32] | None = None,
    ) -> TopK: ...
    def save(self, path: str) -> None: ...
    @staticmethod
    def load(path: str, mmap: bool = False) -> XrModel: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> XrModel: ...
    def verify(self) -> None: ...

def xr_train(
    x: CsrParts,
    y: CsrParts,
    trees: list[TreeParts],
    seeds: list[int],
    *,
    loss: str = "squared_hinge",
    cp: float = 1.0,
    cn: float = 1.0,
    max_iter: int = 100,
    tol: float = 0.1,
    bias: float = 1.0,
    threshold: float = 0.1,
    negatives: str = "tfn",
    beam_size: int = 10,
    post_processor: str = "l3-hinge",
    relevance: CsrParts | None = None,
    n_jobs: int | None = None,
    x_dense: npt.NDArray[np.float32] | None = None,
    dense_in_ranker: bool = True,
    top_fraction: float = 1.0,
) -> list[tuple[XrModel, list[float]]]: ...
def xr_predict_ensemble(
    models: list[XrModel],
    x: CsrParts,
    k: int,
    beam_size: int,
    post_processor: str,
    n_jobs: int | None = None,
    normalize: bool = False,
    x_dense: npt.NDArray[np.float32] | None = None,
) -> TopK: ...
def check_post_processor(name: str) -> None: ...

# (layer, parents, weights, bias, n_passes, seconds, dense weights (rows, n_dense))
LayerPartOut = tuple[
    int,
    npt.NDArray[np.uint32],
    CsrOut,
    npt.NDArray[np.float32],
    int,
    float,
    npt.NDArray[np.float32],
]

def xr_train_subtrees(
    x: CsrParts,
    y: CsrParts,
    tree: TreeParts,
    level: int,
    roots: npt.NDArray[np.uint32],
    last_layer: int,
    *,
    loss: str = "squared_hinge",
    cp: float = 1.0,
    cn: float = 1.0,
    max_iter: int = 100,
    tol: float = 0.1,
    bias: float = 1.0,
    threshold: float = 0.1,
    negatives: str = "tfn",
    seed: int = 0,
    relevance: CsrParts | None = None,
    n_jobs: int | None = None,
    x_dense: npt.NDArray[np.float32] | None = None,
    dense_in_ranker: bool = True,
) -> list[LayerPartOut]: ...
def xr_top_sample_rows(
    seed: int, start: int, n: int, fraction: float
) -> npt.NDArray[np.uint32]: ...
def xr_assemble(
    tree: TreeParts,
    parts: list[
        tuple[
            int,
            npt.NDArray[np.uint32],
            CsrParts,
            npt.NDArray[np.float32],
            npt.NDArray[np.float32],
        ]
    ],
    n_features: int,
) -> XrModel: ...

# ---------------------------------------------------------------------------------- text

TEXT_UNICODE_VERSION: str
TextCsrOut = tuple[
    int, int, npt.NDArray[np.int64], npt.NDArray[np.integer], npt.NDArray[np.floating]
]

class TfidfModel:
    @staticmethod
    def fit_transform(
        docs: Sequence[str | bytes],
        analyzer: str = "word",
        ngram_range: tuple[int, int] = (1, 1),
        lowercase: bool = True,
        min_df: int | float | None = None,
        max_df: int | float | None = None,
        max_features: int | None = None,
        binary: bool = False,
        sublinear_tf: bool = False,
        use_idf: bool = True,
        smooth_idf: bool = True,
        norm: str | None = "l2",
        float64: bool = False,
        n_jobs: int | None = None,
    ) -> tuple[TfidfModel, TextCsrOut]: ...
    @staticmethod
    def from_parts(
        terms: Sequence[str],
        idf: npt.NDArray[np.float64],
        analyzer: str = "word",
        ngram_range: tuple[int, int] = (1, 1),
        lowercase: bool = True,
        binary: bool = False,
        sublinear_tf: bool = False,
        use_idf: bool = True,
        smooth_idf: bool = True,
        norm: str | None = "l2",
    ) -> TfidfModel: ...
    def transform(
        self, docs: Sequence[str | bytes], float64: bool = False, n_jobs: int | None = None
    ) -> TextCsrOut: ...
    def feature_names(self) -> list[str]: ...
    def idf(self) -> npt.NDArray[np.float64]: ...
    @property
    def n_features(self) -> int: ...

def text_analyze(
    docs: Sequence[str | bytes],
    analyzer: str = "word",
    ngram_range: tuple[int, int] = (1, 1),
    lowercase: bool = True,
) -> list[list[str]]: ...
