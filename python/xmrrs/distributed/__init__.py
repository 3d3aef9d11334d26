"""Training and batch inference on a Dask cluster (the optional ``dask`` extra).

``pip install "xmrrs[dask]"`` installs ``dask[distributed]``; ``import xmrrs`` never imports
dask, only ``import xmrrs.distributed`` does.

The data stay partitioned: a list of row blocks, each an ``(X_i, Y_i)`` pair of matrices
(``X_i`` sparse, dense or a :class:`~xmrrs.hybrid.HybridMatrix`),
a :func:`dask.delayed` object (or a pair of them) computing to such a pair, the path of an
XC text file, or an ``(x.npz, y.npz)`` pair of paths, on storage the workers can read
(``(x.npz, dense.npy, y.npz)``: a ``HybridMatrix`` whose dense block is the ``.npy`` file).
``Y_i`` is a 0/1 indicator, label lists or a class vector, as ``fit`` takes it (names are
encoded over the sorted union of every block's names, the ``classes_`` of one-process
``fit``); an ``(X_i, Y_i, R_i)`` triple (or ``(x.npz, y.npz, r.npz)``) adds the relevance
of ``fit(X, Y, relevance=R)``, sliced with the rows wherever they go.

:func:`fit` trains an ordinary :class:`~xmrrs.estimator.XRLinearClassifier` (``models_``,
``tree_``, ``classes_``; it saves, maps and serves as any):

1. *blocks*: each block is loaded (and its rows L2-normalised, when the estimator
   normalises and any row of any block is not of unit norm, the same global decision as
   ``fit``) by a task; in-memory blocks travel inside the task graph, so a lost block is
   recomputed like any other task.
2. *label representation*: PIFA is ``normalize(Yn^T X)`` summed over the row blocks. With
   ``exact_representation=True`` (the default) the blocks are summed as a chain, each step
   continuing the running sum of the previous one in the order of the one-process product,
   so ``Z`` is bit-identical to :func:`~xmrrs.indexing.label_representation`. There is
   one chain per range of labels (``n_parts`` ranges, default two per worker; a label's
   sum does not depend on the other labels): the chains run side by side, and each step
   holds only its range's running sum, which moves between workers. Each range's sum is
   normalised where it ends and copied into ``Z`` on the client one range at a time, so the
   client holds ``Z`` once; the ranges stay on the workers for step 3.
   With ``False`` the partial products are computed in parallel and added pairwise in float32:
   entries then agree to about 1e-6 (relative) with the one-process ``Z``, and the tree may
   differ. ``"pii"``/``"spectral"`` (and the PII view of the mixed ensemble) need only
   ``Y``, which is gathered on the client (one integer and one float per label entry).
3. *tree*: exactly the tree ``fit`` builds (same seeds, same shapes), or given as
   ``indexer=ClusterTree``. With hierarchical k-means (the default indexer) the client
   splits only the root; the level-1 sub-trees are bundled into parts (by the stored values
   of their rows of ``Z``) and grown by tasks, each from its own rows of ``Z``, which it
   takes from the label ranges of step 2 on the workers (not from the client). A node's
   k-means stream is derived from its index within its level, which depends on the nodes
   of the other sub-trees: a node of ``n`` labels has ``min(c, n)`` children, so the
   indices of a level are known once the sizes of the level above are. Balanced trees
   (sizes follow from sizes) are grown to the leaves in one round; unbalanced ones two
   levels a round, the client gathering the sizes (and labels) in between. Other indexers
   run on the client.
4. *models*: the top layer (the root's children, trained on every row) is one task that
   gathers every row block on one worker: that is the only place where all of ``X`` meets.
   With the estimator's ``top_max_samples`` it trains on a sample of the rows instead, and
   each block sends only its sampled rows (chosen where the block lives, by the same
   per-row hash as one-process ``fit``): the task then holds that share of ``X``.
   Without ``top_max_samples`` the task gathers what fits ``fit``'s ``top_memory`` (default:
   half of the smallest worker ``memory_limit``): every row when two copies of the blocks
   fit, else the share that does, with a warning (the model is then one-process ``fit``'s
   with ``top_max_samples`` set to that share), so the task does not outgrow its worker.
   Every node of tree level 1 roots a sub-tree; the sub-trees are bundled into parts
   balanced by their cost (label entries of their rows, weighted by the rows' feature
   counts; largest first into the least loaded part), and each part is one task that
   receives only the rows with a label in its sub-trees (sliced from each block where the
   block lives). With ``tfn`` negatives the sub-problems are exactly those of one-process
   training (same rows in the same order, same seeds), so the assembled model is
   bit-identical to ``fit`` on the concatenated blocks.

Task keys name their part (``xmrrs-top-...``, ``xmrrs-subtrees-t0-n3_17-...``: tree 0, level-1
nodes 3..17; ``xmrrs-kmeans-t0-l1_4-n3_17-...``: the k-means of levels 1..4 under those), and
``progress=True`` shows ``distributed.progress`` bars. Every task is submitted with
``retries``; a worker that dies is replaced by its nanny and its tasks (and the blocks it
held) are recomputed by the scheduler, so the result does not change.

:func:`predict_topk` maps a saved model over row blocks: each worker process loads the model
once with ``mmap=True`` and caches it (keyed by path and file modification time).

Not supported (``ValueError``): ``negatives="man"`` or ``"tfn+man"`` (the beam of the
layers above on every training row would be another map over the blocks per layer), and a
callable ``representation`` (it would need every row on one process; a precomputed ``Z``
is taken).

Modules: ``_blocks`` (loading and checking the row blocks), ``_representation`` (the PIFA
map-reduce), ``_kmeans`` (the sub-tree k-means tasks and their rounds), ``_parts`` (bundling
sub-trees into parts by cost), ``_train`` (the sub-tree training tasks and the assembly of a
tree's model), ``_fit`` (the stages of :func:`fit`), ``_predict`` (batch inference and the
per-process model cache), ``_run`` (submitting and gathering tasks on the client) and
``_worker`` (what every task does on its worker) and ``_budget`` (the share of the rows the top
task may gather).
"""

from __future__ import annotations

try:
    import distributed as _distributed  # noqa: F401
except ImportError as e:  # pragma: no cover - the dev extra installs it
    raise ImportError("xmrrs.distributed needs dask.distributed: pip install 'xmrrs[dask]'") from e

from xmrrs.distributed._fit import fit
from xmrrs.distributed._kmeans import _SPLITS as _SPLITS
from xmrrs.distributed._predict import _MODELS as _MODELS
from xmrrs.distributed._predict import predict_topk
from xmrrs.distributed._representation import pifa
from xmrrs.distributed._worker import _set_task_delay as _set_task_delay

__all__ = ["fit", "pifa", "predict_topk"]
