"""Sentence embeddings from a Hugging Face encoder (``pip install "xmrrs[transformer]"``).

:func:`encode` turns texts into one float32 vector each with a pretrained transformer encoder
(a local directory or a hub name): token states pooled by ``"mean"`` (over non-padding tokens)
or ``"cls"`` (the first token), optionally L2-normalised. torch and transformers are imported
inside the functions, so importing this module (or :mod:`xmrrs`) does not load them.

Example
-------
>>> from xmrrs.encoders import encode
>>> emb = encode(["a puzzle game", "an audio player"], "path/to/minilm")  # doctest: +SKIP
>>> emb.shape                                                              # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["POOLINGS", "encode", "load_encoder", "resolve_device"]

POOLINGS = ("mean", "cls")
_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: Any) -> Any:
    """The ``torch.device`` for ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA
    when available, else CPU).

    Raises
    ------
    ValueError
        An unknown name, or ``"cuda"`` on a machine without CUDA.
    """
    import torch

    if not isinstance(device, str) or device.split(":")[0] not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES} (or 'cuda:N'), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device")
    return torch.device(device)


def load_encoder(name_or_path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The tokenizer and the encoder (``AutoModel``, eval mode, on CPU) of ``name_or_path``.

    Parameters
    ----------
    name_or_path : str or path-like
        A local directory holding ``config.json``, the weights and the tokenizer files, or a
        Hugging Face hub name (downloaded by transformers).

    Raises
    ------
    ValueError
        ``name_or_path`` is not a string or path.
    """
    if not isinstance(name_or_path, str | os.PathLike) or not str(name_or_path):
        raise ValueError(f"encoder must be a model directory or name, got {name_or_path!r}")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    model = AutoModel.from_pretrained(str(name_or_path))
    model.eval()
    return tokenizer, model


def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool token states ``(batch, seq, dim)`` into ``(batch, dim)`` (torch tensors)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def check_pooling(pooling: Any) -> str:
    """``pooling`` if it is one of :data:`POOLINGS`, else a ``ValueError``."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer >= 1, else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """``texts`` as a non-empty list of str, else a ``ValueError`` / ``TypeError``."""
    if isinstance(texts, str | bytes):
        raise ValueError(f"{name} must be an iterable of str, got a single string")
    try:
        docs = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of str, got {type(texts).__name__}") from None
    if not docs:
        raise ValueError(f"{name} is empty")
    for i, t in enumerate(docs):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, not str")
    return docs


def batches(tokenizer: Any, texts: list[str], max_length: int, batch_size: int) -> Iterator[Any]:
    """Tokenized batches (padded to their longest text, truncated to ``max_length``)."""
    for start in range(0, len(texts), batch_size):
        yield tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )


def embed_batches(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    pooling: str,
    max_length: int,
    batch_size: int,
    device: Any,
    progress: bool = False,
) -> np.ndarray:
    """Pooled float32 embeddings ``(len(texts), dim)`` of a loaded model, in eval mode and
    without gradients (the model's train/eval mode is restored)."""
    import torch
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    out = []
    n_batches = (len(texts) + batch_size - 1) // batch_size
    try:
        with torch.no_grad():
            for enc in tqdm(
                batches(tokenizer, texts, max_length, batch_size),
                total=n_batches,
                desc="encode",
                unit="batch",
                disable=not progress,
            ):
                enc = {k: v.to(device) for k, v in enc.items()}
                hidden = model(**enc).last_hidden_state
                out.append(pool(hidden, enc["attention_mask"], pooling).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.ascontiguousarray(np.concatenate(out, axis=0), dtype=np.float32)


def l2_normalize(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` scaled to unit L2 norm (zero rows stay zero), float32."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return (a / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def encode(
    texts: Any,
    encoder: str | os.PathLike[str] | tuple[Any, Any],
    *,
    pooling: str = "mean",
    max_length: int = 128,
    batch_size: int = 32,
    device: str = "auto",
    normalize: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with a Hugging Face encoder.

    Parameters
    ----------
    texts : iterable of str
        Non-empty.
    encoder : str, path-like or (tokenizer, model)
        A local model directory or a hub name (see :func:`load_encoder`), or a loaded pair.
    pooling : {"mean", "cls"}, default="mean"
        Mean of the non-padding token states, or the first token's state.
    max_length : int, default=128
        Tokens kept per text (longer texts are truncated).
    batch_size : int, default=32
        Texts per forward pass.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the model runs (``"auto"``: CUDA when available).
    normalize : bool, default=True
        L2-normalise each embedding.
    progress : bool, default=False
        A tqdm bar over the batches on stderr.

    Returns
    -------
    ndarray of float32, shape (n_texts, hidden_size)
    """
    docs = check_texts(texts)
    pooling = check_pooling(pooling)
    max_length = check_positive_int(max_length, "max_length")
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = resolve_device(device)
    if isinstance(encoder, tuple):
        tokenizer, model = encoder
    else:
        tokenizer, model = load_encoder(encoder)
    model.to(dev)
    emb = embed_batches(
        model,
        tokenizer,
        docs,
        pooling=pooling,
        max_length=max_length,
        batch_size=batch_size,
        device=dev,
        progress=progress,
    )
    return l2_normalize(emb) if normalize else emb
