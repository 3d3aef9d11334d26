"""xmrrs: extreme multi-label ranking with a Rust core and a scikit-learn API.

Submodules are imported on first use (PEP 562), so ``import xmrrs`` stays cheap:

- :mod:`xmrrs.datasets`: XC-repository / LIBSVM / npz IO and the ``make_xmc`` generator.
- :mod:`xmrrs.metrics`: precision@k, recall@k, nDCG@k and propensity-scored variants.
- :mod:`xmrrs.sparse`: multithreaded sparse kernels of the Rust core, returning scipy matrices.
- :mod:`xmrrs.indexing`: label representations (PIFA...) and the hierarchical k-means label tree.
- :mod:`xmrrs.estimator`: :class:`XRLinearClassifier`, the scikit-learn estimator.
- :mod:`xmrrs.hybrid`: :class:`~xmrrs.hybrid.HybridMatrix`, sparse and dense feature blocks.
- :mod:`xmrrs.svd_features`: :class:`~xmrrs.svd_features.SVDFeatures`, a dense block from the
  sparse features' singular vectors.
- :mod:`xmrrs.modelfile`: the model directory format (no pickle; optional memory mapping).
- :mod:`xmrrs.baseline`: a label-centroid baseline (not the XR-Linear model).
- :mod:`xmrrs.text`: :class:`~xmrrs.text.TfidfVectorizer`, raw text to tf-idf in Rust.
- :mod:`xmrrs.textmodel`: :class:`~xmrrs.textmodel.TextXRClassifier`, texts to label names.
- :mod:`xmrrs.encoders`: sentence embeddings from a Hugging Face encoder (extra ``transformer``).
- :mod:`xmrrs.xtransformer`: :class:`XRTransformer`, a fine-tuned encoder plus XR-Linear
  (extra ``transformer``; torch is imported only when it is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static view of the lazy attributes
    from xmrrs import (
        baseline as baseline,
    )
    from xmrrs import (
        calibration as calibration,
    )
    from xmrrs import (
        datasets as datasets,
    )
    from xmrrs import (
        encoders as encoders,
    )
    from xmrrs import (
        estimator as estimator,
    )
    from xmrrs import (
        hybrid as hybrid,
    )
    from xmrrs import (
        indexing as indexing,
    )
    from xmrrs import (
        metrics as metrics,
    )
    from xmrrs import (
        modelfile as modelfile,
    )
    from xmrrs import (
        sparse as sparse,
    )
    from xmrrs import (
        svd_features as svd_features,
    )
    from xmrrs import (
        text as text,
    )
    from xmrrs import (
        textmodel as textmodel,
    )
    from xmrrs import (
        xtransformer as xtransformer,
    )
    from xmrrs.estimator import XRLinearClassifier as XRLinearClassifier
    from xmrrs.xtransformer import XRTransformer as XRTransformer

_SUBMODULES = frozenset(
    [
        "baseline",
        "calibration",
        "datasets",
        "encoders",
        "estimator",
        "hybrid",
        "indexing",
        "metrics",
        "modelfile",
        "sparse",
        "svd_features",
        "text",
        "textmodel",
        "xtransformer",
    ]
)
__all__ = ["XRLinearClassifier", "XRTransformer", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "XRLinearClassifier":
        return importlib.import_module(f"{__name__}.estimator").XRLinearClassifier
    if name == "XRTransformer":
        return importlib.import_module(f"{__name__}.xtransformer").XRTransformer
    if name == "__version__":
        from xmrrs._xmrrs import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
