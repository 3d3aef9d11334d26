"""Multi-resolution fine-tuning of a text encoder over a label tree (XR-Transformer's matchers).

Stage ``s`` trains the encoder with a linear head over the nodes of tree level ``levels[s]``
(coarse to fine), starting from the encoder of stage ``s - 1``. The loss is PECOS's squared
hinge (margin 1, targets +1 for the clusters of the text's labels, -1 otherwise), averaged
over the text's *shortlist*: every node at the first stage; later, the children of the
previous level's nodes that hold a true label (teacher forcing, ``"tfn"``) and/or that the
previous stage's matcher ranks in its top ``shortlist_size`` on the training text (hard
negatives, ``"man"``). Each head starts from its parent's weights (PECOS's ``"inherit"``
bootstrap); the first from small random weights. AdamW, linear learning-rate decay to 0 over
each stage, gradient norm clipped at 1 (PECOS's defaults).

Everything random (head initialisation, dropout, batch order) comes from the seed, inside
``torch.random.fork_rng`` so the caller's torch RNG state is left alone; on CPU,
``torch.use_deterministic_algorithms`` is on during training, so a seed gives the same model.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs.encoders import batches, embed_batches, pool

__all__ = ["FinetuneConfig", "StageLog", "finetune", "level_codes"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (validated by the caller)."""

    levels: tuple[int, ...]
    epochs: tuple[int, ...]
    pooling: str
    max_length: int
    batch_size: int
    encode_batch_size: int
    learning_rate: float
    head_learning_rate: float
    shortlist_size: int
    negatives: str
    freeze_layers: int
    seed: int
    progress: bool


@dataclass
class StageLog:
    """What one stage did: its level and number of clusters, the mean training loss of every
    epoch, the mean shortlist size and the wall time."""

    level: int
    n_clusters: int
    epoch_losses: list[float] = field(default_factory=list)
    mean_shortlist: float = 0.0
    seconds: float = 0.0


def level_codes(tree: Any, level: int) -> np.ndarray:
    """The node of tree level ``level`` holding each label (int64, ``n_labels``); level
    ``tree.depth + 1`` is the labels themselves (``arange``)."""
    if level == tree.depth + 1:
        return np.arange(tree.n_labels, dtype=np.int64)
    assign = tree.level_assignments()  # parents of levels 1..depth, then each label's leaf
    codes = np.asarray(assign[-1], dtype=np.int64)  # level `depth`
    for t in range(tree.depth, level, -1):
        codes = np.asarray(assign[t - 1], dtype=np.int64)[codes]  # node of level t -> t - 1
    return codes


