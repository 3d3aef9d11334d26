"""xmrrs: extreme multi-label ranking with a Rust core and a scikit-learn API.

Submodules are imported on first use (PEP 562), so ``import xmrrs`` stays cheap:

- :mod:`xmrrs.datasets`: XC-repository / LIBSVM / npz IO and the ``make_xmc`` generator.
- :mod:`xmrrs.metrics`: precision@k, recall@k, nDCG@k and propensity-scored variants.
- :mod:`xmrrs.sparse`: multithreaded sparse kernels of the Rust core, returning scipy matrices.
- :mod:`xmrrs.indexing`: label representations (PIFA...) and the hierarchical k-means label tree.
- :mod:`xmrrs.baseline`: a label-centroid baseline (not the XR-Linear model).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["baseline", "datasets", "indexing", "metrics", "sparse"]

_SUBMODULES = frozenset(__all__)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "__version__":
        from xmrrs._xmrrs import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