def _indicator(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.data[:] = 1.0  # duplicates summed: back to 0/1
    return m


def level_targets(Y: sp.csr_matrix, codes: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """0/1 matrix ``(n, n_nodes)``: which nodes hold a label of each row."""
    Y = Y.tocoo()
    return _indicator(Y.row, codes[Y.col], (Y.shape[0], n_nodes))


def _ancestors(codes: np.ndarray, prev_codes: np.ndarray, n_nodes: int) -> np.ndarray:
    """The node of the previous level above each node of this level."""
    anc = np.zeros(n_nodes, dtype=np.int64)
    anc[codes] = prev_codes
    return anc


@contextlib.contextmanager
def _seeded(seed: int, device: Any) -> Iterator[None]:
    """Seed torch inside a forked RNG; deterministic kernels on CPU (and on CUDA when
    ``CUBLAS_WORKSPACE_CONFIG`` allows it)."""
    import torch

    cuda = device.type == "cuda"
    devices = [device] if cuda else []
    deterministic = not cuda or bool(os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    before = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if deterministic:
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)


def _layer_list(model: Any) -> Any:
    """The transformer blocks of ``model`` (BERT-like, DistilBERT-like or plain ``layers``)."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def freeze_lower_layers(model: Any, n: int) -> None:
    """No gradients for the embeddings and the ``n`` lowest transformer blocks (``n`` may
    exceed the number of blocks: then the whole encoder is frozen)."""
    if n <= 0:
        return
    layers = _layer_list(model)
    if layers is None:
        raise ValueError(
            f"freeze_layers={n}: cannot find the transformer blocks of "
            f"{type(model).__name__} (expected encoder.layer, transformer.layer or layers)"
        )
    emb = getattr(model, "embeddings", None)
    for p in emb.parameters() if emb is not None else ():
        p.requires_grad_(False)
    for block in list(layers)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


def _matcher_topk(
    emb: np.ndarray, head: Any, allowed: sp.csr_matrix | None, anc: np.ndarray | None, k: int
) -> sp.csr_matrix:
    """The ``k`` best nodes of each row by the head's scores, among the children of the
    row's ``allowed`` nodes of the previous level (all nodes when ``allowed`` is None)."""
    import torch

    W = head.weight.detach().cpu().float()
    b = head.bias.detach().cpu().float()
    n, n_nodes = emb.shape[0], W.shape[0]
    k = min(k, n_nodes)
    rows, cols = [], []
    for start in range(0, n, 1024):
        z = torch.from_numpy(emb[start : start + 1024]) @ W.T + b
        if allowed is not None and anc is not None:
            ok = torch.from_numpy(allowed[start : start + 1024].toarray()[:, anc] > 0)
            z = z.masked_fill(~ok, float("-inf"))
        top = torch.topk(z, k, dim=1)
        keep = torch.isfinite(top.values).numpy()
        r = np.repeat(np.arange(start, start + z.shape[0]), k).reshape(-1, k)
        rows.append(r[keep])
        cols.append(top.indices.numpy()[keep])
    return _indicator(np.concatenate(rows), np.concatenate(cols), (n, n_nodes))


def _shortlist(
    cfg: FinetuneConfig, truth_prev: sp.csr_matrix | None, pred_prev: sp.csr_matrix | None
) -> sp.csr_matrix | None:
    """The previous level's nodes whose children form each row's shortlist (None: all)."""
    if truth_prev is None:
        return None
    parts = []
    if "tfn" in cfg.negatives:
        parts.append(truth_prev)
    if "man" in cfg.negatives and pred_prev is not None:
        parts.append(pred_prev)
    m = parts[0] if len(parts) == 1 else (parts[0] + parts[1]).tocsr()
    m.data[:] = 1.0
    return m


def _train_stage(
    model: Any,
    head: Any,
    tokenizer: Any,
    texts: list[str],
    targets: sp.csr_matrix,
    short: sp.csr_matrix | None,
    anc: np.ndarray | None,
    epochs: int,
    cfg: FinetuneConfig,
    device: Any,
    rng: np.random.RandomState,
    log: StageLog,
) -> None:
    import torch
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    trainable = [*head.parameters(), *params]
    groups: list[dict[str, Any]] = [
        {"params": list(head.parameters()), "lr": cfg.head_learning_rate}
    ]
    if params:
        groups.append({"params": params, "lr": cfg.learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    n = len(texts)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = max(1, steps_per_epoch * epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))
    model.train()
    shortlist_sizes = []
    for epoch in range(epochs):
        order = rng.permutation(n)
        loss_sum, count = 0.0, 0
        bar = tqdm(
            range(0, n, cfg.batch_size),
            desc=f"fine-tune level {log.level} epoch {epoch + 1}/{epochs}",
            unit="batch",
            disable=not cfg.progress,
        )
        for start in bar:
            idx = order[start : start + cfg.batch_size]
            enc = next(batches(tokenizer, [texts[i] for i in idx], cfg.max_length, len(idx)))
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = model(**enc).last_hidden_state
            z = head(pool(hidden, enc["attention_mask"], cfg.pooling))
            y = torch.from_numpy(targets[idx].toarray()).to(device)
            if short is None:
                mask = torch.ones_like(y)
            else:
                mask = torch.from_numpy(short[idx].toarray()[:, anc]).to(device)
                mask = torch.maximum(mask, y)  # positives are always in the shortlist
            shortlist_sizes.append(float(mask.sum()) / len(idx))
            hinge = torch.clamp(1.0 - (2.0 * y - 1.0) * z, min=0.0)
            loss = (hinge * hinge * mask).sum() / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            count += len(idx)
        log.epoch_losses.append(loss_sum / max(count, 1))
    model.eval()
    log.mean_shortlist = float(np.mean(shortlist_sizes)) if shortlist_sizes else 0.0


def finetune(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    Y: sp.csr_matrix,
    tree: Any,
    cfg: FinetuneConfig,
    device: Any,
) -> list[StageLog]:
    """Fine-tune ``model`` in place over ``cfg.levels`` of ``tree`` (see the module notes).

    Returns
    -------
    list of StageLog
        One per stage, coarse to fine.
    """
    import torch

    logs: list[StageLog] = []
    model.to(device)
    freeze_lower_layers(model, cfg.freeze_layers)
    hidden = int(model.config.hidden_size)
    prev_head: Any = None
    prev_codes: np.ndarray | None = None
    truth_prev: sp.csr_matrix | None = None
    pred_prev: sp.csr_matrix | None = None
    with _seeded(cfg.seed, device):
        for s, (level, epochs) in enumerate(zip(cfg.levels, cfg.epochs, strict=True)):
            t0 = time.perf_counter()
            codes = level_codes(tree, level)
            n_nodes = tree.n_nodes_per_level[level] if level <= tree.depth else tree.n_labels
            log = StageLog(level=level, n_clusters=n_nodes)
            targets = level_targets(Y, codes, n_nodes)
            head = torch.nn.Linear(hidden, n_nodes)
            anc = None if prev_codes is None else _ancestors(codes, prev_codes, n_nodes)
            with torch.no_grad():
                if prev_head is None or anc is None:
                    torch.nn.init.normal_(head.weight, std=0.02)
                    head.bias.zero_()
                else:  # inherit the parent's weights
                    idx = torch.from_numpy(anc)
                    head.weight.copy_(prev_head.weight.detach().cpu()[idx])
                    head.bias.copy_(prev_head.bias.detach().cpu()[idx])
            head.to(device)
            short = _shortlist(cfg, truth_prev, pred_prev)
            rng = np.random.RandomState((cfg.seed + 7919 * (s + 1)) % (2**32))
            _train_stage(
                model, head, tokenizer, texts, targets, short, anc, epochs, cfg, device, rng, log
            )
            last = s == len(cfg.levels) - 1
            if not last and "man" in cfg.negatives:
                emb = embed_batches(
                    model,
                    tokenizer,
                    texts,
                    pooling=cfg.pooling,
                    max_length=cfg.max_length,
                    batch_size=cfg.encode_batch_size,
                    device=device,
                    progress=cfg.progress,
                )
                allowed = None if anc is None else pred_prev
                pred_prev = _matcher_topk(emb, head, allowed, anc, cfg.shortlist_size)
            truth_prev, prev_codes, prev_head = targets, codes, head
            log.seconds = time.perf_counter() - t0
            logs.append(log)
    return logs


def check_levels(levels: Any, depth: int) -> tuple[int, ...]:
    """The fine-tuning levels: ``None`` means every level of the tree below the root down to
    the labels themselves (``1..depth + 1``); otherwise strictly increasing levels in
    ``1..depth + 1``."""
    if levels is None:
        return tuple(range(1, depth + 2))
    if isinstance(levels, int | np.integer) and not isinstance(levels, bool):
        levels = [levels]
    if not isinstance(levels, Sequence | np.ndarray) or len(levels) == 0:
        raise ValueError(f"levels must be None or a non-empty list of tree levels, got {levels!r}")
    out = []
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= depth + 1:
            raise ValueError(
                f"levels must lie in 1..{depth + 1} (tree depth {depth}; {depth + 1} means the "
                f"labels), got {levels!r}"
            )
        out.append(int(v))
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"levels must be strictly increasing (coarse to fine), got {levels!r}")
    return tuple(out)
